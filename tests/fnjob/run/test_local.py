"""The local deployer: its command line, then real runs with podman and the real registry."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from fnjob.errors import JobFailed, JobTimeout
from fnjob.image.builders import AppendBuilder, BuiltImage
from fnjob.image.package import package_function
from fnjob.options import ClaimMount, Resources, Security, Volumes
from fnjob.run.local import (
    ContainerEngineError,
    ContainerEngineNotFound,
    LocalDeployer,
    LocalOptions,
    build_run_command,
    find_engine,
)
from fnjob.run.protocol import ResultNotLoadable, encode_call
from tests.fnjob import run_payloads
from tests.fnjob.forgery import forged_outcome_lines
from tests.fnjob.run_fixtures import fnjob_containers

# -- pure: the command line --------------------------------------------------------------


def command(engine: str = "/usr/bin/podman", **options: Any) -> list[str]:
    return build_run_command(
        engine,
        "reg:5000/app@sha256:abc",
        container_name="fnjob-1",
        run_id="1",
        run_dir="/tmp/fnjob-run-x/run",
        options=LocalOptions(**options),
    )


def test_command_runs_the_image_entrypoint_with_the_run_directory_mounted() -> None:
    line = command(env={"MODE": "dev"}, resources=Resources(cpu=0.5, memory="1Gi"))
    assert line[:2] == ["/usr/bin/podman", "run"]
    assert "--rm" in line
    # Same command as the Job: the image's own entrypoint, nothing after the image.
    assert line[-1] == "reg:5000/app@sha256:abc"
    # The call and the key are files in a read-only mount, never on the command line;
    # env values travel in the engine's environment.
    assert line[line.index("--volume") + 1] == "/tmp/fnjob-run-x/run:/var/run/fnjob:ro,Z"
    assert line[line.index("-e") + 1] == "MODE" and "dev" not in line
    assert line[line.index("--cpus") + 1] == "0.5"
    assert line[line.index("--memory") + 1] == str(1024**3)
    # Hardened like the Job's pod.
    assert line[line.index("--cap-drop") + 1] == "ALL"
    assert line[line.index("--security-opt") + 1] == "no-new-privileges"


def test_shm_size_and_user_map_to_the_engines_flags() -> None:
    line = command(
        volumes=Volumes(shm_size="256Mi"), security=Security(run_as_user=1000, run_as_group=100)
    )
    assert line[line.index("--shm-size") + 1] == str(256 * 2**20)
    assert line[line.index("--user") + 1] == "1000:100"


def test_gpus_use_cdi_with_podman_and_the_gpus_flag_with_docker() -> None:
    podman = command("podman", resources=Resources(gpus=2))
    docker = command("docker", resources=Resources(gpus=2))
    assert podman[podman.index("--device") + 1] == "nvidia.com/gpu=all"
    assert docker[docker.index("--gpus") + 1] == "2"


def test_engine_choice_prefers_podman_and_explains_when_none_is_installed(
    tmp_path: Path,
) -> None:
    for name in ("podman", "docker"):
        tool = tmp_path / name
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o755)
    assert find_engine(path=str(tmp_path)) == str(tmp_path / "podman")
    assert find_engine("docker", path=str(tmp_path)) == str(tmp_path / "docker")
    with pytest.raises(ContainerEngineNotFound, match="install podman"):
        find_engine(path=str(tmp_path / "empty"))


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("engine", "nerdctl", "not supported"),
        ("env", {"FNJOB_RUN_DIR": "/tmp"}, "may not set FNJOB_RUN_DIR"),
        ("resources", {"memory": "lots"}, "must be a fnjob.Resources"),
        ("volumes", Volumes(claims=(ClaimMount("data", "/data"),)), "need the Kubernetes deployer"),
        ("timeout_seconds", 0, "must be > 0"),
    ],
)
def test_bad_local_options_name_the_field(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        LocalOptions(**{field: value})
    assert field in str(caught.value)
    assert words in str(caught.value)


# -- real runs: podman + registry + base image -------------------------------------------


@pytest.fixture(scope="module")
def payload_image(registry: Any, python_base: str) -> BuiltImage:
    """One image holding run_payloads (source), built once for this module's tests."""
    builder = AppendBuilder(base_image=python_base)
    return builder.build(package_function(run_payloads.add), f"{registry.host}/tests/local-run")


