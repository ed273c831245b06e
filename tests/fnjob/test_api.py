"""Job(...).run / .build / the decorator: validation, then real builds and runs.

Real parts: A's registry and base image, podman for ``deployer="local"``; the Kubernetes
side is the fake API server (real HTTP, real client).
"""

from __future__ import annotations

import base64
import pickle
import re
from typing import Any

import pytest

from fnjob import Job, JobFailed, RemoteFunction, job
from fnjob.deploy_job import JobOptions
from fnjob.deploy_local import LocalOptions
from tests.fnjob import run_payloads, run_with_fnjob_import
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario
from tests.fnjob.run_fixtures import api_client_for, fnjob_containers
from tests.fnjob.run_functions import runner_log_lines

# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"deployer": "kubeflow"}, "deployer='kubeflow' is not one of ('job', 'local')"),
        ({"builder": "kaniko"}, "builder='kaniko' is not one of ('append', 'docker')"),
        ({"memory": "8GB"}, "memory='8GB' is not a Kubernetes quantity"),
        ({"cpu": "fast"}, "cpu='fast'"),
        ({"image_name": "My Model"}, "image_name='My Model' is not a repository name"),
        ({"registry": ""}, "registry='' must be host[:port][/path]"),
        ({"image_pull_secrets": "ecr"}, "image_pull_secrets='ecr' must be a list"),
        ({"gpus": -1}, "gpus=-1"),
        ({"timeout": 0}, "timeout_seconds=0"),
    ],
)
def test_bad_settings_fail_at_construction_naming_field_and_value(
    settings: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError) as caught:
        Job(**{"base_image": "python:3.11", "registry": "registry.example/ml", **settings})
    assert words in str(caught.value)


def test_job_is_frozen_and_copies_its_mappings() -> None:
    env = {"A": "1"}
    description = Job(base_image="python:3.11", registry="r.example/ml/", env=env)
    env["A"] = "changed"
    assert description.env == {"A": "1"}
    assert description.target == "r.example/ml/fnjob"
    with pytest.raises(AttributeError):
        description.gpus = 2  # type: ignore[misc]


def test_settings_reach_the_deployer_options() -> None:
    description = Job(
        base_image="python:3.11",
        registry="r.example",
        cpu=0.5,
        memory=0.5,
        gpus=1,
        namespace="team-a",
        keep_job=True,
        timeout=120,
        image_pull_secrets=["ecr"],
        gpu_node_selector={"karpenter.k8s.aws/instance-gpu-name": "a10g"},
    )
    options = description._deployer_options()
    assert isinstance(options, JobOptions)
    assert (options.cpu, options.memory, options.gpus) == ("500m", "512Mi", 1)
    assert options.delete_on_completion is False
    assert options.timeout_seconds == 120
    assert options.image_pull_secrets == ("ecr",)
    assert options.gpu_node_selector == {"karpenter.k8s.aws/instance-gpu-name": "a10g"}
    assert options.gpu_tolerations[0]["key"] == "nvidia.com/gpu"
    local = Job(base_image="python:3.11", registry="r.example", deployer="local", timeout=9)
    local_options = local._deployer_options()
    assert isinstance(local_options, LocalOptions)
    assert local_options.timeout_seconds == 9


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


# -- real build + fake cluster: deployer="job" ------------------------------------------------


@pytest.mark.real
def test_run_as_kubernetes_job_submits_the_pushed_image_and_the_call(
    registry: Any, python_base: str
) -> None:
    scenario = JobScenario(log_lines=runner_log_lines("add", 20, 22))
    logs: list[str] = []
    with FakeKubeApi(scenario) as fake:
        description = Job(
            base_image=python_base,
            registry=f"{registry.host}/tests",
            image_name="api-job",
            namespace="team-a",
            gpus=1,
            memory=16,
            api_client=api_client_for(fake),
            on_log=logs.append,
        )
        assert description.run(run_payloads.add, 20, b=22) == 42
    (create,) = fake.requests_to("POST", "/namespaces/team-a/jobs")
    container = create.body["spec"]["template"]["spec"]["containers"][0]
    image_ref = container["image"]
    assert image_ref.startswith(f"{registry.host}/tests/api-job@sha256:")
    assert registry.manifest("tests/api-job", image_ref.split("@")[1]).status_code == 200
    call = next(e["value"] for e in container["env"] if e["name"] == "FNJOB_CALL")
    assert pickle.loads(base64.b64decode(call)) == ((20,), {"b": 22})
    assert container["resources"]["limits"] == {"memory": "16384Mi", "nvidia.com/gpu": "1"}
    assert logs == ["adding 20 and 22"]


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
