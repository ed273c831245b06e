"""The Job deployer: the pure manifest, then its I/O against a fake API server.

The fake (``fake_kube_api``) is a real HTTP server; the real ``kubernetes`` client talks to
it, so nothing inside the client is mocked. Pod logs are what fnjob's real runner prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import pytest

from fnjob.deploy_job import (
    ClusterAccessDenied,
    JobDeployer,
    JobFailed,
    JobOptions,
    JobTimeout,
    build_job_manifest,
    cpu_quantity,
    memory_quantity,
)
from fnjob.protocol import encode_call, is_protocol_line
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario
from tests.fnjob.run_fixtures import api_client_for
from tests.fnjob.run_functions import runner_log_lines

K8S_VERSION = "1.34"
IMAGE = "registry.example:5000/team/fnjob-train@sha256:" + "a" * 64


def manifest(**options: Any) -> dict[str, Any]:
    return build_job_manifest(
        image=IMAGE,
        call=encode_call((1,), {"lr": 0.1}),
        function_name="train_model",
        run_id="abc123def456",
        options=JobOptions(**options),
    )


def assert_valid_job(job: dict[str, Any]) -> None:
    # Raises ValidationError on any unknown field or wrong type (strict).
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


# -- the pure manifest -------------------------------------------------------------------


def test_cpu_job_manifest_is_valid_and_carries_the_call_and_hygiene() -> None:
    job = manifest(namespace="team-a", cpu=2, memory="8Gi", timeout_seconds=600)
    assert_valid_job(job)
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["generateName"] == "fnjob-train-model-"
    assert job["metadata"]["labels"]["fnjob/run-id"] == "abc123def456"
    assert spec["template"]["metadata"]["labels"]["fnjob/run-id"] == "abc123def456"
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "default-editor"
    assert container["image"] == IMAGE
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FNJOB_CALL"] == encode_call((1,), {"lr": 0.1})
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    # No GPU asked: no GPU placement either.
    assert "tolerations" not in pod and "nodeSelector" not in pod
    # Kubeflow namespaces inject Istio; a sidecar would keep the Job running forever.
    assert spec["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}


def test_gpu_job_asks_for_gpus_tolerates_the_taint_and_selects_gpu_nodes() -> None:
    job = manifest(gpus=2, image_pull_secrets=("ecr-pull",), env={"WANDB_MODE": "offline"})
    assert_valid_job(job)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["imagePullSecrets"] == [{"name": "ecr-pull"}]
    assert {"name": "WANDB_MODE", "value": "offline"} in container["env"]


def test_gpu_placement_can_be_replaced_for_other_clusters() -> None:
    job = manifest(
        gpus=1,
        gpu_tolerations=(
            {"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"},
        ),
        gpu_node_selector={"node.kubernetes.io/instance-type": "p4d.24xlarge"},
        service_account=None,
    )
    assert_valid_job(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["value"] == "a100"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "p4d.24xlarge"}
    assert "serviceAccountName" not in pod


@pytest.mark.parametrize(
    ("cpu", "expected"), [(0.5, "500m"), (2, "2"), ("250m", "250m"), (1.25, "1250m")]
)
def test_cpu_accepts_cores_and_quantities(cpu: Any, expected: str) -> None:
    assert cpu_quantity(cpu) == expected


@pytest.mark.parametrize(
    ("memory", "expected"), [(0.5, "512Mi"), (8, "8192Mi"), ("8Gi", "8Gi"), ("1.5G", "1.5G")]
)
def test_memory_accepts_gib_numbers_and_quantities(memory: Any, expected: str) -> None:
    assert memory_quantity(memory) == expected


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("cpu", "two", "not a Kubernetes quantity"),
        ("cpu", True, "not a CPU amount"),
        ("memory", "8", "write the unit"),
        ("memory", "8GB", "not a Kubernetes quantity"),
        ("gpus", -1, "whole number >= 0"),
        ("timeout_seconds", 0, "seconds > 0"),
        ("namespace", "Team_A", "not a valid namespace"),
        ("env", {"FNJOB_CALL": "x"}, "may not set FNJOB_CALL"),
    ],
)
def test_bad_options_name_the_field_and_the_value(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        JobOptions(**{field: value})
    assert field in str(caught.value)
    assert words in str(caught.value)


# -- I/O against the fake API server -----------------------------------------------------


def fast_options(**overrides: Any) -> JobOptions:
    return JobOptions(namespace="team-a", poll_interval_seconds=0.01, **overrides)


@pytest.fixture
def fake_cluster() -> Iterator[Any]:
    """Start fake API servers for a test (``fake_cluster(scenario)``) and stop them after."""
    fakes: list[FakeKubeApi] = []

    def start(scenario: JobScenario) -> FakeKubeApi:
        fake = FakeKubeApi(scenario).__enter__()
        fakes.append(fake)
        return fake

    yield start
    for fake in fakes:
        fake.__exit__(None, None, None)


def deploy(fake: FakeKubeApi, options: JobOptions | None = None) -> tuple[Any, list[str]]:
    logs: list[str] = []
    deployer = JobDeployer(options or fast_options(), api_client=api_client_for(fake))
    value = deployer.run(IMAGE, encode_call(), function_name="train", on_log=logs.append)
    return value, logs


def submitted_job(fake: FakeKubeApi) -> dict[str, Any]:
    (create,) = fake.requests_to("POST", "/jobs")
    return create.body


def foreground_deletes(fake: FakeKubeApi) -> list[Any]:
    return [
        r
        for r in fake.requests_to("DELETE", "/jobs/")
        if r.query.get("propagationPolicy") == ["Foreground"]
        or (r.body or {}).get("propagationPolicy") == "Foreground"
    ]


def test_successful_job_returns_the_value_streams_logs_and_is_deleted(fake_cluster: Any) -> None:
    fake = fake_cluster(JobScenario(log_lines=runner_log_lines("train", lr=0.5, epochs=2)))
    value, logs = deploy(fake, fast_options(cpu=1, memory="2Gi", gpus=1))
    assert value == {"loss": 0.5, "lr": 0.5}
    # The user sees the function's output, never the protocol line.
    assert logs == ["epoch 0 lr=0.5", "epoch 1 lr=0.5"]
    assert not any(is_protocol_line(line) for line in logs)
    job = submitted_job(fake)
    assert_valid_job(job)
    assert job["metadata"]["namespace"] == "team-a"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "1",
        "memory": "2Gi",
        "nvidia.com/gpu": "1",
    }
    assert len(foreground_deletes(fake)) == 1
    assert fake.jobs == {}


def test_a_cut_log_stream_still_gets_the_result_from_the_log_tail(fake_cluster: Any) -> None:
    lines = runner_log_lines("train", lr=0.25, epochs=4)
    fake = fake_cluster(JobScenario(log_lines=lines, cut_follow_after=2))
    value, logs = deploy(fake)
    assert value == {"loss": 0.5, "lr": 0.25}
    assert logs == ["epoch 0 lr=0.25", "epoch 1 lr=0.25"]


def test_job_can_be_kept_after_success(fake_cluster: Any) -> None:
    fake = fake_cluster(JobScenario(log_lines=runner_log_lines("add", 2, 3)))
    value, _ = deploy(fake, fast_options(delete_on_completion=False))
    assert value == 5
    assert fake.requests_to("DELETE", "/jobs/") == []
    assert list(fake.jobs) == ["fnjob-train-x7k2p"]


def test_function_exception_comes_back_as_itself_and_the_job_is_deleted(fake_cluster: Any) -> None:
    scenario = JobScenario(
        log_lines=runner_log_lines("explode", "learning rate too high"),
        outcome="Failed",
        job_reason="BackoffLimitExceeded",
        exit_code=1,
        terminated_reason="Error",
    )
    fake = fake_cluster(scenario)
    with pytest.raises(ValueError, match="learning rate too high") as caught:
        # Even when asked to keep finished Jobs, a failed run is cleaned up.
        deploy(fake, fast_options(delete_on_completion=False))
    notes = "\n".join(caught.value.__notes__)
    assert "Remote traceback" in notes
    assert "in explode" in notes
    assert len(foreground_deletes(fake)) == 1


def test_oom_killed_job_raises_job_failed_with_reason_exit_code_and_last_logs(
    fake_cluster: Any,
) -> None:
    scenario = JobScenario(
        log_lines=["loading data", "allocating 40 GiB"],
        outcome="Failed",
        job_reason="BackoffLimitExceeded",
        job_message="Job has reached the specified backoff limit",
        exit_code=137,
        terminated_reason="OOMKilled",
    )
    with pytest.raises(JobFailed) as caught:
        deploy(fake_cluster(scenario))
    error = caught.value
    assert not isinstance(error, JobTimeout)
    assert error.reason == "OOMKilled"
    assert error.exit_code == 137
    assert error.last_logs == ("loading data", "allocating 40 GiB")
    assert "out of memory" in str(error)
    assert "allocating 40 GiB" in str(error)


def test_unschedulable_pod_surfaces_the_schedulers_message(fake_cluster: Any) -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    scenario = JobScenario(unschedulable_message=message)
    fake = fake_cluster(scenario)
    with pytest.raises(JobFailed) as caught:
        deploy(fake, fast_options(gpus=8, unschedulable_timeout_seconds=0))
    assert caught.value.reason == "Unschedulable"
    assert message in str(caught.value)
    assert len(foreground_deletes(fake)) == 1


def test_image_pull_failure_fails_fast_with_the_kubelets_message(fake_cluster: Any) -> None:
    scenario = JobScenario(
        waiting_reason="ImagePullBackOff",
        waiting_message='Back-off pulling image "registry.example:5000/team/fnjob-train"',
    )
    with pytest.raises(JobFailed) as caught:
        deploy(fake_cluster(scenario))
    assert caught.value.reason == "ImagePullBackOff"
    assert "Back-off pulling image" in str(caught.value)
    assert "imagePullSecret" in str(caught.value)


def test_deadline_exceeded_while_running_raises_job_timeout(fake_cluster: Any) -> None:
    scenario = JobScenario(
        log_lines=["epoch 0", "epoch 1"],
        outcome="Failed",
        job_reason="DeadlineExceeded",
        job_message="Job was active longer than specified deadline",
        exit_code=137,
        terminated_reason="Error",
    )
    with pytest.raises(JobTimeout) as caught:
        deploy(fake_cluster(scenario), fast_options(timeout_seconds=60))
    assert caught.value.reason == "DeadlineExceeded"
    assert caught.value.last_logs == ("epoch 0", "epoch 1")
    assert "longer than specified deadline" in str(caught.value)


def test_deadline_exceeded_while_unschedulable_says_why_it_never_ran(fake_cluster: Any) -> None:
    message = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    scenario = JobScenario(unschedulable_message=message, deadline_after_polls=3)
    with pytest.raises(JobTimeout) as caught:
        deploy(fake_cluster(scenario), fast_options(gpus=1, unschedulable_timeout_seconds=None))
    assert message in str(caught.value)


def test_ctrl_c_during_log_streaming_deletes_the_job(fake_cluster: Any) -> None:
    scenario = JobScenario(log_lines=["epoch 0"], hold_logs_until_deleted=True)
    seen: list[str] = []

    stream_open_when_seen: list[bool] = []

    def interrupt(line: str) -> None:
        seen.append(line)
        stream_open_when_seen.append(fake.log_stream_open)
        raise KeyboardInterrupt

    with FakeKubeApi(scenario) as fake:
        deployer = JobDeployer(fast_options(), api_client=api_client_for(fake))
        with pytest.raises(KeyboardInterrupt):
            deployer.run(IMAGE, encode_call(), function_name="train", on_log=interrupt)
        assert seen == ["epoch 0"]
        # The line arrived live, while the container was still running.
        assert stream_open_when_seen == [True]
        (delete,) = foreground_deletes(fake)
        assert delete.path == "/apis/batch/v1/namespaces/team-a/jobs/fnjob-train-x7k2p"
        assert fake.jobs == {}


def test_forbidden_create_raises_cluster_access_denied(fake_cluster: Any) -> None:
    scenario = JobScenario(create_status=403)
    with pytest.raises(ClusterAccessDenied) as caught:
        deploy(fake_cluster(scenario))
    assert caught.value.status == 403
    assert 'cannot create resource "jobs"' in str(caught.value)
    assert "RBAC" in str(caught.value)


# -- how the cluster is found ------------------------------------------------------------


def test_inside_a_pod_the_service_account_and_its_namespace_are_used(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    from fnjob import deploy_job

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_text("not checked until a request is made")
    (account / "namespace").write_text("kubeflow-user-example-com\n")
    # Only the file locations move; the loading code is the client's own.
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setattr(deploy_job, "_SERVICE_ACCOUNT_DIR", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.100.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    api_client = deploy_job.connect()
    assert api_client.configuration.host == "https://10.100.0.1:443"
    assert api_client.configuration.api_key["BearerToken"] == "bearer pod-token"
    assert deploy_job.current_namespace() == "kubeflow-user-example-com"


def test_outside_a_pod_the_kubeconfig_context_namespace_is_used(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fnjob.deploy_job import ClusterConfigError, connect, current_namespace
    from tests.fnjob.run_fixtures import write_kubeconfig

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "config", "https://k8s.example:6443", "team-c")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert connect().configuration.host == "https://k8s.example:6443"
    assert current_namespace() == "team-c"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ClusterConfigError, match="no usable kubeconfig"):
        connect()
