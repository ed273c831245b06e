"""The Job deployer against a fake API server (``fake_kube_api``): a real HTTP server, the
real ``kubernetes`` client, nothing inside the client mocked. Where a scenario has an
``entry``, the pod "runs" fnjob's real runner with the Secret the deployer created, so the
logs are exactly what a real pod would print for this run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client

from fnjob.errors import JobFailed, JobTimeout, PodNotCreated
from fnjob.options import ClaimMount, Lifecycle, Resources, Scheduling, Volumes
from fnjob.run.cluster import ClusterAccessDenied, ClusterUnreachable, LogStreamStalled
from fnjob.run.gpugroups import GpuGroups
from fnjob.run.job import JobDeployer
from fnjob.run.manifest import JobOptions
from fnjob.run.protocol import MAX_POD_RESULT_BYTES, ResultMissing, ResultTooLarge, encode_call
from tests.fnjob.conftest import free_port
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario, PlantedPod
from tests.fnjob.forgery import forged_outcome_lines
from tests.fnjob.run_fixtures import api_client_for, with_fnjob_importable
from tests.fnjob.run_functions import payload
from tests.fnjob.run_payloads import random_bytes

IMAGE = "registry.example:5000/team/fnjob-train@sha256:" + "a" * 64
FAST = Lifecycle(poll_interval=0.01)


def fast_options(**overrides: Any) -> JobOptions:
    return JobOptions(namespace="team-a", **{"lifecycle": FAST, **overrides})


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


def deploy(
    fake: FakeKubeApi,
    options: JobOptions | None = None,
    call: bytes | None = None,
    status: list[str] | None = None,
) -> tuple[Any, list[str]]:
    logs: list[str] = []
    deployer = JobDeployer(options or fast_options(), api_client=api_client_for(fake))
    value = deployer.run(
        IMAGE,
        encode_call() if call is None else call,
        function_name="train",
        on_log=logs.append,
        on_status=None if status is None else status.append,
    )
    return value, logs


def submitted_job(fake: FakeKubeApi) -> dict[str, Any]:
    (create,) = fake.requests_to("POST", "/jobs")
    return create.body


def foreground_deletes(fake: FakeKubeApi) -> list[Any]:
    return [
        r
        for r in fake.requests_to("DELETE", "/jobs")
        if r.query.get("propagationPolicy") == ["Foreground"]
        or (r.body or {}).get("propagationPolicy") == "Foreground"
    ]


def test_successful_job_returns_the_value_streams_logs_and_leaves_nothing(
    fake_cluster: Any,
) -> None:
    fake = fake_cluster(JobScenario(entry=payload("train")))
    value, logs = deploy(
        fake,
        fast_options(resources=Resources(cpu=1, memory="2Gi", gpus=1)),
        call=encode_call((), {"lr": 0.5, "epochs": 2}),
    )
    assert value == {"loss": 0.5, "lr": 0.5}
    # The user sees the function's output, never the outcome line.
    assert logs == ["epoch 0 lr=0.5", "epoch 1 lr=0.5"]
    job = submitted_job(fake)
    kubernetes_validate.validate(job, "1.34", strict=True)
    assert job["metadata"]["namespace"] == "team-a"
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "1",
        "memory": "2Gi",
        "nvidia.com/gpu": "1",
    }
    # The arguments went into a Secret owned by the Job, never into the Job itself...
    (secret,) = [r.body for r in fake.requests_to("POST", "/secrets")]
    assert "FNJOB_CALL" not in json.dumps(job)
    assert secret["data"]["call"] not in json.dumps(job)
    (owner,) = secret["metadata"]["ownerReferences"]
    assert owner["kind"] == "Job" and owner["name"] == "fnjob-train-x7k2p"
    # ...and the Foreground delete of the Job took the Secret with it.
    assert len(foreground_deletes(fake)) == 1
    assert fake.jobs == {}
    assert fake.secrets == {}


def test_a_cut_log_stream_is_resumed_every_line_shown_once(fake_cluster: Any) -> None:
    fake = fake_cluster(JobScenario(entry=payload("train"), cut_follow_after=2))
    value, logs = deploy(fake, call=encode_call((), {"lr": 0.25, "epochs": 4}))
    assert value == {"loss": 0.5, "lr": 0.25}
    assert logs == [f"epoch {i} lr=0.25" for i in range(4)]


def test_a_kept_job_stays_but_its_secret_does_not(fake_cluster: Any) -> None:
    fake = fake_cluster(JobScenario(entry=payload("add")))
    value, _ = deploy(fake, fast_options(keep_job=True), call=encode_call((2, 3)))
    assert value == 5
    assert fake.requests_to("DELETE", "/jobs") == []
    assert list(fake.jobs) == ["fnjob-train-x7k2p"]
    assert fake.secrets == {}


def test_function_exception_comes_back_as_itself_and_the_job_is_deleted(fake_cluster: Any) -> None:
    fake = fake_cluster(JobScenario(entry=payload("explode")))
    with pytest.raises(ValueError, match="learning rate too high") as caught:
        # Even when asked to keep finished Jobs, a failed run is cleaned up.
        deploy(fake, fast_options(keep_job=True), call=encode_call(("learning rate too high",)))
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
    fake = fake_cluster(JobScenario(unschedulable_message=message))
    options = fast_options(
        resources=Resources(gpus=8),
        lifecycle=Lifecycle(poll_interval=0.01, unschedulable_timeout=0.05),
    )
    with pytest.raises(JobFailed) as caught:
        deploy(fake, options)
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
    fake = fake_cluster(scenario)
    with pytest.raises(JobTimeout) as caught:
        deploy(fake, fast_options(timeout=60))
    assert submitted_job(fake)["spec"]["activeDeadlineSeconds"] == 60
    assert caught.value.reason == "DeadlineExceeded"
    assert caught.value.last_logs == ("epoch 0", "epoch 1")
    assert "longer than specified deadline" in str(caught.value)


def test_deadline_exceeded_while_unschedulable_says_why_it_never_ran(fake_cluster: Any) -> None:
    message = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    scenario = JobScenario(unschedulable_message=message, deadline_after_polls=3)
    options = fast_options(
        resources=Resources(gpus=1),
        lifecycle=Lifecycle(poll_interval=0.01, unschedulable_timeout=None),
    )
    with pytest.raises(JobTimeout) as caught:
        deploy(fake_cluster(scenario), options)
    assert message in str(caught.value)


def test_ctrl_c_during_log_streaming_deletes_the_job(fake_cluster: Any) -> None:
    scenario = JobScenario(log_lines=["epoch 0"], hold_logs_until_deleted=True)
    seen: list[str] = []
    stream_open_when_seen: list[bool] = []
    fake = fake_cluster(scenario)

    def interrupt(line: str) -> None:
        seen.append(line)
        stream_open_when_seen.append(fake.log_stream_open)
        raise KeyboardInterrupt

    deployer = JobDeployer(fast_options(), api_client=api_client_for(fake))
    with pytest.raises(KeyboardInterrupt):
        deployer.run(IMAGE, encode_call(), function_name="train", on_log=interrupt)
    assert seen == ["epoch 0"]
    # The line arrived live, while the container was still running.
    assert stream_open_when_seen == [True]
    (delete,) = foreground_deletes(fake)
    assert delete.path == "/apis/batch/v1/namespaces/team-a/jobs/fnjob-train-x7k2p"
    assert fake.jobs == {}
    assert fake.secrets == {}


def test_forbidden_create_raises_cluster_access_denied(fake_cluster: Any) -> None:
    with pytest.raises(ClusterAccessDenied) as caught:
        deploy(fake_cluster(JobScenario(create_status=403)))
    assert caught.value.status == 403
    assert 'cannot create resource "jobs"' in str(caught.value)
    assert "RBAC" in str(caught.value)


# -- a result nobody can forge (issue 10) --------------------------------------------------


@pytest.mark.parametrize(
    "function", ["partial_line_then_return", "log_records_flushed_at_exit", "echo_records"]
)
def test_forged_outcome_lines_in_the_log_are_output_and_the_real_result_wins(
    fake_cluster: Any, tmp_path: Path, function: str
) -> None:
    marker = tmp_path / "code-ran-here"
    forged = forged_outcome_lines(marker)
    fake = fake_cluster(JobScenario(entry=payload(function)))
    value, logs = deploy(fake, call=encode_call((forged,)))
    assert value == "the real result"
    assert all(line in logs for line in forged)
    assert not marker.exists()


def test_a_native_crash_after_printing_forgeries_is_job_failed(
    fake_cluster: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran-here"
    fake = fake_cluster(JobScenario(entry=payload("crash_after_logging")))
    with pytest.raises(JobFailed) as caught:
        deploy(fake, call=encode_call((forged_outcome_lines(marker),)))
    assert caught.value.exit_code != 0
    assert not marker.exists()


def test_a_successful_function_with_a_partial_last_line_is_not_job_failed(
    fake_cluster: Any,
) -> None:
    fake = fake_cluster(JobScenario(entry=payload("partial_line_then_return")))
    value, logs = deploy(fake, call=encode_call(([],)))
    assert value == "the real result"
    assert logs == ["50% done"]


def test_a_planted_pod_with_the_run_label_is_ignored(fake_cluster: Any, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran-here"
    scenario = JobScenario(entry=payload("add"))
    fake = fake_cluster(scenario)
    create_job = fake._create_job

    def plant_after_create(handler: Any, namespace: str, body: Any) -> None:
        # Someone who can create pods reads the Job's labels and plants a newer pod with
        # them, and with a controller-uid label that is not this Job's.
        labels = dict(body["spec"]["template"]["metadata"]["labels"])
        scenario.planted_pods += [
            PlantedPod("planted-by-label", labels, forged_outcome_lines(marker)),
            PlantedPod(
                "planted-without-owner",
                {**labels, "batch.kubernetes.io/controller-uid": "guessed"},
                forged_outcome_lines(marker),
                owner_uid="guessed",
            ),
        ]
        create_job(handler, namespace, body)

    fake._create_job = plant_after_create
    value, logs = deploy(fake, call=encode_call((20, 22)))
    assert value == 42
    assert logs == ["adding 20 and 22"]
    assert not marker.exists()
    # Only the Job's own pod was read.
    read = {r.path.split("/")[-2] for r in fake.requests_to("GET", "/log")}
    assert read == {"fnjob-train-x7k2p-pod01"}


# -- bounded waits, unreachable servers, clean-up on signals --------------------------------


def test_no_pod_within_the_bound_quotes_the_jobs_events(fake_cluster: Any) -> None:
    event = (
        'Error creating: pods "fnjob-train-x7k2p-" is forbidden: error looking up service '
        'account team-a/default-editor: serviceaccount "default-editor" not found'
    )
    fake = fake_cluster(JobScenario(pod_never_created=True, job_events=[("FailedCreate", event)]))
    status: list[str] = []
    options = fast_options(lifecycle=Lifecycle(poll_interval=0.01, pod_creation_timeout=0.3))
    with pytest.raises(PodNotCreated) as caught:
        deploy(fake, options, status=status)
    assert caught.value.reason == "FailedCreate"
    assert caught.value.events == (f"FailedCreate: {event}",)
    assert 'serviceaccount "default-editor" not found' in str(caught.value)
    # The bound was kept; how far past it the check ran depends on the machine's load.
    waited = str(caught.value).partition("no pod was created within ")[2].partition(" s")[0]
    assert float(waited) >= 0.3
    assert "service account exists" in str(caught.value)  # the hint
    assert len(foreground_deletes(fake)) == 1


def test_a_pod_over_the_profiles_quota_fails_at_once_with_the_quotas_message(
    fake_cluster: Any,
) -> None:
    event = (
        'Error creating: pods "fnjob-train-x7k2p-" is forbidden: exceeded quota: '
        "kf-resource-quota, requested: requests.nvidia.com/gpu=1, used: "
        "requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4"
    )
    fake = fake_cluster(JobScenario(pod_never_created=True, job_events=[("FailedCreate", event)]))
    # Well within the bound on the wait for a pod, the quota's refusal alone ends it.
    options = fast_options(lifecycle=Lifecycle(poll_interval=0.01, pod_creation_timeout=60))
    with pytest.raises(JobFailed) as caught:
        deploy(fake, options, status=[])
    assert caught.value.reason == "QuotaExceeded"
    assert "exceeded quota: kf-resource-quota" in str(caught.value)
    assert "limited: requests.nvidia.com/gpu=4" in str(caught.value)
    assert "raise the profile's quota" in str(caught.value)
    assert len(foreground_deletes(fake)) == 1


def test_an_unreachable_api_server_is_cluster_unreachable_naming_it() -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    deployer = JobDeployer(fast_options(), api_client=client.ApiClient(configuration))
    with pytest.raises(ClusterUnreachable) as caught:
        deployer.run(IMAGE, encode_call(), function_name="train", on_log=print)
    message = str(caught.value)
    assert caught.value.server == configuration.host
    assert f"cannot reach the Kubernetes API server at {configuration.host}" in message
    assert "Connection refused" in message
    assert "\n" not in message  # one paragraph


def test_the_gpu_group_used_is_reported(fake_cluster: Any) -> None:
    groups = GpuGroups.from_document(
        {
            "version": 1,
            "default": "gpu-spot",
            "groups": [{"name": "gpu-spot", "gpusPerNode": 1, "gpuModel": "NVIDIA A10G"}],
        },
        source="/etc/fnjob/gpu-groups.json",
    )
    fake = fake_cluster(JobScenario(entry=payload("add")))
    status: list[str] = []
    options = fast_options(resources=Resources(gpus=1), gpu_groups=groups)
    deploy(fake, options, call=encode_call((1, 2)), status=status)
    assert status[0] == (
        "GPU group gpu-spot (NVIDIA A10G, 1 per node), the default in /etc/fnjob/gpu-groups.json"
    )


RUN_A_JOB = """
import sys, threading
from kubernetes import client
from fnjob.run.job import JobDeployer
from fnjob.run.manifest import JobOptions
from fnjob.options import Lifecycle
from fnjob.run.protocol import encode_call

