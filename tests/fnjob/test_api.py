"""Job(...).run / .build / the decorator: validation, then real builds and runs.

Real parts: A's registry and base image, podman for ``deployer="local"``; the Kubernetes
side is the fake API server (real HTTP, real client).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

from fnjob import (
    Build,
    ClaimMount,
    Job,
    JobFailed,
    Lifecycle,
    RemoteFunction,
    Resources,
    Scheduling,
    SecretEnv,
    Security,
    Volumes,
    job,
)
from fnjob.run.gpugroups import GpuGroups
from fnjob.run.manifest import JobOptions, RunSettings
from tests.fnjob import run_payloads, run_with_fnjob_import
from tests.fnjob.conftest import GPU_SPOT_GROUPS
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario
from tests.fnjob.run_fixtures import api_client_for, fnjob_containers
from tests.fnjob.run_functions import payload

# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"deployer": "kubeflow"}, "deployer='kubeflow' is not one of ('job', 'local')"),
        (
            {"building": {"builder": "docker"}},
            "building={'builder': 'docker'} must be a fnjob.Build(...)",
        ),
        ({"image_name": "My Model"}, "image_name='My Model' is not a repository name"),
        ({"registry": "/"}, "registry='/' must be host[:port][/path]"),
        ({"resources": {"gpus": 1}}, "resources={'gpus': 1} must be a fnjob.Resources(...)"),
        ({"timeout": 0}, "timeout=0"),
        ({"namespace": "Team_A"}, "namespace='Team_A' is not a valid namespace"),
        ({"scheduling": Scheduling(gpu_group="gpu-spot")}, "needs GPUs"),
        (
            {"deployer": "local", "volumes": Volumes(claims=(ClaimMount("data", "/data"),))},
            "need the Kubernetes deployer",
        ),
        (
            {"deployer": "local", "secret_env": SecretEnv(secrets=("wandb",))},
            "need the Kubernetes deployer",
        ),
    ],
)
def test_bad_settings_fail_at_construction_naming_field_and_value(
    settings: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Job(**{"base_image": "python:3.11", "registry": "registry.example/ml", **settings})
    assert words in str(caught.value)


def test_old_flat_settings_without_a_shorthand_are_refused() -> None:
    # gpus/cpu/memory/gpu_group/... are shorthands now (below); the other old flat run
    # settings still have a single home, their piece.
    for setting in (
        {"service_account": "default-editor"},
        {"backoff_limit": 1},
        {"node_selector": {"pool": "a"}},
    ):
        with pytest.raises(TypeError, match=next(iter(setting))):
            Job(base_image="python:3.11", registry="r.example", **setting)


def test_resource_shorthands_build_the_resources_piece() -> None:
    short = Job(base_image="python:3.11", registry="r.example", cpu=2, memory="8Gi")
    assert short.resources == Resources(cpu=2, memory="8Gi")
    assert short == Job(
        base_image="python:3.11", registry="r.example", resources=Resources(cpu=2, memory="8Gi")
    )
    container = short.job_manifest("r.example/fnjob:x")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    # The piece's own checks apply, naming the shorthand.
    with pytest.raises(ValueError, match="memory='8GB' is not a Kubernetes quantity"):
        Job(base_image="python:3.11", registry="r.example", memory="8GB")
    # Replacing other settings keeps the resources.
    assert dataclasses.replace(short, timeout=60).resources == short.resources


def test_gpu_shorthands_place_the_job_like_the_notebook_contract_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FNJOB_GPU_GROUPS", str(write_gpu_groups(tmp_path / "gpu-groups.json")))
    monkeypatch.setenv("FNJOB_REGISTRY", "123456789012.dkr.ecr.us-west-2.amazonaws.com/team-ml")
    monkeypatch.setenv("FNJOB_BASE_IMAGE", "python:3.11")
    # Issue 9 / the contract: Job(gpus=1, gpu_group="gpu-spot") in a notebook.
    short = Job(gpus=1, gpu_group="gpu-spot")
    assert short == Job(resources=Resources(gpus=1), scheduling=Scheduling(gpu_group="gpu-spot"))
    pod = short.job_manifest("r.example/fnjob:x")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubeflow-eks.io/gpu-group": "gpu-spot"}
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    # Job(gpus=N) alone uses the file's default group.
    assert Job(gpus=1).job_manifest("r/x:1") == short.job_manifest("r/x:1")
    with pytest.raises(ValueError, match="'gpu-ondemand' is not one of the GPU groups"):
        Job(gpus=1, gpu_group="gpu-ondemand")
    # Explicit gpu_tolerations= / gpu_node_selector= still override the group's placement.
    mine = Job(
        gpus=1,
        gpu_tolerations=[{"key": "team", "operator": "Exists", "effect": "NoSchedule"}],
        gpu_node_selector={"pool": "a100"},
    )
    pod = mine.job_manifest("r/x:1")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"] == [{"key": "team", "operator": "Exists", "effect": "NoSchedule"}]
    # The decorator takes the same shorthands.
    assert job(gpus=1, gpu_group="gpu-spot")(run_payloads.add).job == short


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (
            {"gpus": 1, "resources": Resources(memory="8Gi")},
            "gpus=1 and resources=Resources(cpu=None, memory='8Gi', gpus=0) both describe",
        ),
        # Even the piece's defaults, given explicitly, are the piece.
        ({"cpu": 2, "resources": Resources()}, "give one of them (cpu=2 is short for"),
        (
            {"gpu_group": "gpu-spot", "scheduling": Scheduling(node_selector={"pool": "a"})},
            "gpu_group='gpu-spot' and scheduling=Scheduling(",
        ),
    ],
)
def test_a_shorthand_and_the_piece_it_builds_are_not_both_taken(
    settings: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Job(base_image="python:3.11", registry="r.example", **settings)
    assert words in str(caught.value)


def test_old_flat_build_settings_are_refused() -> None:
    # One place for how the image is made: Job(building=Build(...)).
    for setting in ({"builder": "docker"}, {"requirements": ["six"]}, {"base_python": "3.11"}):
        with pytest.raises(TypeError, match=next(iter(setting))):
            Job(base_image="python:3.11", registry="r.example", **setting)


def test_build_settings_reach_the_package_and_the_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "labels.txt").write_text("cat\n")
    description = Job(
        base_image="python:3.11",
        registry="r.example",
        building=Build(
            extra_files=[str(tmp_path / "labels.txt")],
            requirements=["six==1.17.0"],
        ),
    )
    package = description.package(run_payloads.add)
    assert package.requirements == ("six==1.17.0",)
    assert "labels.txt" in {Path(name).name for name in package.files}
    # A bad $FNJOB_REGISTRY_TIMEOUT still fails when the Job is made, unless Build sets one.
    monkeypatch.setenv("FNJOB_REGISTRY_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="FNJOB_REGISTRY_TIMEOUT"):
        Job(base_image="python:3.11", registry="r.example")
    Job(base_image="python:3.11", registry="r.example", building=Build(registry_timeout=5))


def test_job_is_frozen_and_copies_its_mappings() -> None:
    env = {"A": "1"}
    description = Job(base_image="python:3.11", registry="r.example/ml/", env=env)
    env["A"] = "changed"
    assert description.env == {"A": "1"}
    assert description.target == "r.example/ml/fnjob"
    with pytest.raises(AttributeError):
        description.timeout = 2  # type: ignore[misc]


def test_registry_and_base_image_default_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FNJOB_REGISTRY", "123456789012.dkr.ecr.us-west-2.amazonaws.com/team-ml")
    monkeypatch.setenv("FNJOB_BASE_IMAGE", "ghcr.io/kubeflow/notebook@sha256:" + "b" * 64)
    description = Job()
    assert description.target == "123456789012.dkr.ecr.us-west-2.amazonaws.com/team-ml/fnjob"
    assert description.base_image == "ghcr.io/kubeflow/notebook@sha256:" + "b" * 64
    # Given values win.
    assert Job(registry="r.example").registry == "r.example"
    monkeypatch.delenv("FNJOB_REGISTRY")
    with pytest.raises(ValueError, match=r"registry=None .* \$FNJOB_REGISTRY"):
        Job()
    monkeypatch.delenv("FNJOB_BASE_IMAGE")
    with pytest.raises(ValueError, match=r"base_image=None: .* \$FNJOB_BASE_IMAGE"):
        Job(registry="r.example")


def test_every_setting_reaches_the_submitted_job() -> None:
    description = Job(
        base_image="python:3.11",
        registry="r.example",
        namespace="team-a",
        resources=Resources(cpu=0.5, memory=0.5, gpus=1),
        scheduling=Scheduling(gpu_node_selector={"karpenter.k8s.aws/instance-gpu-name": "a10g"}),
        security=Security(run_as_user=1000, fs_group=100, image_pull_secrets=("ecr",)),
        volumes=Volumes(claims=(ClaimMount.parse("workspace:/home/jovyan:ro"),), shm_size="1Gi"),
        secret_env=SecretEnv(secrets=("wandb",)),
        env={"MODE": "train"},
        timeout=120,
        lifecycle=Lifecycle(backoff_limit=1),
    )
    manifest = description.job_manifest("r.example/fnjob@sha256:" + "c" * 64)
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert manifest["metadata"]["namespace"] == "team-a"
    assert manifest["spec"]["activeDeadlineSeconds"] == 120
    assert manifest["spec"]["backoffLimit"] == 1
    assert container["resources"]["limits"] == {
        "cpu": "500m",
        "memory": "512Mi",
        "nvidia.com/gpu": "1",
    }
    assert pod["nodeSelector"] == {"karpenter.k8s.aws/instance-gpu-name": "a10g"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["imagePullSecrets"] == [{"name": "ecr"}]
    assert {"name": "MODE", "value": "train"} in container["env"]
    assert container["envFrom"] == [{"secretRef": {"name": "wandb"}}]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/home/jovyan", "/dev/shm"}


def test_run_settings_are_declared_once_and_all_reach_the_deployer() -> None:
    # Job and the Kubernetes deployer's JobOptions share one declaration of how a run runs,
    # so a setting added there cannot be forgotten on the way to the cluster.
    shared = {item.name for item in dataclasses.fields(RunSettings)}
    assert issubclass(Job, RunSettings)
    assert issubclass(JobOptions, RunSettings)
    assert {item.name for item in dataclasses.fields(JobOptions)} == shared | {"placement"}
    given = {
        "namespace": "team-a",
        "resources": Resources(cpu=1, gpus=1),
        "scheduling": Scheduling(gpu_group="gpu-spot"),
        "security": Security(run_as_user=1000),
        "volumes": Volumes(shm_size="1Gi"),
        "env": {"MODE": "train"},
        "secret_env": SecretEnv(secrets=("wandb",)),
        "labels": {"team": "vision"},
        "timeout": 60,
        "keep_job": True,
        "lifecycle": Lifecycle(backoff_limit=2),
        "gpu_groups": GpuGroups.from_document(GPU_SPOT_GROUPS, source="test"),
    }
    assert set(given) == shared, "every run setting is given a non-default value here"
    options = Job(base_image="python:3.11", registry="r.example", **given)._deployer_options()
    assert isinstance(options, JobOptions)
    for name, value in given.items():
        assert getattr(options, name) == value, name
    assert options.placement is not None


def write_gpu_groups(path: Path) -> Path:
    path.write_text(json.dumps(GPU_SPOT_GROUPS))
    return path


def test_gpu_groups_come_from_the_file_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FNJOB_GPU_GROUPS", str(write_gpu_groups(tmp_path / "gpu-groups.json")))
    description = Job(base_image="python:3.11", registry="r.example", resources=Resources(gpus=1))
    pod = description.job_manifest("r.example/fnjob:x")["spec"]["template"]["spec"]
    # The group's placement, not the hard-coded defaults.
    assert pod["nodeSelector"] == {"kubeflow-eks.io/gpu-group": "gpu-spot"}
    assert pod["tolerations"] == [
        {"key": "capacity", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
    ]
    with pytest.raises(ValueError, match="'gpu-ondemand' is not one of the GPU groups"):
        Job(
            base_image="python:3.11",
            registry="r.example",
            resources=Resources(gpus=1),
            scheduling=Scheduling(gpu_group="gpu-ondemand"),
        )
    with pytest.raises(ValueError, match="gpus=2 does not fit GPU group gpu-spot"):
        Job(base_image="python:3.11", registry="r.example", resources=Resources(gpus=2))


def test_decorated_function_runs_in_place_inside_an_fnjob_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In the container the module is imported again: the decorator must not start
    # another job (this registry does not even exist).
    remote_add = Job(base_image="python:3.11", registry="nowhere.invalid").remote(run_payloads.add)
    monkeypatch.setenv("FNJOB_ENTRY", "module:train:add")
    assert remote_add(2, 3) == 5
    assert remote_add.__name__ == "add"
    assert remote_add.local is run_payloads.add


def test_a_decorator_relying_on_the_notebooks_environment_imports_inside_the_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In the notebook, FNJOB_REGISTRY/FNJOB_BASE_IMAGE/FNJOB_GPU_GROUPS complete the
    # description; in the image none of them is set, and importing the module must work.
    for name in ("FNJOB_REGISTRY", "FNJOB_BASE_IMAGE", "FNJOB_GPU_GROUPS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FNJOB_ENTRY", "module:train:add")
    settings = {"resources": Resources(gpus=1), "scheduling": Scheduling(gpu_group="gpu-spot")}
    remote_add = job(**settings)(run_payloads.add)
    assert remote_add(2, 3) == 5
    assert job(gpus=1, gpu_group="gpu-spot")(run_payloads.add)(2, 3) == 5


# -- real: local deployer -------------------------------------------------------------------


def local_job(registry: Any, python_base: str, podman_env: dict[str, str], **more: Any) -> Job:
    logs: list[str] = more.pop("logs", [])
    return Job(
        base_image=python_base,
        registry=f"{registry.host}/tests",
        image_name="api-local",
        deployer="local",
        engine="podman",
        engine_env=podman_env,
        on_log=logs.append,
        **more,
    )


@pytest.mark.real
def test_run_locally_returns_the_functions_value(
    registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    logs: list[str] = []
    description = local_job(registry, python_base, podman_env, logs=logs)
    assert description.run(run_payloads.train, lr=0.5, epochs=2) == {"loss": 0.5, "lr": 0.5}
    assert logs == ["epoch 0 lr=0.5", "epoch 1 lr=0.5"]
    assert fnjob_containers(podman_env) == []


@pytest.mark.real
def test_run_locally_brings_back_the_functions_exception(
    registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    description = local_job(registry, python_base, podman_env)
    with pytest.raises(ValueError, match="diverged at step 7") as caught:
        description.run(run_payloads.explode, "diverged at step 7")
    notes = "\n".join(caught.value.__notes__)
    assert "Remote traceback" in notes and "run_payloads.py" in notes


@pytest.mark.real
def test_function_from_a_module_that_imports_fnjob_still_runs(
    registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    logs: list[str] = []
    description = local_job(registry, python_base, podman_env, logs=logs)
    assert description.run(run_with_fnjob_import.fit, 3) == "fitted 3"
    assert logs == ["fitting 3 steps"]


@pytest.mark.real
def test_decorator_forms_run_remotely(
    registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    settings = {
        "base_image": python_base,
        "registry": f"{registry.host}/tests",
        "image_name": "api-decorated",
        "deployer": "local",
        "engine": "podman",
        "engine_env": podman_env,
        "on_log": lambda line: None,
    }

    @job(**settings)
    def power(base: int, exponent: int = 2) -> tuple[int, str]:
        # A nested function: shipped with cloudpickle (same Python 3.11 on both sides).
        import os

        return int(base**exponent), os.getcwd()

    assert isinstance(power, RemoteFunction)
    # The working directory proves where it ran: the image's /fnjob/app.
    assert power(3, exponent=4) == (81, "/fnjob/app")
    assert power.local(2)[1] != "/fnjob/app"
    logs: list[str] = []
    remote_train = Job(**{**settings, "on_log": logs.append}).remote(run_payloads.train)
    assert remote_train(lr=1.0, epochs=1) == {"loss": 0.5, "lr": 1.0}
    assert logs == ["epoch 0 lr=1.0"]


@pytest.mark.real
def test_build_returns_a_digest_pinned_reference_in_the_registry(
    registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    description = local_job(registry, python_base, podman_env)
    image = description.build(run_payloads.add)
    assert re.fullmatch(
        rf"{re.escape(registry.host)}/tests/api-local@sha256:[0-9a-f]{{64}}", image.ref
    )
    digest = image.ref.split("@", 1)[1]
    assert registry.manifest("tests/api-local", digest).status_code == 200
    # Same code, same image: building again gives the same digest.
    assert description.build(run_payloads.add).ref == image.ref


class ProgressStages:
    """A reporter that keeps the build's progress stages."""

    def __init__(self) -> None:
        self.stages: list[str] = []

    def progress(self, event: Any) -> None:
        self.stages.append(event.stage)

    def status(self, text: str) -> None:
        pass


