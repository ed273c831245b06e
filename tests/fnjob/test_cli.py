"""The ``fnjob`` command: messages and exit codes, then real runs as a user would type them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fnjob import cli
from fnjob.errors import JobFailed, JobTimeout, PodNotCreated
from fnjob.image.auth import AuthError
from fnjob.image.pythonversion import PythonVersionMismatch
from fnjob.run.cluster import ClusterAccessDenied, ClusterUnreachable
from fnjob.run.gpugroups import GpuGroupsFileError
from fnjob.run.local import ContainerEngineNotFound
from fnjob.run.protocol import ResultNotLoadable
from tests.fnjob.conftest import free_port
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario
from tests.fnjob.run_fixtures import fnjob_containers, with_fnjob_importable, write_kubeconfig
from tests.tutorial import migrated

TRAIN_PY = """\
import sys


def main(lr=0.1, epochs=2):
    for epoch in range(epochs):
        print(f"epoch {epoch} lr={lr}")
    print("a warning on stderr", file=sys.stderr)
    return {"lr": lr, "epochs": epochs}


def broken():
    raise RuntimeError("data file /data/train.csv is missing")
"""


# -- in-process: parsing, messages, exit codes --------------------------------------------


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "exit codes:" in text
    for code in (1, 2, 3, 4, 5, 6, 7, 130):
        assert re.search(rf"^\s+{code}\s+\S", text, re.MULTILINE), code


def test_missing_registry_is_a_usage_error_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FNJOB_REGISTRY", raising=False)
    (tmp_path / "train.py").write_text(TRAIN_PY)
    code = cli.main(["run", str(tmp_path / "train.py"), "--base-image", "python:3.11"])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--registry is required" in err
    assert "Traceback" not in err


def test_bad_memory_names_the_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train.py").write_text(TRAIN_PY)
    argv = ["run", str(tmp_path / "train.py"), "--base-image", "b", "--registry", "r.example"]
    assert cli.main([*argv, "--memory", "lots"]) == cli.EXIT_USAGE
    assert "memory='lots' is not a Kubernetes quantity" in capsys.readouterr().err


def test_missing_file_is_a_build_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["build", str(tmp_path / "nope.py"), "--base-image", "b", "--registry", "r.example"]
    assert cli.main(argv) == cli.EXIT_BUILD
    err = capsys.readouterr().err
    assert "nope.py" in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["missing-folder/result.json", "a-folder"])
def test_an_unwritable_output_file_is_a_usage_error_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "train.py").write_text(TRAIN_PY)
    (tmp_path / "a-folder").mkdir()
    output = tmp_path / where
    # A registry nobody listens on: reaching it would be exit 4, not 2.
    argv = ["run", str(tmp_path / "train.py"), "--function", "main", "--base-image", "b"]
    argv += ["--registry", f"127.0.0.1:{free_port()}", "--registry-timeout", "1"]
    code = cli.main([*argv, "--json", "--output", str(output)])
    captured = capsys.readouterr()
    assert code == cli.EXIT_USAGE
    # rich wraps long paths anywhere: compare without whitespace.
    err = "".join(captured.err.split())
    assert f"--output{output}:cannotwritetheresultthere" in err
    assert "Traceback" not in captured.err
    assert "build:" not in captured.err  # nothing was built
    record = json.loads(captured.out)
    assert (record["status"], record["exit_code"]) == ("failed", cli.EXIT_USAGE)


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (["--pod-creation-timeout", "0"], "pod_creation_timeout=0.0 must be a number of seconds"),
        (["--volume", "workspace"], "volume 'workspace' must look like CLAIM:/mount/path"),
        (["--volume", "ws:/fnjob/app"], "would hide /fnjob"),
        (["--shm-size", "2GB"], "shm_size='2GB' is not a Kubernetes quantity"),
        (["--env-from-secret", "Bad_Name"], "'Bad_Name' is not a valid Secret name"),
        (["--run-as-user", "-5"], "run_as_user=-5 must be a numeric id"),
        (["--gpu-group", "gpu-spot"], "needs GPUs"),
        (["--memory", "1e3Gi"], "memory='1e3Gi' is not a Kubernetes quantity"),
        (["--memory", "1e400"], "memory='1e400' is larger than Kubernetes can hold"),
        (["--label", "team name=ml"], "labels: key 'team name' is not a label key"),
        (["--label", "team=ml/vision"], "labels['team']='ml/vision' is not a label value"),
        (["--env", f"DATA={'x' * 200_000}"], "env['DATA'] is 200,005 bytes"),
        (["--nodes", "0"], "nodes=0 must be a whole number >= 1"),
        (
            ["--nodes", "2", "--local", "--training-runtime", "torch"],
            "training_runtime='torch' needs deployer='job'",
        ),
    ],
)
def test_bad_run_options_are_usage_errors_naming_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], words: str
) -> None:
    (tmp_path / "train.py").write_text(TRAIN_PY)
    argv = ["run", str(tmp_path / "train.py"), "--base-image", "b", "--registry", "r.example"]
    assert cli.main([*argv, *option]) == cli.EXIT_USAGE
    err = " ".join(capsys.readouterr().err.split())
    assert words in err
    assert "Traceback" not in err


def test_args_are_json_when_they_parse_and_strings_otherwise() -> None:
    parsed = cli.parse_key_values(
        ["lr=0.1", "layers=[64, 32]", "name=resnet", "flag=true"], option="--arg", as_json=True
    )
    assert parsed == {"lr": 0.1, "layers": [64, 32], "name": "resnet", "flag": True}
    with pytest.raises(ValueError, match="--arg 'lr' must look like KEY=VALUE"):
        cli.parse_key_values(["lr"], option="--arg", as_json=True)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (JobTimeout("j", reason="DeadlineExceeded"), cli.EXIT_TIMEOUT),
        (JobFailed("j", reason="OOMKilled", exit_code=137), cli.EXIT_JOB_FAILED),
        (ClusterAccessDenied("forbidden", status=403), cli.EXIT_CLUSTER),
        (ClusterUnreachable("no answer", server="https://k8s:6443"), cli.EXIT_CLUSTER),
        (PodNotCreated("j", waited_seconds=120, events=["FailedCreate: x"]), cli.EXIT_JOB_FAILED),
        (
            ResultNotLoadable("no torch", missing_module="torch", pickled_value=b""),
            cli.EXIT_JOB_FAILED,
        ),
        (GpuGroupsFileError("/etc/fnjob/gpu-groups.json: version 2"), cli.EXIT_USAGE),
        (ContainerEngineNotFound("no podman"), cli.EXIT_CLUSTER),
        (AuthError("denied", host="r.example", status=401), cli.EXIT_REGISTRY),
        (PythonVersionMismatch("3.9", base_python="3.9", local_python="3.11"), cli.EXIT_BUILD),
        (ValueError("gpus=-1"), cli.EXIT_USAGE),
    ],
)
def test_each_error_kind_has_its_exit_code(error: Exception, code: int) -> None:
    assert cli.exit_code_for(error) == code


def test_unexpected_errors_are_not_hidden() -> None:
    with pytest.raises(ZeroDivisionError):
        cli.exit_code_for(ZeroDivisionError("a bug"))


# Third-party packages the command needs only once it builds or runs something.
_HEAVY = ("kubernetes", "rich", "requests", "urllib3", "cloudpickle", "docker", "boto3")


def _modules_loaded_by(code: str) -> set[str]:
    shown = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        env=with_fnjob_importable(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {name.split(".")[0] for name in shown.stdout.split()}


def test_the_command_line_loads_no_client_library_before_it_is_parsed() -> None:
    loaded = _modules_loaded_by("import fnjob.cli")
    assert loaded.isdisjoint(_HEAVY), sorted(loaded & set(_HEAVY))
    # Parsed with an error (the usual typo): still nothing heavy.
    loaded = _modules_loaded_by(
        "import contextlib, fnjob.cli\n"
        "with contextlib.suppress(SystemExit): fnjob.cli.build_parser().parse_args(['--bogus'])"
    )
    assert loaded.isdisjoint(_HEAVY)


def test_a_local_job_is_described_without_the_kubernetes_client() -> None:
    loaded = _modules_loaded_by(
        "import fnjob\n"
        "fnjob.Job(base_image='b', registry='r.example', deployer='local', memory='8Gi', "
        "cpu='500m', labels={'team': 'ml'})"
    )
    assert "kubernetes" not in loaded


def test_help_in_a_subprocess_lists_the_commands(tmp_path: Path) -> None:
    shown = fnjob_command(["--help"], dict(os.environ), tmp_path)
    assert shown.returncode == 0
    assert "exit codes:" in shown.stdout and "{run,build" in shown.stdout


# -- real runs in a subprocess ---------------------------------------------------------------


def fnjob_command(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fnjob", *args],
        env=with_fnjob_importable(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(TRAIN_PY)
    return path


def image_args(registry: Any, python_base: str) -> list[str]:
    return ["--base-image", python_base, "--registry", f"{registry.host}/tests"]


@pytest.mark.real
def test_run_local_prints_logs_then_the_result(
    train_file: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    completed = fnjob_command(
        [
            *("run", train_file.name, "--function", "main", "--local", "--engine", "podman"),
            *image_args(registry, python_base),
            *("--arg", "lr=0.5", "--arg", "epochs=3"),
        ],
        podman_env,
        train_file.parent,
    )
    assert completed.returncode == 0, completed.stderr
    # stdout: the function's stdout, then its value; its stderr stays on stderr.
    assert completed.stdout.splitlines() == [
        "epoch 0 lr=0.5",
        "epoch 1 lr=0.5",
        "epoch 2 lr=0.5",
        json.dumps({"lr": 0.5, "epochs": 3}),
    ]
    assert "a warning on stderr" in completed.stderr.splitlines()
    assert "pushed" in completed.stderr  # the progress display
    assert fnjob_containers(podman_env) == []


@pytest.mark.real
def test_run_local_failure_exits_1_with_the_remote_traceback(
    train_file: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    completed = fnjob_command(
        [
            "run",
            train_file.name,
            "--function",
            "broken",
            "--local",
            *image_args(registry, python_base),
        ],
        podman_env,
        train_file.parent,
    )
    assert completed.returncode == cli.EXIT_FUNCTION_RAISED
    err = " ".join(completed.stderr.split())  # rich may wrap long lines
    assert "the function raised RuntimeError: data file /data/train.csv is missing" in err
    assert "Remote traceback" in err and 'train.py", line 12, in broken' in err
    # Only the user's frames: nothing of fnjob's CLI here or its runner in the image.
    assert "fnjob/cli.py" not in completed.stderr
    assert "runner.py" not in completed.stderr


@pytest.mark.real
def test_build_prints_only_the_digest_pinned_reference(
    train_file: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    completed = fnjob_command(
        [
            *("build", train_file.name, "--function", "main", "--image-name", "cli-build"),
            *image_args(registry, python_base),
        ],
        podman_env,
        train_file.parent,
    )
    assert completed.returncode == 0, completed.stderr
    ref = completed.stdout.strip()
    assert re.fullmatch(rf"{re.escape(registry.host)}/tests/cli-build@sha256:[0-9a-f]{{64}}", ref)
    assert registry.manifest("tests/cli-build", ref.split("@")[1]).status_code == 200


@pytest.mark.real
def test_run_on_a_cluster_from_the_kubeconfig(
    train_file: Path, tmp_path: Path, registry: Any, python_base: str
) -> None:
    scenario = JobScenario(entry="module:train:main", pythonpath=[str(train_file.parent)])
    with FakeKubeApi(scenario) as fake:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.host, namespace="team-b")
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        completed = fnjob_command(
            [
                *("run", train_file.name, "--function", "main", "--gpus", "1", "--memory", "8"),
                *("--arg", "lr=0.5", "--arg", "epochs=1"),
                *("--volume", "workspace-nb:/home/jovyan/data:ro", "--shm-size", "2Gi"),
                *("--env-from-secret", "wandb", "--run-as-user", "1000", "--fs-group", "100"),
                *image_args(registry, python_base),
            ],
            {**env, "KUBECONFIG": str(kubeconfig)},
            train_file.parent,
        )
    assert completed.returncode == 0, completed.stderr
    # In a pod, stdout and stderr are one log: the warning is part of the output.
    assert completed.stdout.splitlines() == [
        "epoch 0 lr=0.5",
        "a warning on stderr",
        '{"lr": 0.5, "epochs": 1}',
    ]
    (create,) = fake.requests_to("POST", "/apis/batch/v1/namespaces/team-b/jobs")
    job = create.body
    assert job["metadata"]["generateName"] == "fnjob-main-"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/home/jovyan/data"]["readOnly"] is True
    assert "/dev/shm" in mounts
    assert container["envFrom"] == [{"secretRef": {"name": "wandb"}}]
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["fsGroup"] == 100
    assert "job fnjob-main-x7k2p created in namespace team-b" in completed.stderr


@pytest.mark.real
def test_an_unreachable_cluster_exits_5_with_one_paragraph_naming_the_server(
    train_file: Path, tmp_path: Path, registry: Any, python_base: str
) -> None:
    server = f"https://127.0.0.1:{free_port()}"  # a closed port
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server)
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    completed = fnjob_command(
        ["run", train_file.name, "--function", "main", *image_args(registry, python_base)],
        {**env, "KUBECONFIG": str(kubeconfig)},
        train_file.parent,
    )
    assert completed.returncode == cli.EXIT_CLUSTER
    err = " ".join(completed.stderr.split())
    assert f"cannot reach the Kubernetes API server at {server} (Connection refused)" in err
    assert "Traceback" not in completed.stderr
    assert "urllib3" not in completed.stderr
    # After the build's progress: one error paragraph, not a 97-line traceback.
    error = completed.stderr[completed.stderr.index("error:") :]
    assert len(error.strip().splitlines()) <= 6


@pytest.mark.real
def test_pod_creation_timeout_bounds_the_wait_for_a_pod(
    train_file: Path, tmp_path: Path, registry: Any, python_base: str
) -> None:
    # (A quota's refusal ends the wait at once; a missing service account may yet appear.)
    event = (
        'Error creating: pods "fnjob-main-x7k2p-" is forbidden: error looking up service '
        'account team-a/default-editor: serviceaccount "default-editor" not found'
    )
    scenario = JobScenario(pod_never_created=True, job_events=[("FailedCreate", event)])
    with FakeKubeApi(scenario) as fake:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.host)
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        completed = fnjob_command(
            [
                *("run", train_file.name, "--function", "main", "--pod-creation-timeout", "0.5"),
                *image_args(registry, python_base),
            ],
            {**env, "KUBECONFIG": str(kubeconfig)},
            train_file.parent,
        )
    assert completed.returncode == cli.EXIT_JOB_FAILED, completed.stderr
    err = " ".join(completed.stderr.split())
    # Gave up after the bound (and the next status read), not the default 120 s.
    waited = re.search(r"no pod was created within ([0-9.]+) s", err)
    assert waited is not None, err
    assert 0.5 <= float(waited.group(1)) < 10
    assert 'serviceaccount "default-editor" not found' in err
    assert "Traceback" not in completed.stderr


@pytest.mark.real
def test_forbidden_cluster_exits_5_with_the_apis_message(
    train_file: Path, tmp_path: Path, registry: Any, python_base: str
) -> None:
    with FakeKubeApi(JobScenario(create_status=403)) as fake:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", fake.host)
        env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        completed = fnjob_command(
            ["run", train_file.name, "--function", "main", *image_args(registry, python_base)],
            {**env, "KUBECONFIG": str(kubeconfig)},
            train_file.parent,
        )
    assert completed.returncode == cli.EXIT_CLUSTER
    err = " ".join(completed.stderr.split())
    assert 'cannot create resource "jobs"' in err
    assert "Traceback" not in completed.stderr


SLOW_PY = """\
import time


