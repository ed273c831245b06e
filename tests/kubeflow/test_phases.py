"""The apply-order phase split over the transformed objects."""

from __future__ import annotations

from components.kubeflow.component import build_phases
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.phases import Phase, is_builtin, split_phases
from components.kubeflow.transform import KubeflowCredentials
from tests.kubeflow.conftest import make_args


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
    assert [p.name for p in phases] == [
        "01-namespaces-crds",
        "02-platform",
        "03-platform-webhooks",
        "04-applications",
        "05-application-webhooks",
    ]
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
    assert {o["kind"] for o in in_team} == {"Secret", "ServiceAccount"}


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
