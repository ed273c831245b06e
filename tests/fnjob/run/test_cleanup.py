"""Runs left behind by a caller that is gone: the default deadline, and ``fnjob cleanup``
(and each next run) removing them by label and age, on a cluster and with real podman."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from fnjob import Job
from fnjob.options import DEFAULT_TIMEOUT, DEFAULT_TIMEOUT_ENV
from fnjob.run.cleanup import _labels, _listed_age, caller_gone, caller_identity
from fnjob.run.local import LocalOptions, build_run_command
from fnjob.run.manifest import CALLER_ANNOTATION, MANAGED_BY_LABEL
from tests.fnjob import run_payloads
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario
from tests.fnjob.run_fixtures import fnjob_containers, with_fnjob_importable, write_kubeconfig

# -- the default deadline ------------------------------------------------------------------


def _deadline(job: Job) -> Any:
    return job.job_manifest("registry.example/img@sha256:" + "0" * 64)["spec"].get(
        "activeDeadlineSeconds"
    )


def test_a_job_without_timeout_gets_the_default_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEFAULT_TIMEOUT_ENV, raising=False)
    settings: dict[str, Any] = {"base_image": "b", "registry": "r.example"}
    assert _deadline(Job(**settings)) == DEFAULT_TIMEOUT == 24 * 3600
    assert _deadline(Job(**settings, timeout=600)) == 600
    # The stack sets its own default through the notebook's environment.
    monkeypatch.setenv(DEFAULT_TIMEOUT_ENV, "7200")
    assert _deadline(Job(**settings)) == 7200
    monkeypatch.setenv(DEFAULT_TIMEOUT_ENV, "none")
    assert _deadline(Job(**settings)) is None
    monkeypatch.setenv(DEFAULT_TIMEOUT_ENV, "1d")
    with pytest.raises(ValueError, match=r"\$FNJOB_DEFAULT_TIMEOUT='1d' must be whole seconds"):
        Job(**settings)


def test_podman_itself_stops_a_local_container_after_the_deadline() -> None:
    options = LocalOptions(timeout_seconds=DEFAULT_TIMEOUT)
    command = build_run_command(
        "podman", "img", container_name="c", run_id="r", run_dir="/tmp/x", options=options
    )
    # conmon enforces it, so it holds when the caller is killed; after the caller's own timer.
    deadline = int(command[command.index("--timeout") + 1])
    assert DEFAULT_TIMEOUT < deadline <= DEFAULT_TIMEOUT + 120


# -- who started a run -----------------------------------------------------------------------


def _identity_of_a_finished_process() -> str:
    child = subprocess.Popen(["sleep", "30"])
    identity = caller_identity(child.pid)
    assert not caller_gone(identity)
    child.kill()
    child.wait()
    return identity


def test_a_caller_is_gone_once_its_process_ended_on_this_host() -> None:
    assert not caller_gone(caller_identity())
    assert caller_gone(_identity_of_a_finished_process())
    # A reused pid is not the caller: same pid, another start time.
    host, boot, pid, _started = caller_identity().split("/")
    assert caller_gone(f"{host}/{boot}/{pid}/1")
    # Callers elsewhere are never taken for gone; nor are runs without a caller.
    assert not caller_gone(f"another-host/{boot}/1/1")
    assert not caller_gone(None)


# -- clusters --------------------------------------------------------------------------------


def _timestamp(age: dt.timedelta) -> str:
    return (dt.datetime.now(dt.UTC) - age).strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_metadata(name: str, uid: str, caller: str | None, age: dt.timedelta) -> dict[str, Any]:
    """Metadata of a run fnjob made: its labels, and who started it when known."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "team-a",
        "uid": uid,
        "labels": {MANAGED_BY_LABEL: "fnjob"},
        "creationTimestamp": _timestamp(age),
    }
    if caller is not None:
        metadata["annotations"] = {CALLER_ANNOTATION: caller}
    return metadata


