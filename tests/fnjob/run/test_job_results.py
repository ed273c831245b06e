"""A Job's result through a real container: the image built into the session's registry and
run by podman as a kubelet runs the Job's pod (the run's Secret mounted at its path, the
pod's env, ``KUBERNETES_SERVICE_HOST`` as in every pod), its stdout and stderr merged as a
container runtime merges them (``fake_kube_api.ContainerLog``), behind the fake API.
"""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fnjob.image.builders import AppendBuilder, BuiltImage
from fnjob.image.package import package_function
from fnjob.options import Lifecycle
from fnjob.run.job import JobDeployer
from fnjob.run.manifest import JobOptions
from fnjob.run.protocol import RUN_DIR, encode_call
from tests.fnjob import run_payloads
from tests.fnjob.conftest import PodmanConfig
from tests.fnjob.fake_kube_api import ContainerLog, FakeKubeApi, JobScenario
from tests.fnjob.run_fixtures import api_client_for
from tests.fnjob.run_payloads import random_bytes


@pytest.fixture(scope="module")
def payload_image(registry: Any, python_base: str) -> BuiltImage:
    builder = AppendBuilder(base_image=python_base)
    return builder.build(package_function(run_payloads.add), f"{registry.host}/tests/job-run")


class PodmanPod:
    """Runs a Job's pod with podman: the run's Secret as files at ``RUN_DIR``, the
    container's plain env, the kubelet's ``KUBERNETES_SERVICE_HOST``; no network."""

    def __init__(self, podman: PodmanConfig, scratch: Path) -> None:
        self.podman = podman
        self.scratch = scratch

    def __call__(
        self, job: dict[str, Any], pod_name: str, secrets: Mapping[str, dict[str, Any]]
    ) -> tuple[list[str], int]:
        spec = job["spec"]["template"]["spec"]
        container = spec["containers"][0]
        (secret_volume,) = [v for v in spec["volumes"] if "secret" in v]
        run_dir = self.scratch / pod_name
        run_dir.mkdir(parents=True)
        run_dir.chmod(0o755)
        secret = secrets[secret_volume["secret"]["secretName"]]
        for key, value in secret["data"].items():
            (run_dir / key).write_bytes(base64.b64decode(value))
            (run_dir / key).chmod(0o644)
        options = ["--network", "none", "--volume", f"{run_dir}:{RUN_DIR}:ro"]
        options += ["--env", "KUBERNETES_SERVICE_HOST=10.96.0.1"]
        for item in container.get("env") or []:
            options += ["--env", f"{item['name']}={item['value']}"]
        process = subprocess.Popen(
            ["podman", "run", "--rm", *options, container["image"]],
            env=self.podman.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        log = ContainerLog()
        pumps = [
            threading.Thread(target=log.pump, args=(stream,), daemon=True)
            for stream in (process.stdout, process.stderr)
        ]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join(timeout=300)
        return log.lines(), process.wait(timeout=60)


@pytest.mark.real
def test_a_result_in_a_real_container_survives_a_stderr_flood(
    payload_image: BuiltImage, podman: PodmanConfig, tmp_path: Path
) -> None:
    size = 2 * 1024 * 1024
    entry = "module:tests.fnjob.run_payloads:big_result_with_stderr_noise"
    options = JobOptions(
        namespace="team-a", lifecycle=Lifecycle(poll_interval=0.05), env={"FNJOB_ENTRY": entry}
    )
    logs: list[str] = []
    with FakeKubeApi(JobScenario(run_pod=PodmanPod(podman, tmp_path))) as fake:
        deployer = JobDeployer(options, api_client=api_client_for(fake))
        value = deployer.run(
            payload_image.ref,
            encode_call((size,)),
            function_name="big_result_with_stderr_noise",
            on_log=logs.append,
        )
    assert value == random_bytes(size)
    assert "warming up" in logs
    assert any(line.startswith("noise ") for line in logs)
