"""The apply-order phase split over the transformed objects: the fixture, upstream's real
release, and small objects for each rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from components.kubeflow.component import build_phases
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.objects import ObjectRef, is_builtin, ref
from components.kubeflow.phases import (
    Phase,
    RenderIndex,
    split_phases,
    workload_needs,
)
from components.kubeflow.transform import KubeflowCredentials
from tests.kubeflow.conftest import UpstreamRelease, make_args, make_upstream_args
from tests.kubeflow.invariants import PHASE_NAMES, closure_violations


def _index(phases: tuple[Phase, ...], kind: str, name: str) -> int:
    hits = [
        i
        for i, phase in enumerate(phases)
        for o in phase.objects
        if o["kind"] == kind and o["metadata"]["name"] == name
    ]
    assert len(hits) == 1, (kind, name, hits)
    return hits[0]


def test_phases_in_apply_order(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    phases = build_phases(rendered.objects, make_args(), credentials)
    assert [p.name for p in phases] == PHASE_NAMES
    assert closure_violations(phases) == []
    first = phases[0].objects
    assert {o["kind"] for o in first} == {"Namespace", "CustomResourceDefinition"}
    # cert-manager and Istio servers come up before their webhooks are registered...
    assert _index(phases, "Deployment", "cert-manager-webhook") == 1
    assert _index(phases, "Deployment", "istiod") == 1
    assert _index(phases, "ValidatingWebhookConfiguration", "cert-manager-webhook") == 2
    assert _index(phases, "MutatingWebhookConfiguration", "istio-sidecar-injector") == 2
    # ...and before any application pod, so Istio injects sidecars into all of them.
    assert _index(phases, "Deployment", "jupyter-web-app-deployment") == 3
    # Application webhooks last, after the servers behind them.
    assert _index(phases, "Deployment", "katib-controller") == 3
    assert _index(phases, "ValidatingWebhookConfiguration", "katib.kubeflow.org") == 4


def test_custom_resources_wait_for_their_crds_and_webhooks(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    phases = build_phases(rendered.objects, make_args(), credentials)
    for index, phase in enumerate(phases):
        for obj in phase.objects:
            if not is_builtin(obj):
                assert index == 3, (obj["kind"], obj["metadata"]["name"], phase.name)


def test_profile_namespaces_exist_before_their_secrets(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    phases = build_phases(rendered.objects, make_args(), credentials)
    assert _index(phases, "Namespace", "team-vision") == 0
    assert _index(phases, "Profile", "team-vision") == 3
    in_team = [o for o in phases[3].objects if o["metadata"].get("namespace") == "team-vision"]
    assert {o["kind"] for o in in_team} == {
        "Secret",
        "ServiceAccount",
        "ConfigMap",
        "PodDefault",
        "NetworkPolicy",
    }


def test_every_object_lands_in_exactly_one_phase_in_render_order(
    rendered: RenderedManifests,
) -> None:
    phases = split_phases(rendered.objects)
    flat = [o for p in phases for o in p.objects]
    assert len(flat) == len(rendered.objects)
    assert sorted(map(id, flat)) == sorted(map(id, rendered.objects))
    for phase in phases:
        positions = [
            next(i for i, o in enumerate(rendered.objects) if o is x) for x in phase.objects
        ]
        assert positions == sorted(positions)


def test_empty_phases_are_left_out() -> None:
    only_namespace = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}]
    assert [p.name for p in split_phases(only_namespace)] == ["01-namespaces-crds"]


def test_webhook_served_from_a_platform_namespace_only_partly_is_an_app_webhook() -> None:
    hook = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "mixed"},
        "webhooks": [
            {"clientConfig": {"service": {"namespace": "istio-system", "name": "a"}}},
            {"clientConfig": {"service": {"namespace": "kubeflow", "name": "b"}}},
        ],
    }
    assert [p.name for p in split_phases([hook])] == ["05-application-webhooks"]


# --- the closure rule, on upstream's real release ---------------------------------------------


@pytest.fixture(scope="module")
def upstream_phases(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
) -> tuple[Phase, ...]:
    return build_phases(upstream_rendered.objects, make_upstream_args(upstream.source), credentials)


def test_upstream_phases_keep_the_closure_rule(upstream_phases: tuple[Phase, ...]) -> None:
    assert [p.name for p in upstream_phases] == PHASE_NAMES
    assert closure_violations(upstream_phases) == []


def _phase_name(phases: Sequence[Phase], kind: str, namespace: str, name: str) -> str:
    hits = [p.name for p in phases for o in p.objects if ref(o) == ObjectRef(kind, namespace, name)]
    assert len(hits) == 1, (kind, namespace, name, hits)
    return hits[0]


def test_upstream_platform_needs_outside_its_namespaces_come_with_it(
    upstream_phases: tuple[Phase, ...],
) -> None:
    def where(kind: str, namespace: str, name: str) -> str:
        return _phase_name(upstream_phases, kind, namespace, name)

    # The cainjector's lease (kube-system) must exist before cert-manager's webhook is
    # registered, or the CA is never injected and that webhook fails closed.
    for name in ("cert-manager:leaderelection", "cert-manager-cainjector:leaderelection"):
        assert where("Role", "kube-system", name) == "02-platform"
        assert where("RoleBinding", "kube-system", name) == "02-platform"
    assert where("Deployment", "cert-manager", "cert-manager-cainjector") == "02-platform"
    # Istio's CNI node agent and its config, before any sidecar-injected pod.
    assert where("DaemonSet", "kube-system", "istio-cni-node") == "02-platform"
    assert where("ConfigMap", "kube-system", "istio-cni-config") == "02-platform"
    assert where("Deployment", "istio-system", "istiod") == "02-platform"
    platform_webhooks = {ref(o).name for o in upstream_phases[2].objects}
    assert platform_webhooks == {
        "cert-manager-webhook",
        "istio-sidecar-injector",
        "istio-validator-istio-system",
    }
    # Applications (Trainer included) after the platform's webhooks, theirs last.
    assert where("Deployment", "kubeflow", "jupyter-web-app-deployment") == "04-applications"
    trainer = ("Deployment", "kubeflow-system", "kubeflow-trainer-controller-manager")
    assert where(*trainer) == "04-applications"
    trainer_hook = ("ValidatingWebhookConfiguration", "", "validator.trainer.kubeflow.org")
    assert where(*trainer_hook) == "05-application-webhooks"
    assert where("Certificate", "kubeflow", "katib-webhook-cert") == "04-applications"


def test_upstream_custom_resources_come_after_the_platform_webhooks(
    upstream_phases: tuple[Phase, ...],
) -> None:
    for phase in upstream_phases:
        for obj in phase.objects:
            if not is_builtin(obj):
                assert phase.name == "04-applications", (ref(obj), phase.name)


# --- the closure rule, on small objects ---------------------------------------------------------


def _deployment(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": spec}},
    }


def _object(api_version: str, kind: str, name: str, namespace: str = "", **rest: Any) -> Any:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **rest}


def test_every_kind_of_need_is_in_the_closure() -> None:
    rbac = "rbac.authorization.k8s.io/v1"
    worker = _deployment(
        "tools",
        "worker",
        {
            "serviceAccountName": "worker",
            "priorityClassName": "critical",
            "containers": [
                {
                    "name": "w",
                    "env": [
                        {
                            "name": "A",
                            "valueFrom": {"configMapKeyRef": {"name": "env-a", "key": "a"}},
                        }
                    ],
                    "envFrom": [{"secretRef": {"name": "env-b"}}],
                }
            ],
            "volumes": [
                {"name": "p", "projected": {"sources": [{"secret": {"name": "projected"}}]}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
            ],
        },
    )
    needed = [
        _object("v1", "ServiceAccount", "worker", "tools", imagePullSecrets=[{"name": "pull"}]),
        _object("v1", "Secret", "pull", "tools"),
        _object("v1", "ConfigMap", "env-a", "tools"),
        _object("v1", "Secret", "env-b", "tools"),
        _object("v1", "Secret", "projected", "tools"),
        _object("v1", "PersistentVolumeClaim", "data", "tools"),
        _object("scheduling.k8s.io/v1", "PriorityClass", "critical"),
        _object("v1", "Service", "worker", "tools", spec={"selector": {"app": "worker"}}),
        # A lease in another namespace, bound to the worker's account.
        _object(
            rbac,
            "RoleBinding",
            "lease",
            "kube-system",
            roleRef={"kind": "Role", "name": "lease"},
            subjects=[{"kind": "ServiceAccount", "name": "worker", "namespace": "tools"}],
        ),
        _object(rbac, "Role", "lease", "kube-system"),
        _object(
            rbac,
            "ClusterRoleBinding",
            "reader",
            roleRef={"kind": "ClusterRole", "name": "reader"},
            subjects=[{"kind": "ServiceAccount", "name": "worker", "namespace": "tools"}],
        ),
        _object(
            rbac,
            "ClusterRole",
            "reader",
            aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"to-reader": "true"}}]},
        ),
        {
            **_object(rbac, "ClusterRole", "pods"),
            "metadata": {"name": "pods", "labels": {"to-reader": "true"}},
        },
    ]
    unrelated = [
        _object("v1", "Secret", "env-b", "elsewhere"),
        _object("v1", "Service", "other", "tools", spec={"selector": {"app": "other"}}),
        _object(
            rbac,
            "RoleBinding",
            "someone-else",
            "kube-system",
            roleRef={"kind": "Role", "name": "lease"},
            subjects=[{"kind": "ServiceAccount", "name": "worker", "namespace": "elsewhere"}],
        ),
    ]
    objects = [worker, *needed, *unrelated]
    index = RenderIndex(objects)
    assert [ref(objects[i]) for i in workload_needs(index, 0)] == [ref(o) for o in needed]


def test_node_agents_are_platform_and_bring_their_needs() -> None:
    agent = {
        **_deployment("kube-system", "cni", {"containers": [], "serviceAccountName": "cni"}),
        "kind": "DaemonSet",
    }
    account = _object("v1", "ServiceAccount", "cni", "kube-system")
    app = _deployment("apps", "web", {"containers": []})
    phases = split_phases([app, account, agent])
    assert [(p.name, [ref(o).name for o in p.objects]) for p in phases] == [
        ("02-platform", ["cni", "cni"]),
        ("04-applications", ["web"]),
    ]


def test_pods_a_webhook_mutates_come_after_it_even_in_a_platform_namespace() -> None:
    pods = [{"apiGroups": [""], "operations": ["CREATE"], "resources": ["pods"]}]
    service = {"service": {"namespace": "mesh", "name": "injector"}}
    injector = _object(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "injector",
        webhooks=[
            {
                "name": "namespace.inject.example.org",
                "clientConfig": service,
                "namespaceSelector": {"matchLabels": {"inject": "on"}},
                "rules": pods,
            },
            {
                "name": "object.inject.example.org",
                "clientConfig": service,
                "objectSelector": {"matchLabels": {"sidecar": "true"}},
                "rules": pods,
            },
        ],
    )
    mesh = _object("v1", "Namespace", "mesh")
    apps = {
        **_object("v1", "Namespace", "apps"),
        "metadata": {"name": "apps", "labels": {"inject": "on"}},
    }
    server = _deployment("mesh", "injector", {"containers": []})
    backend = _object("v1", "Service", "injector", "mesh", spec={"selector": {"app": "injector"}})
    gateway = _deployment("mesh", "gateway", {"containers": []})
    gateway["spec"]["template"]["metadata"]["labels"]["sidecar"] = "true"
    app = _deployment("apps", "web", {"containers": []})
    phases = split_phases([mesh, apps, server, backend, gateway, injector, app])
    assert {p.name: sorted(ref(o).name for o in p.objects) for p in phases} == {
        "01-namespaces-crds": ["apps", "mesh"],
        "02-platform": ["injector", "injector"],
        "03-platform-webhooks": ["injector"],
        # Injected pods wait for the injector, also in the injector's own namespace.
        "04-applications": ["gateway", "web"],
    }
    assert closure_violations(phases) == []