def _plant_secret(fake: FakeKubeApi, owner: dict[str, Any], age: dt.timedelta) -> None:
    """The run's Secret, owned by ``owner`` (a Job or a TrainJob)."""
    name = owner["metadata"]["name"]
    fake.secrets[f"{name}-secret"] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{name}-secret",
            "namespace": "team-a",
            "uid": str(uuid.uuid4()),
            "labels": {MANAGED_BY_LABEL: "fnjob"},
            "creationTimestamp": _timestamp(age),
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": name,
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
    }


def _plant_job(
    fake: FakeKubeApi, name: str, *, caller: str | None, age: dt.timedelta, finished: bool = False
) -> str:
    conditions = [{"type": "Complete", "status": "True"}] if finished else []
    fake.jobs[name] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _run_metadata(name, str(uuid.uuid4()), caller, age),
        "spec": {"template": {"spec": {"containers": [{"name": "fnjob", "image": "i"}]}}},
        "status": {"conditions": conditions, "active": 0 if finished else 1},
    }
    _plant_secret(fake, fake.jobs[name], age)
    return name


def _cleanup_command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fnjob", "cleanup", *args],
        env=with_fnjob_importable(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cleanup_deletes_jobs_and_secrets_whose_caller_is_gone_then_by_age(
    tmp_path: Path,
) -> None:
    dead = _identity_of_a_finished_process()
    elsewhere = "notebook-0/ffffffff/12/34"
    with FakeKubeApi(JobScenario()) as fake:
        orphan = _plant_job(fake, "fnjob-train-orphan", caller=dead, age=dt.timedelta(hours=3))
        live = _plant_job(fake, "fnjob-train-live", caller=caller_identity(), age=dt.timedelta())
        remote = _plant_job(fake, "fnjob-train-remote", caller=elsewhere, age=dt.timedelta(days=2))
        kept = _plant_job(
            fake, "fnjob-train-kept", caller=dead, age=dt.timedelta(minutes=5), finished=True
        )
        # A Secret whose Job is gone (deleted without propagation).
        fake.secrets["fnjob-run-lost"] = {
            **fake.secrets.pop(f"{kept}-secret"),
        }
        fake.secrets["fnjob-run-lost"]["metadata"]["name"] = "fnjob-run-lost"
        fake.secrets["fnjob-run-lost"]["metadata"]["ownerReferences"][0]["name"] = "gone"
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env["KUBECONFIG"] = str(write_kubeconfig(tmp_path / "kubeconfig", fake.host))

        dry = _cleanup_command(["--dry-run"], env)
        assert dry.returncode == 0, dry.stderr
        assert f"would remove job {orphan}: its caller ({dead}) is gone" in dry.stdout
        assert orphan in fake.jobs

        done = _cleanup_command([], env)
        assert done.returncode == 0, done.stderr
        assert f"removed job {orphan}: its caller ({dead}) is gone" in done.stdout
        assert "removed secret fnjob-run-lost: its Job is gone" in done.stdout
        # The live caller's run, a finished (kept) one and another host's are left alone.
        assert set(fake.jobs) == {live, remote, kept}
        assert f"{orphan}-secret" not in fake.secrets  # went with its Job
        assert "fnjob-run-lost" not in fake.secrets

        aged = _cleanup_command(["--older-than", "1d"], env)
        assert aged.returncode == 0, aged.stderr
        assert f"removed job {remote}: started" in aged.stdout
        assert set(fake.jobs) == {live, kept}

        bad = _cleanup_command(["--older-than", "soon"], env)
        assert bad.returncode == 2
        assert "'soon' is not an age" in bad.stderr


def _plant_train_job(
    fake: FakeKubeApi, name: str, *, caller: str | None, age: dt.timedelta, finished: bool = False
) -> str:
    """A TrainJob of a multi-node run, its Secret, and the Job Trainer's JobSet made for it
    (which carries the TrainJob's labels, as ``spec.labels`` hands them down)."""
    conditions = [{"type": "Complete", "status": "True"}] if finished else []
    fake.train_jobs[name] = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": _run_metadata(name, str(uuid.uuid4()), caller, age),
        "spec": {"runtimeRef": {"name": "torch-distributed"}},
        "status": {"conditions": conditions},
    }
    _plant_secret(fake, fake.train_jobs[name], age)
    node = _run_metadata(f"{name}-node-0", str(uuid.uuid4()), None, age)
    node["ownerReferences"] = [
        {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "name": name,
            "uid": str(uuid.uuid4()),
            "controller": True,
        }
    ]
    fake.jobs[f"{name}-node-0"] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": node,
        "spec": {"template": {"spec": {"containers": [{"name": "node", "image": "i"}]}}},
        "status": {"active": 1},
    }
    return name