def run_local(
    image: BuiltImage,
    podman_env: dict[str, str],
    function_name: str,
    *args: Any,
    **kwargs: Any,
) -> tuple[Any, list[str]]:
    logs: list[str] = []
    # The image's entry is add(); the other payloads share its module, so run them by
    # pointing FNJOB_ENTRY at them through the container environment.
    env = {"FNJOB_ENTRY": f"module:tests.fnjob.run_payloads:{function_name}"}
    deployer = LocalDeployer(LocalOptions(engine="podman", engine_env=podman_env, env=env))
    value = deployer.run(
        image.ref, encode_call(args, kwargs), function_name=function_name, on_log=logs.append
    )
    return value, logs


@pytest.mark.real
def test_local_run_returns_the_value_and_streams_output(
    payload_image: BuiltImage, podman_env: dict[str, str]
) -> None:
    value, logs = run_local(payload_image, podman_env, "add", 2, b=40)
    assert value == 42
    assert logs == ["adding 2 and 40"]


@pytest.mark.real
def test_local_run_passes_environment_and_merges_stderr(
    payload_image: BuiltImage, podman_env: dict[str, str]
) -> None:
    value, logs = run_local(payload_image, podman_env, "report_environment", "FNJOB_ENTRY")
    assert value == {
        "value": "module:tests.fnjob.run_payloads:report_environment",
        "cwd": "/fnjob/app",
    }
    assert logs == ["stderr works too: FNJOB_ENTRY"]


@pytest.mark.real
def test_local_exception_comes_back_as_the_same_type_with_remote_traceback(
    payload_image: BuiltImage, podman_env: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="lr too high") as caught:
        run_local(payload_image, podman_env, "explode", "lr too high")
    notes = "\n".join(caught.value.__notes__)
    assert "Remote traceback" in notes
    assert "raise ValueError(message)" in notes


@pytest.mark.real
def test_container_dying_without_outcome_raises_job_failed_with_logs(
    payload_image: BuiltImage, podman_env: dict[str, str]
) -> None:
    with pytest.raises(JobFailed) as caught:
        run_local(payload_image, podman_env, "die_hard")
    assert caught.value.exit_code == 3
    assert caught.value.last_logs == ("going down without a word",)


@pytest.mark.real
def test_missing_image_is_an_engine_error_with_the_engines_message(
    registry: Any, podman_env: dict[str, str]
) -> None:
    deployer = LocalDeployer(LocalOptions(engine="podman", engine_env=podman_env))
    with pytest.raises(ContainerEngineError) as caught:
        deployer.run(
            f"{registry.host}/tests/does-not-exist:v1",
            encode_call(),
            function_name="f",
            on_log=lambda line: None,
        )
    assert caught.value.exit_code == 125
    assert "does-not-exist" in str(caught.value)


@pytest.mark.real
def test_ctrl_c_while_streaming_removes_the_container(
    payload_image: BuiltImage, podman_env: dict[str, str]
) -> None:
    seen: list[str] = []

    def interrupt(line: str) -> None:
        seen.append(line)
        raise KeyboardInterrupt

    env = {"FNJOB_ENTRY": "module:tests.fnjob.run_payloads:count_slowly"}
    deployer = LocalDeployer(LocalOptions(engine="podman", engine_env=podman_env, env=env))
    with pytest.raises(KeyboardInterrupt):
        deployer.run(
            payload_image.ref, encode_call((600, 1.0)), function_name="count", on_log=interrupt
        )
    assert seen == ["tick 0"]
    assert fnjob_containers(podman_env) == []


