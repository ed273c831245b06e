"""What each profile's notebooks get for fnjob, as the stack renders it on upstream's objects:
the PodDefault, the GPU groups file fnjob reads, and the notebook form's defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from components.kubeflow.component import build_phases
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.profiles import NotebookSetup
from components.kubeflow.transform import KubeflowCredentials
from fnjob.image.auth import auth_files, docker_config_path
from fnjob.options import Scheduling
from fnjob.run.gpugroups import load_gpu_groups, place_gpus
from tests.crd_schema import crd_errors
from tests.kubeflow.conftest import GPU_A10, GPU_BOTTLEROCKET, make_upstream_args

IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/ml/notebook@sha256:" + "a" * 64
REGISTRY = "123456789012.dkr.ecr.us-west-2.amazonaws.com/ml/team-vision"
UPSTREAM_PROFILE = "kubeflow-user-example-com"


def _render(
    rendered: RenderedManifests,
    credentials: KubeflowCredentials,
    notebooks: NotebookSetup,
    **overrides: Any,
) -> list[dict[str, Any]]:
    args = make_upstream_args(rendered.source_dir, **overrides)
    return [
        dict(o)
        for p in build_phases(rendered.objects, args, credentials, notebooks)
        for o in p.objects
    ]


def _in(objects: list[dict[str, Any]], namespace: str, kind: str) -> dict[str, Any]:
    [found] = [
        o for o in objects if o["kind"] == kind and o["metadata"].get("namespace") == namespace
    ]
    return found


def _env(pod_default: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod_default["spec"]["env"]}


def test_every_profile_gets_fnjobs_settings_by_default(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    notebooks = NotebookSetup(image=IMAGE, registries={"team-vision": REGISTRY})
    objects = _render(upstream_rendered, credentials, notebooks, registry_access="ecr")
    pod_default = _in(objects, "team-vision", "PodDefault")
    env = _env(pod_default)
    assert env == {
        "FNJOB_REGISTRY": REGISTRY,
        # Jobs start from the notebook's own image: the same Python, so pickles load.
        "FNJOB_BASE_IMAGE": IMAGE,
        "FNJOB_GPU_GROUPS": "/etc/fnjob/gpu-groups.json",
        # kubeflow.jobTimeoutHours, 24 by default.
        "FNJOB_DEFAULT_TIMEOUT": "86400",
        # Trainer is in the render: multi-node runs use kubeflow.training.defaultRuntime.
        "FNJOB_TRAINING_RUNTIME": "torch-distributed",
    }
    # ECR: credentials come from Pod Identity, nothing is mounted for docker.
    mounts = {m["mountPath"] for m in pod_default["spec"]["volumeMounts"]}
    assert mounts == {"/etc/fnjob"}
    # The admin's (upstream's example) profile gets the same settings, without a registry
    # it was not given.
    assert "FNJOB_REGISTRY" not in _env(_in(objects, UPSTREAM_PROFILE, "PodDefault"))
    crd = next(
        o
        for o in objects
        if o["kind"] == "CustomResourceDefinition"
        and o["metadata"]["name"] == "poddefaults.kubeflow.org"
    )
    assert crd_errors(pod_default, crd) == []


def test_docker_config_profiles_get_their_credentials_outside_the_workspace(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    objects = _render(upstream_rendered, credentials, NotebookSetup())
    pod_default = _in(objects, "team-vision", "PodDefault")
    [mount] = [
        m for m in pod_default["spec"]["volumeMounts"] if m["name"] == "registry-credentials"
    ]
    # A read-only folder of its own: nothing on the workspace volume (the home folder), and no
    # subPath, which leaves a root-owned file there and misses Secret updates.
    assert mount == {
        "name": "registry-credentials",
        "mountPath": "/etc/registry-auth",
        "readOnly": True,
    }
    [volume] = [v for v in pod_default["spec"]["volumes"] if v["name"] == "registry-credentials"]
    assert volume["secret"]["secretName"] == "registry-credentials"
    assert volume["secret"]["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
    # docker, podman/skopeo/buildah and fnjob all look there first.
    env = {**_env(pod_default), "HOME": "/home/jovyan"}
    assert docker_config_path(env) == Path("/etc/registry-auth/config.json")
    assert auth_files(env)[0] == Path("/etc/registry-auth/config.json")


def test_the_gpu_groups_file_is_what_fnjob_reads(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials, tmp_path: Path
) -> None:
    groups = (GPU_A10, GPU_BOTTLEROCKET)
    objects = _render(upstream_rendered, credentials, NotebookSetup(), gpu_groups=groups)
    config_map = _in(objects, "team-vision", "ConfigMap")
    file = tmp_path / "gpu-groups.json"
    file.write_text(config_map["data"]["gpu-groups.json"])
    published = load_gpu_groups(file)
    # One GPU-group type, published: fnjob lands exactly where the notebook form does.
    placed = place_gpus(1, Scheduling(gpu_group="l4-bottlerocket"), published)
    assert placed is not None
    assert list(placed.tolerations) == GPU_BOTTLEROCKET.tolerations()
    assert dict(placed.node_selector) == GPU_BOTTLEROCKET.selector_labels()
    default = place_gpus(1, Scheduling(), published)
    assert default is not None and dict(default.node_selector) == GPU_A10.selector_labels()
    document = json.loads(config_map["data"]["gpu-groups.json"])
    assert [g["gpuModel"] for g in document["groups"]] == ["NVIDIA A10G", "NVIDIA L4"]


def test_the_notebook_form_offers_the_stacks_image_first_with_fnjob_ticked(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    objects = _render(upstream_rendered, credentials, NotebookSetup(image=IMAGE))
    [config_map] = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and "spawner_ui_config.yaml" in (o.get("data") or {})
    ]
    form = yaml.safe_load(config_map["data"]["spawner_ui_config.yaml"])["spawnerFormDefaults"]
    assert form["image"]["options"][0] == IMAGE
    assert form["image"]["value"] == IMAGE
    assert "registry.corp.example/notebooks/torch:2.5" in form["image"]["options"]
    assert "kubeflow-eks.io/fnjob" in form["configurations"]["value"]
