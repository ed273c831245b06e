"""The local deployer: its command line, then real runs with podman and the real registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fnjob.build import AppendBuilder, BuiltImage
from fnjob.deploy_job import JobFailed, JobTimeout
from fnjob.deploy_local import (
    ContainerEngineError,
    ContainerEngineNotFound,
    LocalDeployer,
    LocalOptions,
    build_run_command,
    find_engine,
)
from fnjob.package import package_function
from fnjob.protocol import encode_call
from tests.fnjob import run_payloads
from tests.fnjob.run_fixtures import fnjob_containers

# -- pure: the command line --------------------------------------------------------------


def test_command_runs_the_image_entrypoint_with_the_call_in_the_environment() -> None:
    options = LocalOptions(env={"MODE": "dev"}, cpu=0.5, memory="1Gi")
    command = build_run_command(
        "/usr/bin/podman",
        "reg:5000/app@sha256:abc",
        container_name="fnjob-1",
        run_id="1",
        options=options,
    )
    assert command[:2] == ["/usr/bin/podman", "run"]
    assert "--rm" in command
    # Same command as the Job: the image's own entrypoint, nothing after the image.
    assert command[-1] == "reg:5000/app@sha256:abc"
    # Values travel in the engine's environment, never on the command line.
    assert command[command.index("-e") + 1] == "FNJOB_CALL"
    assert "MODE" in command and "dev" not in command
    assert command[command.index("--cpus") + 1] == "0.5"
    assert command[command.index("--memory") + 1] == str(1024**3)


def test_gpus_use_cdi_with_podman_and_the_gpus_flag_with_docker() -> None:
    options = LocalOptions(gpus=2)
    podman = build_run_command("podman", "img", container_name="c", run_id="1", options=options)
    docker = build_run_command("docker", "img", container_name="c", run_id="1", options=options)
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
        ("env", {"FNJOB_CALL": "x"}, "may not set FNJOB_CALL"),
        ("memory", "lots", "not a Kubernetes quantity"),
        ("timeout_seconds", 0, "must be > 0"),
    ],
)
def test_bad_local_options_name_the_field(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words) as caught:
        LocalOptions(**{field: value})
    assert field in str(caught.value)


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
    assert logs[0] == "tick 0"
    assert caught.value.last_logs[-1] == logs[-1]
    assert fnjob_containers(podman_env) == []
