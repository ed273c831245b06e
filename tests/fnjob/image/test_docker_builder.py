"""The docker builder: its Dockerfile, a missing daemon, and a real Docker-compatible API
(podman's ``system service``, which speaks the Docker Engine API on a unix socket)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fnjob.image.builders import DockerBuilder, DockerDaemonUnavailable, render_dockerfile
from fnjob.image.package import CodePackage, package_function
from tests.fnjob.buildkit import import_sample, run_image
from tests.fnjob.conftest import (
    PodmanConfig,
    RegistryServer,
    make_podman_config,
    release_podman_storage,
    require_tool,
)


def test_dockerfile_matches_the_append_builders_layer() -> None:
    package = CodePackage(
        files={"train.py": b"def fit():\n    return 1\n"},
        entry="module:train:fit",
        needs_exact_python=False,
        requirements=("numpy==2.1.0",),
    )
    assert render_dockerfile(package, "reg.example.com/ml/python:3.11") == (
        "FROM reg.example.com/ml/python:3.11\n"
        "COPY fnjob /fnjob\n"
        "RUN python3 -m pip install --no-cache-dir -r /fnjob/requirements.txt\n"
        'ENV PYTHONPATH="/fnjob/app:/fnjob/vendor"\n'
        'ENV PYTHONUNBUFFERED="1"\n'
        'ENV FNJOB_ENTRY="module:train:fit"\n'
        "WORKDIR /fnjob/app\n"
        'ENTRYPOINT ["python3", "/fnjob/runner.py"]\n'
        "CMD []\n"
    )


def test_no_daemon_is_a_clear_error_before_anything_else(tmp_path: Path) -> None:
    socket_path = tmp_path / "missing" / "docker.sock"
    builder = DockerBuilder("127.0.0.1:1/never/read:1", docker_host=f"unix://{socket_path}")
    with pytest.raises(DockerDaemonUnavailable, match=f"unix://{socket_path}.*append builder"):
        builder.build(package_function(import_sample("train_module").train), "127.0.0.1:1/x/y")


@pytest.fixture
def docker_api(tmp_path: Path, registry: RegistryServer) -> Iterator[str]:
    """A Docker-compatible daemon: ``podman system service`` on a private socket."""
    podman_path = require_tool("podman")
    config: PodmanConfig = make_podman_config(tmp_path / "podman", [registry.host])
    socket_path = tmp_path / "docker.sock"
    service = subprocess.Popen(
        [podman_path, "system", "service", "--time=0", f"unix://{socket_path}"],
        env=config.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists():
            if time.monotonic() > deadline or service.poll() is not None:
                pytest.fail("podman system service did not create its socket")
            time.sleep(0.05)
        yield f"unix://{socket_path}"
    finally:
        service.terminate()
        service.wait(timeout=20)
        release_podman_storage(config)


@pytest.mark.real
def test_docker_builder_builds_pushes_and_the_image_runs(
    docker_api: str,
    registry: RegistryServer,
    python_base: str,
    podman: PodmanConfig,
    tmp_path: Path,
) -> None:
    train_module = import_sample("train_module")
    built = DockerBuilder(python_base, docker_host=docker_api, cache_dir=tmp_path).build(
        package_function(train_module.train), f"{registry.host}/team/docker-built:v1"
    )

    assert built.ref == f"{registry.host}/team/docker-built@{built.digest}"
    assert registry.manifest("team/docker-built", "v1").headers["Docker-Content-Digest"] == (
        built.digest
    )
    assert built.python_version == "3.11"
    assert run_image(podman, built.ref, 1.0, epochs=1).unwrap() == {"loss": 0.5, "epochs": 1.0}