@pytest.mark.real
def test_the_build_piece_reaches_the_builder(
    registry: Any, python_base: str, podman_env: dict[str, str], tmp_path: Path
) -> None:
    found, given = ProgressStages(), ProgressStages()
    building = Build(cache_dir=tmp_path / "cache", registry_timeout=20)
    local_job(registry, python_base, podman_env, building=building, reporter=found).build(
        run_payloads.add
    )
    assert "check-python" in found.stages
    # Told the base's Python, the builder does not look for it.
    told = Build(cache_dir=tmp_path / "cache-2", base_python="3.11")
    local_job(registry, python_base, podman_env, building=told, reporter=given).build(
        run_payloads.add
    )
    assert "check-python" not in given.stages and "done" in given.stages
    assert not (tmp_path / "cache-2").exists()


# -- real build + fake cluster: deployer="job" ------------------------------------------------


class StatusLines:
    """A reporter that keeps the status lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def progress(self, event: Any) -> None:
        pass

    def status(self, text: str) -> None:
        self.lines.append(text)


@pytest.mark.real
def test_run_as_kubernetes_job_in_a_notebook_needs_no_other_setting(
    registry: Any, python_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the stack's PodDefault injects into a notebook.
    monkeypatch.setenv("FNJOB_REGISTRY", f"{registry.host}/tests")
    monkeypatch.setenv("FNJOB_BASE_IMAGE", python_base)
    monkeypatch.setenv("FNJOB_GPU_GROUPS", str(write_gpu_groups(tmp_path / "gpu-groups.json")))
    logs: list[str] = []
    reporter = StatusLines()
    with FakeKubeApi(JobScenario(entry=payload("add"))) as fake:
        description = Job(
            image_name="api-job",
            namespace="team-a",
            resources=Resources(gpus=1, memory=16),
            api_client=api_client_for(fake),
            on_log=logs.append,
            reporter=reporter,
        )
        assert description.run(run_payloads.add, 20, b=22) == 42
    (create,) = fake.requests_to("POST", "/namespaces/team-a/jobs")
    pod = create.body["spec"]["template"]["spec"]
    container = pod["containers"][0]
    image_ref = container["image"]
    assert image_ref.startswith(f"{registry.host}/tests/api-job@sha256:")
    assert registry.manifest("tests/api-job", image_ref.split("@")[1]).status_code == 200
    assert container["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"kubeflow-eks.io/gpu-group": "gpu-spot"}
    # The arguments travelled in the run's Secret, not in the Job.
    (secret,) = [r.body for r in fake.requests_to("POST", "/secrets")]
    assert pickle.loads(base64.b64decode(secret["data"]["call"])) == ((20,), {"b": 22})
    assert "env" not in container
    assert logs == ["adding 20 and 22"]
    # The library said which GPU group it used (through the reporter, not a print).
    assert reporter.lines[0].startswith("GPU group gpu-spot (NVIDIA A10G, 1 per node), the default")


@pytest.mark.real
def test_job_failure_without_outcome_is_job_failed(registry: Any, python_base: str) -> None:
    scenario = JobScenario(
        log_lines=["loading 80 GB of embeddings"],
        outcome="Failed",
        job_reason="BackoffLimitExceeded",
        exit_code=137,
        terminated_reason="OOMKilled",
    )
    with FakeKubeApi(scenario) as fake:
        description = Job(
            base_image=python_base,
            registry=f"{registry.host}/tests",
            image_name="api-job",
            namespace="team-a",
            api_client=api_client_for(fake),
            on_log=lambda line: None,
        )
        with pytest.raises(JobFailed) as caught:
            description.run(run_payloads.add, 1, 2)
    assert caught.value.reason == "OOMKilled"
    assert caught.value.last_logs == ("loading 80 GB of embeddings",)
    assert fake.jobs == {}