def test_cleanup_deletes_train_jobs_whose_caller_is_gone_and_leaves_their_jobs_to_them(
    tmp_path: Path,
) -> None:
    dead = _identity_of_a_finished_process()
    with FakeKubeApi(JobScenario()) as fake:
        orphan = _plant_train_job(fake, "fnjob-ddp-orphan", caller=dead, age=dt.timedelta(hours=3))
        live = _plant_train_job(
            fake, "fnjob-ddp-live", caller=caller_identity(), age=dt.timedelta(days=2)
        )
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env["KUBECONFIG"] = str(write_kubeconfig(tmp_path / "kubeconfig", fake.host))

        done = _cleanup_command([], env)
        assert done.returncode == 0, done.stderr
        assert f"removed trainjob {orphan}: its caller ({dead}) is gone" in done.stdout
        assert set(fake.train_jobs) == {live}
        assert f"{orphan}-secret" not in fake.secrets  # went with its TrainJob
        assert f"{live}-secret" in fake.secrets  # owned by a TrainJob that exists
        # The JobSet's Jobs are never fnjob's to delete, even by age: they go with their
        # TrainJob (here the fake has no JobSet controller to remove the orphan's).
        assert not [line for line in done.stdout.splitlines() if line.startswith("removed job ")]

        aged = _cleanup_command(["--older-than", "1d"], env)
        assert aged.returncode == 0, aged.stderr
        assert f"removed trainjob {live}: started" in aged.stdout
        assert not [line for line in aged.stdout.splitlines() if line.startswith("removed job ")]
        assert set(fake.jobs) == {f"{orphan}-node-0", f"{live}-node-0"}
        assert fake.train_jobs == {}


def test_cleanup_works_where_trainer_is_not_installed(tmp_path: Path) -> None:
    # There RBAC refuses TrainJobs (403): nobody there can have made one, so none are left.
    dead = _identity_of_a_finished_process()
    with FakeKubeApi(JobScenario()) as fake:
        fake.trainer_installed = False
        orphan = _plant_job(fake, "fnjob-train-orphan", caller=dead, age=dt.timedelta(hours=3))
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        env["KUBECONFIG"] = str(write_kubeconfig(tmp_path / "kubeconfig", fake.host))
        done = _cleanup_command([], env)
        assert done.returncode == 0, done.stderr
        assert f"removed job {orphan}: its caller ({dead}) is gone" in done.stdout
        assert fake.requests_to("GET", "/trainjobs"), "TrainJobs were not even asked for"


# -- local containers (real podman) ----------------------------------------------------------

CALLER_PY = """\
import json, sys
from fnjob import Build, Job
from tests.fnjob import run_payloads

job = Job(base_image=sys.argv[1], registry=sys.argv[2], image_name="cleanup", deployer="local",
          engine="podman", engine_env=json.loads(sys.argv[3]), on_log=print)
job.run(run_payloads.count_slowly, 600, 0.5)
"""


