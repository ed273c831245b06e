"""From the stack's rendered objects to a notebook pod, without a container: the form's
defaults, the admission webhook's merge, and the pod's translation to podman options."""

from __future__ import annotations

import itertools
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.journey.notebook_pod import (
    NOTEBOOK_HOME,
    PodDefaultConflict,
    apply_pod_defaults,
    form_defaults,
    in_namespace,
    notebook_from_form,
    notebook_pod,
    pod_defaults_in,
)
from tests.journey.podman_pod import PodSources, podman_options, pull_auth_file
from tests.journey.profile import PROFILE, docker_config, render_profile_stack

REGISTRY = "registry.lab.example.org"
NOTEBOOK_IMAGE = f"{REGISTRY}/platform/notebook@sha256:" + "c" * 64
LAB_DOCKER_CONFIG = docker_config(REGISTRY, "lab-robot", "lab-robot-password")


@cache
def _rendered() -> tuple[dict[str, Any], ...]:
    return tuple(
        render_profile_stack(
            job_registry=f"{REGISTRY}/kubeflow",
            notebook_image=NOTEBOOK_IMAGE,
            profile_docker_config=LAB_DOCKER_CONFIG,
        )
    )


def _pod(configurations: list[str] | None = None) -> dict[str, Any]:
    notebook = notebook_from_form(
        form_defaults(_rendered()), name="train", namespace=PROFILE, configurations=configurations
    )
    return notebook_pod(notebook)


def _env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def _pod_default(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": name, "namespace": PROFILE},
        "spec": {"selector": {"matchLabels": {f"{name}-label": "true"}}, **spec},
    }