def main(n=600):
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(0.5)
"""


@pytest.mark.real
def test_ctrl_c_exits_130_and_leaves_no_container(
    tmp_path: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    (tmp_path / "slow.py").write_text(SLOW_PY)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fnjob",
            "run",
            "slow.py",
            "--function",
            "main",
            "--local",
            *image_args(registry, python_base),
        ],
        env=with_fnjob_importable(podman_env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first == "tick 0\n"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == cli.EXIT_INTERRUPTED
    assert "interrupted" in err and "Traceback" not in err
    assert fnjob_containers(podman_env) == []


@pytest.mark.real
def test_json_result_and_output_file(
    train_file: Path, tmp_path: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    result_file = tmp_path / "result.json"
    completed = fnjob_command(
        [
            *("run", train_file.name, "--function", "main", "--local", "--json"),
            *("--output", str(result_file), "--arg", "lr=0.25"),
            *image_args(registry, python_base),
        ],
        podman_env,
        train_file.parent,
    )
    assert completed.returncode == 0, completed.stderr
    record = json.loads(completed.stdout)  # stdout holds only the result
    assert record["status"] == "returned" and record["exit_code"] == 0
    assert record["value"] == {"lr": 0.25, "epochs": 2}
    assert record["image"] == f"{registry.host}/tests/fnjob@{record['digest']}"
    assert json.loads(result_file.read_text()) == record
    # The function's own output went to stderr.
    assert "epoch 1 lr=0.25" in completed.stderr.splitlines()

    failed = fnjob_command(
        [
            *("run", train_file.name, "--function", "broken", "--local", "--json"),
            *image_args(registry, python_base),
        ],
        podman_env,
        train_file.parent,
    )
    record = json.loads(failed.stdout)
    assert failed.returncode == record["exit_code"] == cli.EXIT_FUNCTION_RAISED
    assert record["status"] == "raised"
    assert record["error"] == {
        "type": "RuntimeError",
        "message": "data file /data/train.csv is missing",
    }


@pytest.mark.real
def test_long_references_are_never_cut_when_stderr_is_not_a_terminal(
    train_file: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    name = "a-rather-long-team-name/with-a-long-project/and-an-even-longer-image-name"
    completed = fnjob_command(
        [
            *("build", train_file.name, "--function", "main", "--image-name", name),
            *image_args(registry, python_base),
        ],
        podman_env,
        train_file.parent,
    )
    assert completed.returncode == 0, completed.stderr
    ref = completed.stdout.strip()
    assert len(ref) > 120
    assert f"pushed {ref}" in completed.stderr.splitlines()


@pytest.mark.real
def test_files_that_import_fnjob_run_in_the_container(
    tmp_path: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    # The migrated tutorial, run as the job itself: inside the container fnjob runs the
    # function in place, so both calls print the container's hostname.
    (tmp_path / "tutorial.py").write_text(migrated())
    completed = fnjob_command(
        ["run", "tutorial.py", "--local", *image_args(registry, python_base)],
        podman_env,
        tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0] == "local show_hostname()" and lines[2] == "remote show_hostname()"
    assert lines[1] == lines[3] and lines[1]

    (tmp_path / "fit.py").write_text(
        "from fnjob import Job, job\n\n"
        "gpu = Job(base_image='b', registry='r.example', gpus=1)\n\n"
        "@job(base_image='b', registry='r.example')\n"
        "def fit(steps=2):\n    return gpu.run(lambda n: n * 10, steps)\n"
    )
    completed = fnjob_command(
        ["run", "fit.py", "--function", "fit", "--local", *image_args(registry, python_base)],
        podman_env,
        tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["20"]


def test_registry_timeout_option_bounds_a_hung_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    server = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    host = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        (tmp_path / "train.py").write_text(TRAIN_PY)
        code = cli.main(
            [
                *("build", str(tmp_path / "train.py"), "--function", "main"),
                *("--base-image", f"{host}/base/python:3.11", "--registry", host),
                *("--registry-timeout", "0.5", "--json"),
            ]
        )
    finally:
        server.close()
    captured = capsys.readouterr()
    assert code == cli.EXIT_REGISTRY
    assert f"{host}: read manifest 3.11: no answer within 0.5 s" in captured.err
    record = json.loads(captured.out)
    assert record["status"] == "failed" and record["error"]["type"] == "RegistryUnreachable"
