"""The reference closure: checked offline before any resource, on small objects, on the
fixture, and on upstream's real release (its whole example passes; the tutorial's subset is
refused, naming the entries to add)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from components.kubeflow.component import plan_kubeflow
from components.kubeflow.manifests import RenderError, upstream_components
from components.kubeflow.references import (
    MissingReference,
    ReferenceClosureError,
    Requirement,
    find_missing_references,
    name_providing_entries,
)
from stack import render
from tests.kubeflow.conftest import FIXTURE_SOURCE, UpstreamRelease, make_args, make_upstream_args

# The subset a new user following the tutorial picks (issue 7): no kubeflow-istio-resources,
# no kubeflow-roles, no admission webhook.
TUTORIAL_SUBSET = (
    "../common/cert-manager/overlays/kubeflow",
    "../common/istio/istio-crds/base",
    "../common/istio/istio-namespace/base",
    "../common/istio/istio-install/overlays/oauth2-proxy",
    "../common/oauth2-proxy/overlays/m2m-dex-only",
    "../common/dex/overlays/oauth2-proxy",
    "../common/kubeflow-namespace/base",
    "../applications/centraldashboard/overlays/oauth2-proxy",
    "../applications/jupyter/jupyter-web-app/upstream/overlays/istio",
    "../applications/jupyter/notebook-controller/upstream/overlays/kubeflow",
    "../applications/profiles/pss",
    "../common/user-namespace/base",
    "../applications/volumes-web-app/upstream/overlays/istio",
)
TUTORIAL_MISSING_ENTRIES = (
    "../common/istio/kubeflow-istio-resources/base",
    "../common/kubeflow-roles/base",
    "../applications/admission-webhook/upstream/overlays/cert-manager",
)


def _object(api_version: str, kind: str, name: str, namespace: str = "", **rest: Any) -> Any:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **rest}


def _missing(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(p.needed) for p in find_missing_references(objects)]


# --- each rule, on small objects -------------------------------------------------------------


def test_custom_resources_need_their_crd() -> None:
    crd = _object(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "widgets.example.org",
        spec={"group": "example.org", "names": {"kind": "Widget", "plural": "widgets"}},
    )
    widget = _object("example.org/v1", "Widget", "w", "apps")
    gadget = _object("example.org/v1", "Gadget", "g", "apps")
    assert _missing([crd, widget, gadget]) == ["the CustomResourceDefinition of example.org Gadget"]
    # Built-in kinds need no CRD, also in groups that merely look like Kubernetes' own.
    assert _missing([_object("apps/v1", "ControllerRevision", "r", "apps")]) == []
    assert _missing([_object("metacontroller.k8s.io/v1alpha1", "DecoratorController", "d")]) == [
        "the CustomResourceDefinition of metacontroller.k8s.io DecoratorController"
    ]


def test_virtual_services_need_their_gateways() -> None:
    crds = [
        _object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            f"{plural}.networking.istio.io",
            spec={"group": "networking.istio.io", "names": {"kind": kind, "plural": plural}},
        )
        for kind, plural in (("Gateway", "gateways"), ("VirtualService", "virtualservices"))
    ]
    gateway = _object("networking.istio.io/v1", "Gateway", "kubeflow-gateway", "kubeflow")
    routes = _object(
        "networking.istio.io/v1",
        "VirtualService",
        "app",
        "kubeflow",
        spec={
            "gateways": [
                "mesh",
                "kubeflow-gateway",
                "kubeflow/kubeflow-gateway",
                "kubeflow-gateway.kubeflow.svc.cluster.local",
                "istio-system/istio-ingressgateway",
                "local-gateway",
            ]
        },
    )
    assert _missing([*crds, gateway, routes]) == [
        "Gateway istio-system/istio-ingressgateway",
        "Gateway kubeflow/local-gateway",
    ]


def test_bindings_need_their_roles_unless_kubernetes_ships_them() -> None:
    rbac = "rbac.authorization.k8s.io/v1"

    def binding(kind: str, name: str, role_kind: str, role: str, namespace: str = "") -> Any:
        return _object(rbac, kind, name, namespace, roleRef={"kind": role_kind, "name": role})

    objects = [
        binding("ClusterRoleBinding", "a", "ClusterRole", "view"),
        binding("ClusterRoleBinding", "b", "ClusterRole", "system:auth-delegator"),
        binding("ClusterRoleBinding", "c", "ClusterRole", "present"),
        binding("ClusterRoleBinding", "d", "ClusterRole", "absent"),
        binding("RoleBinding", "e", "ClusterRole", "kubeflow-edit", "team"),
        binding("RoleBinding", "f", "Role", "leases", "kube-system"),
        _object(rbac, "ClusterRole", "present"),
        # Upstream sometimes writes a namespace into cluster-scoped objects; it does not count.
        _object(rbac, "ClusterRole", "absent", "kubeflow"),
        _object(rbac, "Role", "leases", "cert-manager"),
    ]
    assert _missing(objects) == ["ClusterRole kubeflow-edit", "Role kube-system/leases"]


def test_webhooks_need_their_services_and_workloads_their_service_accounts() -> None:
    hook = _object(
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "hook",
        webhooks=[
            {"name": "a.example.org", "clientConfig": {"service": {"namespace": "x", "name": "a"}}},
            {"name": "b.example.org", "clientConfig": {"url": "https://hooks.example.org/b"}},
        ],
    )
    workloads = [
        _object(
            "apps/v1",
            "Deployment",
            name,
            "x",
            spec={"template": {"spec": {"serviceAccountName": account, "containers": []}}},
        )
        for name, account in (("one", "default"), ("two", "present"), ("three", "absent"))
    ]
    account = _object("v1", "ServiceAccount", "present", "x")
    assert _missing([hook, *workloads, account]) == [
        "Service x/a",
        "ServiceAccount x/absent",
    ]


def test_known_runtime_needs_are_required_only_with_their_component() -> None:
    profile_crd = _object(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "profiles.kubeflow.org",
        spec={"group": "kubeflow.org", "names": {"kind": "Profile", "plural": "profiles"}},
    )
    assert _missing([profile_crd]) == [
        "ClusterRole kubeflow-admin",
        "ClusterRole kubeflow-edit",
        "ClusterRole kubeflow-view",
    ]
    assert _missing([]) == []


def test_providing_entries_are_rendered_only_until_every_problem_has_one() -> None:
    gateway = Requirement("Gateway", "kubeflow", "kubeflow-gateway")
    role = Requirement("ClusterRole", "", "kubeflow-edit")
    problems = [
        MissingReference("VirtualService a", gateway, "routes"),
        MissingReference("x", role, "binds"),
    ]
    renders = {
        "broken": RenderError("does not build alone"),
        "roles": [_object("rbac.authorization.k8s.io/v1", "ClusterRole", "kubeflow-edit")],
        "istio": [_object("networking.istio.io/v1", "Gateway", "kubeflow-gateway", "kubeflow")],
        "never-needed": AssertionError("rendered after every problem had its entry"),
    }
    rendered: list[str] = []

    def render_entry(entry: str) -> Any:
        rendered.append(entry)
        outcome = renders[entry]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    named = name_providing_entries(problems, list(renders), render_entry)
    assert [p.entry for p in named] == ["istio", "roles"]
    assert rendered == ["broken", "roles", "istio"]
    message = str(ReferenceClosureError(named))
    assert (
        "Add to the components (entries of upstream example/kustomization.yaml): istio, roles"
        in message
    )


# --- the fixture and upstream's real release ---------------------------------------------------


def test_fixture_subset_without_the_gateway_is_refused_naming_its_entry(tmp_path: Path) -> None:
    everything_but_gateway = tuple(
        e
        for e in upstream_components(FIXTURE_SOURCE)
        if e != "../common/istio/kubeflow-istio-resources/base"
    )
    args = make_args(components=everything_but_gateway)
    with pytest.raises(ReferenceClosureError) as caught:
        plan_kubeflow(args, cache_dir=tmp_path)
    assert caught.value.entries == ("../common/istio/kubeflow-istio-resources/base",)
    assert [str(p.needed) for p in caught.value.problems] == ["Gateway kubeflow/kubeflow-gateway"]


def test_upstream_whole_example_passes(upstream: UpstreamRelease, upstream_cache: Path) -> None:
    plan = plan_kubeflow(make_upstream_args(upstream.source), cache_dir=upstream_cache)
    objects = [o for phase in plan.phases for o in phase.objects]
    assert find_missing_references(objects) == ()
    assert any(o["kind"] == "ClusterTrainingRuntime" for o in objects)  # Trainer included


def test_upstream_tutorial_subset_is_refused_naming_the_entries_to_add(
    upstream: UpstreamRelease, upstream_cache: Path
) -> None:
    args = make_upstream_args(upstream.source, components=TUTORIAL_SUBSET)
    with pytest.raises(ReferenceClosureError) as caught:
        plan_kubeflow(args, cache_dir=upstream_cache)
    error = caught.value
    assert error.entries == TUTORIAL_MISSING_ENTRIES
    gateways = [p for p in error.problems if p.needed.kind == "Gateway"]
    assert len(gateways) == 6  # the six web apps' VirtualServices
    assert {str(p.needed) for p in error.problems} == {
        "Gateway kubeflow/kubeflow-gateway",
        "ClusterRole kubeflow-admin",
        "ClusterRole kubeflow-edit",
        "ClusterRole kubeflow-view",
        "the CustomResourceDefinition of kubeflow.org PodDefault",
    }
    for entry in TUTORIAL_MISSING_ENTRIES:
        assert entry in str(error)
    # The advice is right: with those entries added, the subset passes.
    fixed = make_upstream_args(
        upstream.source, components=TUTORIAL_SUBSET + TUTORIAL_MISSING_ENTRIES
    )
    plan_kubeflow(fixed, cache_dir=upstream_cache)


def test_render_command_refuses_the_tutorial_subset_with_exit_1(
    upstream: UpstreamRelease,
    upstream_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = make_upstream_args(upstream.source, components=TUTORIAL_SUBSET)
    # The stack's plan, for a selection no example stack makes.
    monkeypatch.setattr(
        render,
        "stack_plan",
        lambda _stack_file, **_options: (args, plan_kubeflow(args, cache_dir=upstream_cache)),
    )
    (tmp_path / "Pulumi.tutorial.yaml").write_text("config: {}\n")
    out = tmp_path / "out"
    options = ["--stacks-dir", str(tmp_path), "--out", str(out), "--cache-dir", str(upstream_cache)]
    code = render.main(["--stack", "tutorial", *options])
    assert code == 1
    err = capsys.readouterr().err
    assert "do not work together" in err
    for entry in TUTORIAL_MISSING_ENTRIES:
        assert entry in err
    assert not out.exists()  # nothing written