def _labelled_pod(*labels: str, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    pod = _pod(configurations=[])
    pod["metadata"]["labels"].update({label: "true" for label in labels})
    pod["spec"]["containers"][0]["env"] += env or []
    return pod


# -- the form's defaults and the webhook, on the stack's own objects -------------------------


def test_a_notebook_made_with_the_forms_defaults_gets_fnjob_configured() -> None:
    admitted = apply_pod_defaults(_pod(), pod_defaults_in(_rendered(), PROFILE))
    container = admitted["spec"]["containers"][0]
    assert container["image"] == NOTEBOOK_IMAGE
    env = _env(admitted)
    assert env["FNJOB_REGISTRY"] == f"{REGISTRY}/kubeflow/{PROFILE}"
    assert env["FNJOB_BASE_IMAGE"] == NOTEBOOK_IMAGE
    assert env["FNJOB_GPU_GROUPS"] == "/etc/fnjob/gpu-groups.json"
    assert env["NB_PREFIX"] == f"/notebook/{PROFILE}/train"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {NOTEBOOK_HOME, "/etc/fnjob", "/etc/registry-auth"}
    assert env["DOCKER_CONFIG"] == "/etc/registry-auth"
    assert env["REGISTRY_AUTH_FILE"] == "/etc/registry-auth/config.json"
    assert (
        "poddefault.admission.kubeflow.org/poddefault-fnjob" in admitted["metadata"]["annotations"]
    )


def test_unticking_the_configuration_leaves_the_notebook_without_fnjob() -> None:
    admitted = apply_pod_defaults(_pod(configurations=[]), pod_defaults_in(_rendered(), PROFILE))
    assert not any(name.startswith("FNJOB_") for name in _env(admitted))
    assert "annotations" not in admitted["metadata"]


def test_the_pod_default_reaches_only_its_own_namespace() -> None:
    pod = _pod()
    pod["metadata"]["namespace"] = "other-team"
    admitted = apply_pod_defaults(pod, pod_defaults_in(_rendered(), PROFILE))
    assert "FNJOB_REGISTRY" not in _env(admitted)


# -- the webhook's merge rules ---------------------------------------------------------------


def test_an_env_variable_the_container_already_sets_differently_refuses_the_pod() -> None:
    pod = _labelled_pod("a-label", env=[{"name": "FNJOB_REGISTRY", "value": "mine.example"}])
    theirs = _pod_default("a", env=[{"name": "FNJOB_REGISTRY", "value": "theirs.example"}])
    with pytest.raises(PodDefaultConflict, match="conflict on FNJOB_REGISTRY") as raised:
        apply_pod_defaults(pod, [theirs])
    assert len(raised.value.problems) == 1


def test_the_same_env_variable_with_the_same_value_is_merged_once() -> None:
    same = {"name": "FNJOB_REGISTRY", "value": "same.example"}
    pod = _labelled_pod("a-label", "b-label", env=[same])
    admitted = apply_pod_defaults(
        pod, [_pod_default("a", env=[same]), _pod_default("b", env=[same])]
    )
    names = [e["name"] for e in admitted["spec"]["containers"][0]["env"]]
    assert names.count("FNJOB_REGISTRY") == 1


def test_two_pod_defaults_disagreeing_on_a_volume_or_a_mount_path_refuse_the_pod() -> None:
    pod = _labelled_pod("a-label", "b-label")
    a = _pod_default(
        "a",
        volumes=[{"name": "creds", "secret": {"secretName": "one"}}],
        volumeMounts=[{"name": "creds", "mountPath": "/etc/creds"}],
    )
    b = _pod_default(
        "b",
        volumes=[{"name": "creds", "secret": {"secretName": "two"}}],
        volumeMounts=[{"name": "other", "mountPath": "/etc/creds"}],
    )
    with pytest.raises(PodDefaultConflict) as raised:
        apply_pod_defaults(pod, [a, b])
    problems = " | ".join(raised.value.problems)
    assert "merging volumes for b has a conflict on creds" in problems
    assert "conflict on mount path /etc/creds" in problems


def test_an_unmatched_or_excluded_pod_is_left_alone() -> None:
    sets_env = _pod_default("a", env=[{"name": "X", "value": "1"}])
    assert "X" not in _env(apply_pod_defaults(_labelled_pod("b-label"), [sets_env]))
    excluded = _labelled_pod("a-label")
    excluded["metadata"]["annotations"] = {"poddefault.admission.kubeflow.org/exclude": "true"}
    assert "X" not in _env(apply_pod_defaults(excluded, [sets_env]))


def test_a_pod_default_field_the_helper_does_not_apply_is_refused() -> None:
    tolerating = _pod_default("a", tolerations=[{"key": "x", "operator": "Exists"}])
    with pytest.raises(ValueError, match=r"sets \['tolerations'\]"):
        apply_pod_defaults(_labelled_pod("a-label"), [tolerating])


# -- the admitted pod as podman options -------------------------------------------------------


def _sources(tmp_path: Path) -> PodSources:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    return PodSources(
        config_maps=in_namespace(_rendered(), "ConfigMap", PROFILE),
        secrets=in_namespace(_rendered(), "Secret", PROFILE),
        service_accounts=in_namespace(_rendered(), "ServiceAccount", PROFILE),
        claims={"train-workspace": workspace},
    )


def _volumes(options: list[str]) -> dict[str, tuple[Path, str]]:
    """mount path -> (host path, flags) of the --volume options."""
    found = {}
    for flag, value in itertools.pairwise(options):
        if flag == "--volume":
            host, target, flags = value.split(":")
            found[target] = (Path(host), flags)
    return found


def test_the_admitted_pod_becomes_podman_env_and_files(tmp_path: Path) -> None:
    admitted = apply_pod_defaults(_pod(), pod_defaults_in(_rendered(), PROFILE))
    sources = _sources(tmp_path)
    options = podman_options(admitted, sources, tmp_path / "pod")
    assert options[:2] == ["--hostname", "train-0"]
    assert f"FNJOB_REGISTRY={REGISTRY}/kubeflow/{PROFILE}" in options
    volumes = _volumes(options)
    assert volumes[NOTEBOOK_HOME] == (sources.claims["train-workspace"], "rw")
    groups_dir, flags = volumes["/etc/fnjob"]
    assert flags == "ro"
    groups = json.loads((groups_dir / "gpu-groups.json").read_text())
    assert (groups["version"], groups["default"]) == (1, "gpu-spot")
    config_dir, flags = volumes["/etc/registry-auth"]
    assert flags == "ro"
    assert json.loads((config_dir / "config.json").read_text()) == json.loads(LAB_DOCKER_CONFIG)


def test_the_profiles_pull_secret_is_what_the_kubelet_pulls_with(tmp_path: Path) -> None:
    auth = pull_auth_file(_pod(), _sources(tmp_path), tmp_path / "auth.json")
    assert json.loads(auth.read_text()) == json.loads(LAB_DOCKER_CONFIG)


def test_what_podman_cannot_be_given_is_an_error_not_left_out(tmp_path: Path) -> None:
    pod = _pod(configurations=[])
    pod["spec"]["containers"][0]["env"].append(
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    )
    with pytest.raises(ValueError, match="env TOKEN: only plain values"):
        podman_options(pod, _sources(tmp_path), tmp_path / "pod")
    pod = _pod(configurations=[])
    pod["spec"]["volumes"][0] = {"name": "workspace", "projected": {"sources": []}}
    with pytest.raises(ValueError, match=r"volume workspace: \['projected'\]"):
        podman_options(pod, _sources(tmp_path), tmp_path / "pod2")