@pytest.mark.real
def test_timeout_stops_the_container_and_raises_job_timeout(
    payload_image: BuiltImage, podman_env: dict[str, str]
) -> None:
    env = {"FNJOB_ENTRY": "module:tests.fnjob.run_payloads:count_slowly"}
    options = LocalOptions(engine="podman", engine_env=podman_env, env=env, timeout_seconds=2)
    logs: list[str] = []
    with pytest.raises(JobTimeout) as caught:
        LocalDeployer(options).run(
            payload_image.ref, encode_call((600, 0.2)), function_name="count", on_log=logs.append
        )
    # The ticks streamed before the deadline, in order (how many depends on the machine's load).
    assert logs == [f"tick {i}" for i in range(len(logs))]
    assert list(caught.value.last_logs) == logs[len(logs) - len(caught.value.last_logs) :]
    assert fnjob_containers(podman_env) == []


# -- real: what issue 10 reproduced with podman ---------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(
    "function", ["partial_line_then_return", "log_records_flushed_at_exit", "echo_records"]
)
def test_forged_outcome_lines_are_output_and_the_real_result_wins(
    payload_image: BuiltImage, podman_env: dict[str, str], tmp_path: Path, function: str
) -> None:
    marker = tmp_path / "code-ran-here"
    forged = forged_outcome_lines(marker)
    value, logs = run_local(payload_image, podman_env, function, forged)
    assert value == "the real result"
    assert all(line in logs for line in forged)
    assert not marker.exists()


@pytest.mark.real
def test_a_native_crash_after_printing_forgeries_is_job_failed(
    payload_image: BuiltImage, podman_env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "code-ran-here"
    forged = forged_outcome_lines(marker)
    with pytest.raises(JobFailed) as caught:
        run_local(payload_image, podman_env, "crash_after_logging", forged)
    assert caught.value.exit_code == 139  # SIGSEGV
    assert f"{len(forged)} line(s) of its output looked like an outcome" in str(caught.value)
    assert not marker.exists()


@pytest.mark.real
def test_a_successful_function_with_a_partial_last_line_returns_its_value(
    payload_image: BuiltImage, podman_env: dict[str, str]
) -> None:
    value, logs = run_local(payload_image, podman_env, "partial_line_then_return", [])
    assert value == "the real result"
    assert logs == ["50% done"]


@pytest.mark.real
def test_shm_size_sets_the_size_of_dev_shm(
    payload_image: BuiltImage, podman_env: dict[str, str]
) -> None:
    env = {"FNJOB_ENTRY": "module:tests.fnjob.run_payloads:shm_bytes"}
    sizes = []
    for volumes in (Volumes(), Volumes(shm_size="256Mi")):
        options = LocalOptions(engine="podman", engine_env=podman_env, env=env, volumes=volumes)
        sizes.append(
            LocalDeployer(options).run(
                payload_image.ref, encode_call(), function_name="shm", on_log=lambda line: None
            )
        )
    # podman's default is 65536k (64,000 KiB); DataLoader workers need more.
    assert sizes == [65536 * 1000, 256 * 2**20]


@pytest.mark.real
def test_a_value_of_a_type_only_the_image_has_is_result_not_loadable(
    registry: Any, python_base: str, podman_env: dict[str, str], tmp_path: Path
) -> None:
    library = tmp_path / "fnjob_image_only.py"
    library.write_text(
        "class Measurement:\n    def __init__(self, value):\n        self.value = value\n"
    )
    # The module is in the image (extra_files) and nowhere on this side.
    package = package_function(run_payloads.add, extra_files=[library])
    image = AppendBuilder(base_image=python_base).build(
        package, f"{registry.host}/tests/image-only"
    )
    with pytest.raises(ResultNotLoadable) as caught:
        run_local(image, podman_env, "value_of_an_image_only_type", 3.5)
    assert caught.value.missing_module == "fnjob_image_only"
    assert "module 'fnjob_image_only' is not installed here" in str(caught.value)
    # The authenticated bytes are there: with the module, they load.
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        assert pickle.loads(caught.value.pickled_value).value == 3.5
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fnjob_image_only", None)
