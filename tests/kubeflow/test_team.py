"""A shared platform on upstream 26.03's render: per-profile quotas and idle culling."""

from __future__ import annotations

from typing import Any

from components.kubeflow.component import build_phases
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.transform import CONFIG_DIGEST_ANNOTATION, KubeflowCredentials
from model.kubeflow import Culling, Profile, Quota
from tests.crd_schema import crd_errors
from tests.kubeflow.conftest import UpstreamRelease, make_upstream_args

VISION = Profile(
    name="team-vision", owner="lin@research.example.org", quota=Quota(gpus=8, storage="2Ti")
)
NLP = Profile(name="team-nlp", owner="ana@research.example.org", quota=Quota(gpus=2))


def _objects(
    upstream: UpstreamRelease,
    rendered: RenderedManifests,
    credentials: KubeflowCredentials,
    **overrides: Any,
) -> list[dict[str, Any]]:
    args = make_upstream_args(upstream.source, profiles=(VISION, NLP), **overrides)
    return [dict(o) for p in build_phases(rendered.objects, args, credentials) for o in p.objects]


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name))


def test_every_profile_carries_its_quota_valid_for_the_profile_crd(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
) -> None:
    objects = _objects(upstream, upstream_rendered, credentials, default_quota=Quota(gpus=4))
    crd = _find(objects, "CustomResourceDefinition", "profiles.kubeflow.org")
    quotas = {}
    for profile in (o for o in objects if o["kind"] == "Profile"):
        assert crd_errors(profile, crd) == []
        quotas[profile["metadata"]["name"]] = profile["spec"]["resourceQuotaSpec"]["hard"]
    assert quotas == {
        "team-vision": {"requests.nvidia.com/gpu": "8", "requests.storage": "2Ti"},
        "team-nlp": {"requests.nvidia.com/gpu": "2"},
        # Upstream's example profile is the admin's, and gets the stack-wide default.
        "kubeflow-user-example-com": {"requests.nvidia.com/gpu": "4"},
    }


def test_culling_is_set_and_a_change_rolls_the_notebook_controller(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
) -> None:
    def controller_and_config(culling: Culling) -> tuple[str, dict[str, str]]:
        objects = _objects(upstream, upstream_rendered, credentials, culling=culling)
        config = _find(objects, "ConfigMap", "notebook-controller-config")
        controller = _find(objects, "Deployment", "notebook-controller-deployment")
        annotations = controller["spec"]["template"]["metadata"]["annotations"]
        return annotations[CONFIG_DIGEST_ANNOTATION], config["data"]

    digest, data = controller_and_config(Culling())
    assert {k: data[k] for k in ("ENABLE_CULLING", "CULL_IDLE_TIME", "IDLENESS_CHECK_PERIOD")} == {
        "ENABLE_CULLING": "true",
        "CULL_IDLE_TIME": "120",
        "IDLENESS_CHECK_PERIOD": "5",
    }
    longer, data = controller_and_config(Culling(idle_minutes=480))
    assert data["CULL_IDLE_TIME"] == "480"
    assert longer != digest
    off, data = controller_and_config(Culling(enabled=False))
    assert data["ENABLE_CULLING"] == "false"
    assert off not in (digest, longer)