def _wait_for(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {seconds} s")
        time.sleep(0.5)


def _caller(
    tmp_path: Path, code: str, registry: Any, python_base: str, podman_env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A process running ``code`` (a Job's run, whose output it prints), to be killed; and
    the environment to run ``fnjob cleanup`` in."""
    import json

    repo_root = Path(__file__).resolve().parents[3]
    script = tmp_path / f"caller-{uuid.uuid4().hex[:8]}.py"
    script.write_text(code)
    env = with_fnjob_importable({**podman_env})
    env["PYTHONPATH"] += os.pathsep + str(repo_root)
    engine_env = {k: podman_env[k] for k in podman_env if k.startswith(("CONTAINERS_", "REG"))}
    arguments = [python_base, f"{registry.host}/tests", json.dumps(engine_env)]
    caller = subprocess.Popen(
        [sys.executable, str(script), *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert caller.stdout is not None
    return caller, env


@pytest.mark.real
def test_a_killed_callers_container_is_removed_by_cleanup_and_by_the_next_run(
    tmp_path: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    engine_env = {k: podman_env[k] for k in podman_env if k.startswith(("CONTAINERS_", "REG"))}
    env: dict[str, str] = {}

    def killed_caller() -> str:
        caller, env_of_caller = _caller(tmp_path, CALLER_PY, registry, python_base, podman_env)
        env.update(env_of_caller)
        assert caller.stdout is not None
        # Once the function prints, the container runs.
        caller.stdout.readline()
        before = set(fnjob_containers(podman_env))
        assert before
        os.kill(caller.pid, signal.SIGKILL)
        caller.wait()
        time.sleep(2)
        left = fnjob_containers(podman_env)
        assert left, "the container should outlive a caller killed with SIGKILL"
        return left[0]

    left = killed_caller()
    done = _cleanup_command(["--local", "--engine", "podman"], env)
    assert done.returncode == 0, done.stderr
    assert f"removed container {left}: its caller" in done.stdout
    assert fnjob_containers(podman_env) == []

    left = killed_caller()
    statuses: list[str] = []

    class Status:
        def progress(self, event: Any) -> None:
            pass

        def status(self, text: str) -> None:
            statuses.append(text)

    job = Job(
        base_image=python_base,
        registry=f"{registry.host}/tests",
        image_name="cleanup",
        deployer="local",
        engine="podman",
        engine_env=engine_env,
        reporter=Status(),
        on_log=lambda _line: None,
    )
    assert job.run(run_payloads.add, 2, 40) == 42
    assert any(f"removed container {left}: its caller" in text for text in statuses), statuses
    _wait_for(lambda: fnjob_containers(podman_env) == [], 30)


# -- local networks (multi-node local runs) ----------------------------------------------------


def test_listed_ages_and_labels_read_as_each_engine_prints_them() -> None:
    now = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=dt.UTC)
    two_hours = 2 * 3600.0
    # podman: a container's Created in unix seconds, a network's in RFC 3339 (nanoseconds).
    assert _listed_age({"Created": now.timestamp() - two_hours}, now) == two_hours
    assert _listed_age({"created": "2026-12-03T10:00:00.808951279Z"}, now) == pytest.approx(
        two_hours - 0.808951, abs=1e-3
    )
    # docker: CreatedAt, with or without a fraction of a second.
    assert _listed_age({"CreatedAt": "2026-12-03 10:00:00 +0000 UTC"}, now) == two_hours
    assert _listed_age({"CreatedAt": "2026-12-03 10:00:00.123456789 +0000 UTC"}, now) == two_hours
    assert _listed_age({"CreatedAt": "yesterday"}, now) is None
    assert _labels({"Labels": f"{MANAGED_BY_LABEL}=fnjob,{CALLER_ANNOTATION}=h/b/1/2"}) == {
        MANAGED_BY_LABEL: "fnjob",
        CALLER_ANNOTATION: "h/b/1/2",
    }
    assert _labels({"labels": {CALLER_ANNOTATION: "x"}}) == {CALLER_ANNOTATION: "x"}
    assert _labels({}) == {}


def _networks(podman_env: dict[str, str]) -> set[str]:
    listed = subprocess.run(
        ["podman", "network", "ls", "--format", "{{.Name}}"],
        env=podman_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listed.stdout.split())


def _network(podman_env: dict[str, str], name: str, *labels: str) -> str:
    args = [item for label in labels for item in ("--label", label)]
    subprocess.run(
        ["podman", "network", "create", *args, name],
        env=podman_env,
        capture_output=True,
        check=True,
    )
    return name


@pytest.mark.real
def test_cleanup_removes_only_fnjob_networks_whose_caller_is_gone(
    podman_env: dict[str, str],
) -> None:
    suffix = uuid.uuid4().hex[:8]
    ours = f"{MANAGED_BY_LABEL}=fnjob"
    gone = _network(
        podman_env,
        f"fnjob-gone-{suffix}",
        ours,
        f"{CALLER_ANNOTATION}={_identity_of_a_finished_process()}",
    )
    alive = _network(
        podman_env, f"fnjob-alive-{suffix}", ours, f"{CALLER_ANNOTATION}={caller_identity()}"
    )
    foreign = _network(podman_env, f"not-fnjob-{suffix}", f"{CALLER_ANNOTATION}=x/y/1/1")
    try:
        found = _cleanup_command(["--local", "--engine", "podman", "--dry-run"], podman_env)
        assert found.returncode == 0, found.stderr
        assert f"would remove network {gone}: its caller" in found.stdout
        assert alive not in found.stdout and foreign not in found.stdout
        assert {gone, alive, foreign} <= _networks(podman_env)

        done = _cleanup_command(["--local", "--engine", "podman"], podman_env)
        assert done.returncode == 0, done.stderr
        assert f"removed network {gone}: its caller" in done.stdout
        left = _networks(podman_env)
        assert gone not in left
        assert {alive, foreign} <= left
    finally:
        subprocess.run(
            ["podman", "network", "rm", "--force", gone, alive, foreign],
            env=podman_env,
            capture_output=True,
            check=False,
        )


RANKS_CALLER_PY = """\
import json, sys
from fnjob import Job
from tests.fnjob import run_payloads

job = Job(base_image=sys.argv[1], registry=sys.argv[2], image_name="cleanup-ranks",
          deployer="local", nodes=2, engine="podman", engine_env=json.loads(sys.argv[3]),
          on_log=print)
job.run(run_payloads.count_slowly, 600, 0.5)
"""


@pytest.mark.real
def test_a_killed_multi_node_callers_network_is_removed_by_cleanup(
    tmp_path: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    networks_before = _networks(podman_env)
    caller, env = _caller(tmp_path, RANKS_CALLER_PY, registry, python_base, podman_env)
    assert caller.stdout is not None
    # Both ranks print once they run.
    seen: set[str] = set()
    while len(seen) < 2:
        line = caller.stdout.readline().decode()
        assert line, "the caller ended before both ranks ran"
        if line.startswith("[rank "):
            seen.add(line.split("]")[0])
    os.kill(caller.pid, signal.SIGKILL)
    caller.wait()
    time.sleep(2)
    # The containers may end by themselves (their output has nowhere to go; --rm removes
    # them) or not yet; the run's network stays until something removes it.
    left_containers = fnjob_containers(podman_env)
    left_networks = _networks(podman_env) - networks_before
    assert len(left_networks) == 1, (left_networks, left_containers)

    done = _cleanup_command(["--local", "--engine", "podman"], env)
    assert done.returncode == 0, done.stderr
    [network] = left_networks
    assert f"removed network {network}: its caller" in done.stdout
    assert fnjob_containers(podman_env) == []
    assert _networks(podman_env) == networks_before