configuration = client.Configuration()
configuration.host = sys.argv[1]
deployer = JobDeployer(
    JobOptions(namespace="team-a", lifecycle=Lifecycle(poll_interval=0.01)),
    api_client=client.ApiClient(configuration),
)
started = threading.Event()

def show(line):
    print(line, flush=True)
    started.set()

def run():
    deployer.run("img", encode_call(), function_name="train", on_log=show)

def run_quietly():
    # Whatever the thread sees once its Job is gone, it must not print during shutdown.
    try:
        run()
    except BaseException:
        pass

if sys.argv[2] == "main-thread":
    run()
else:  # in a daemon thread; the main thread returns once the job runs: interpreter exit
    threading.Thread(target=run_quietly, daemon=True).start()
    started.wait(30)
"""


def start_script(fake: FakeKubeApi, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_A_JOB, fake.host, mode],
        stdout=subprocess.PIPE,
        text=True,
        env=with_fnjob_importable(dict(os.environ)),
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_delete_the_job_then_end_the_process(
    fake_cluster: Any, signum: int
) -> None:
    fake = fake_cluster(JobScenario(log_lines=["epoch 0"], hold_logs_until_deleted=True))
    process = start_script(fake, "main-thread")
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "epoch 0\n"
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # The signal still ends the process, as it would have without fnjob...
    assert process.returncode == -signum
    # ...after the Job was deleted, its pod and Secret with it.
    (delete,) = foreground_deletes(fake)
    assert delete.path.endswith("/jobs/fnjob-train-x7k2p")
    assert fake.jobs == {} and fake.secrets == {}


def test_interpreter_exit_deletes_a_job_running_in_a_daemon_thread(fake_cluster: Any) -> None:
    scenario = JobScenario(
        log_lines=["epoch 0"], hold_logs_until_deleted=True, grace_period_seconds=5
    )
    fake = fake_cluster(scenario)
    process = start_script(fake, "daemon-thread")
    try:
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert len(foreground_deletes(fake)) == 1
    assert fake.jobs == {}


# -- how the cluster is found ------------------------------------------------------------


def test_inside_a_pod_the_service_account_and_its_namespace_are_used(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    from fnjob.run import cluster

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_text("not checked until a request is made")
    (account / "namespace").write_text("kubeflow-user-example-com\n")
    # Only the file locations move; the loading code is the client's own.
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setattr(cluster, "_SERVICE_ACCOUNT_DIR", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.100.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    api_client = cluster.connect()
    assert api_client.configuration.host == "https://10.100.0.1:443"
    assert api_client.configuration.api_key["BearerToken"] == "bearer pod-token"
    assert cluster.current_namespace() == "kubeflow-user-example-com"


def test_outside_a_pod_the_kubeconfig_context_namespace_is_used(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fnjob.run.cluster import ClusterConfigError, connect, current_namespace
    from tests.fnjob.run_fixtures import write_kubeconfig

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "config", "https://k8s.example:6443", "team-c")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert connect().configuration.host == "https://k8s.example:6443"
    assert current_namespace() == "team-c"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ClusterConfigError, match="no usable kubeconfig"):
        connect()


# -- results at real sizes, stalled streams, rotation (issue 17) ---------------------------


def deploy_in_thread(fake: FakeKubeApi, options: JobOptions, call: bytes) -> Any:
    """``deploy``, failing the test if the run never ends (a hang is the defect here)."""
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["value"] = deploy(fake, options, call=call, status=done.setdefault("status", []))
        except BaseException as error:
            done["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run never ended"
    if "error" in done:
        raise done["error"]
    return done


def test_a_large_result_comes_back_intact_while_the_function_floods_stderr(
    fake_cluster: Any,
) -> None:
    size = 2 * 1024 * 1024
    fake = fake_cluster(JobScenario(entry=payload("big_result_with_stderr_noise")))
    value, logs = deploy(fake, call=encode_call((size,)))
    assert value == random_bytes(size)
    assert "warming up" in logs
    assert any(line.startswith("noise ") for line in logs)


def test_a_result_at_the_documented_limit_survives_log_rotation(fake_cluster: Any) -> None:
    # The kubelet's defaults: 10 MiB files; the function logs 9 MiB before its result.
    size = MAX_POD_RESULT_BYTES - 1024
    scenario = JobScenario(entry=payload("big_result"), log_max_bytes=10 * 1024 * 1024)
    value, logs = deploy(fake_cluster(scenario), call=encode_call((size, 9 * 1024 * 1024)))
    assert value == random_bytes(size)
    assert logs[-1] == f"returning {size} bytes"


def test_a_result_over_the_limit_is_refused_naming_the_limit_and_where_big_data_goes(
    fake_cluster: Any,
) -> None:
    size = MAX_POD_RESULT_BYTES + 1024
    fake = fake_cluster(JobScenario(entry=payload("big_result")))
    with pytest.raises(ResultTooLarge) as caught:
        deploy(fake, call=encode_call((size,)))
    message = str(caught.value)
    assert str(MAX_POD_RESULT_BYTES) in message
    assert "containerLogMaxSize" in message
    assert "volume" in message and "bucket" in message
    assert caught.value.limit == MAX_POD_RESULT_BYTES
    assert caught.value.result_bytes > MAX_POD_RESULT_BYTES
    assert len(foreground_deletes(fake)) == 1


def test_pieces_of_a_result_rotated_away_after_a_cut_are_an_error_never_a_loss(
    fake_cluster: Any,
) -> None:
    scenario = JobScenario(
        entry=payload("big_result"), log_max_bytes=64 * 1024, cut_follow_after=10
    )
    with pytest.raises(ResultMissing) as caught:
        deploy(fake_cluster(scenario), call=encode_call((200_000,)))
    assert "incomplete" in str(caught.value)
    assert "rotated" in str(caught.value)


def test_a_log_stream_cut_inside_a_line_of_the_result_is_resumed_whole(
    fake_cluster: Any,
) -> None:
    scenario = JobScenario(entry=payload("big_result"), cut_follow_after=20, cut_mid_line=True)
    value, logs = deploy(fake_cluster(scenario), call=encode_call((200_000,)))
    assert value == random_bytes(200_000)
    assert logs == ["returning 200000 bytes"]


def test_a_stalled_log_stream_is_resumed_every_line_shown_once(fake_cluster: Any) -> None:
    fake = fake_cluster(JobScenario(entry=payload("train"), stall_follow_after=2))
    options = fast_options(lifecycle=Lifecycle(poll_interval=0.01, log_stall_timeout=0.5))
    done = deploy_in_thread(fake, options, encode_call((), {"lr": 0.5, "epochs": 5}))
    value, logs = done["value"]
    assert value == {"loss": 0.2857, "lr": 0.5}
    assert logs == [f"epoch {i} lr=0.5" for i in range(5)]
    assert any("sent nothing for 0.5 s" in line for line in done["status"])


def test_a_log_stream_that_stays_silent_after_the_container_ended_is_a_clear_error(
    fake_cluster: Any,
) -> None:
    fake = fake_cluster(JobScenario(entry=payload("train"), stall_follow_after=1, stalls=99))
    options = fast_options(lifecycle=Lifecycle(poll_interval=0.01, log_stall_timeout=0.3))
    with pytest.raises(LogStreamStalled) as caught:
        deploy_in_thread(fake, options, encode_call())
    assert "fnjob-train-x7k2p-pod01" in str(caught.value)
    assert "log_stall_timeout" in str(caught.value)
    assert len(foreground_deletes(fake)) == 1


# -- pods that can never start (issue 17) ---------------------------------------------------

NOTEBOOK_POD = {
    "metadata": {"name": "notebook-0", "labels": {"notebook-name": "notebook"}},
    "spec": {
        "nodeName": "node-a",
        "containers": [{"name": "notebook", "image": "jupyter"}],
        "volumes": [{"name": "ws", "persistentVolumeClaim": {"claimName": "workspace"}}],
    },
    "status": {"phase": "Running"},
}
WORKSPACE = {"accessModes": ["ReadWriteOnce"], "volumeName": "pvc-3f2a91"}


def with_workspace(**overrides: Any) -> JobOptions:
    volumes = Volumes(claims=(ClaimMount("workspace", "/home/jovyan"),))
    return fast_options(volumes=volumes, **overrides)


def test_a_claim_held_read_write_once_on_a_node_is_warned_about_before_submitting(
    fake_cluster: Any,
) -> None:
    scenario = JobScenario(
        entry=payload("add"), claims={"workspace": WORKSPACE}, other_pods=[NOTEBOOK_POD]
    )
    status: list[str] = []
    value, _ = deploy(fake_cluster(scenario), with_workspace(), encode_call((1, 2)), status)
    assert value == 3
    (warning,) = [line for line in status if line.startswith("warning:")]
    assert "'workspace' is ReadWriteOnce" in warning
    assert "notebook-0 on node node-a" in warning
    # Said before the Job was created.
    assert status.index(warning) < next(i for i, s in enumerate(status) if "created" in s)
    # A job pinned to that node gets no warning.
    pinned = with_workspace(
        scheduling=Scheduling(node_selector={"kubernetes.io/hostname": "node-a"})
    )
    status.clear()
    deploy(fake_cluster(scenario), pinned, encode_call((1, 2)), status)
    assert not [line for line in status if line.startswith("warning:")]


def test_a_pod_stuck_on_multi_attach_fails_naming_the_volume_and_claim(fake_cluster: Any) -> None:
    attach_error = (
        'Multi-Attach error for volume "pvc-3f2a91" Volume is already used by pod(s) notebook-0'
    )
    scenario = JobScenario(
        entry=payload("add"),
        claims={"workspace": WORKSPACE},
        other_pods=[NOTEBOOK_POD],
        attach_error=attach_error,
    )
    fake = fake_cluster(scenario)
    with pytest.raises(JobFailed) as caught:
        deploy_in_thread(fake, with_workspace(), encode_call((1, 2)))
    assert caught.value.reason == "MultiAttach"
    message = str(caught.value)
    assert "pvc-3f2a91" in message and "claim 'workspace'" in message
    assert "already used by pod(s) notebook-0" in message
    assert len(foreground_deletes(fake)) == 1


# -- a forged controller reference (issue 17) -----------------------------------------------


def test_a_planted_pod_claiming_the_job_as_its_controller_is_ignored(
    fake_cluster: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran-here"
    scenario = JobScenario(entry=payload("add"))
    fake = fake_cluster(scenario)
    create_job = fake._create_job

    def plant_after_create(handler: Any, namespace: str, body: Any) -> None:
        create_job(handler, namespace, body)
        # Whoever can create pods reads the Job's uid and plants a newer pod with its
        # labels and a controller reference to it: everything but the controller's event.
        job = fake.jobs["fnjob-train-x7k2p"]
        uid = job["metadata"]["uid"]
        labels = {
            **body["spec"]["template"]["metadata"]["labels"],
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": "fnjob-train-x7k2p",
        }
        lines = ["the planted pod speaks", *forged_outcome_lines(marker)]
        scenario.planted_pods.append(
            PlantedPod("planted-controlled", labels, lines, owner_uid=uid, controller=True)
        )

    fake._create_job = plant_after_create
    value, logs = deploy(fake, call=encode_call((20, 22)))
    assert value == 42
    assert logs == ["adding 20 and 22"]
    assert not marker.exists()
    read = {r.path.split("/")[-2] for r in fake.requests_to("GET", "/log")}
    assert read == {"fnjob-train-x7k2p-pod01"}
