"""The policy pack as the Pulumi CLI runs it: its own virtualenv, `python -m pulumi.policy`,
an analyzer gRPC server on 127.0.0.1 that the tests call like the engine does."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from tests.pulumi_mocks import ROOT

POLICY_DIR = ROOT / "policy"


def policy_python() -> Path:
    """The pack's interpreter: POLICY_PYTHON, else policy/.venv (made by scripts/check)."""
    python = Path(os.environ.get("POLICY_PYTHON", POLICY_DIR / ".venv" / "bin" / "python"))
    if not python.exists():
        pytest.fail(f"{python} is missing: run ./scripts/check once (it creates policy/.venv)")
    return python


@dataclass
class RunningPack:
    process: subprocess.Popen[bytes]
    stub: analyzer_pb2_grpc.AnalyzerStub

    def analyze(
        self, typ: str, name: str, props: Mapping[str, Any], *, stack: str
    ) -> analyzer_pb2.AnalyzeResponse:
        """What the engine asks before it registers one resource of `stack`."""
        request = analyzer_pb2.AnalyzeRequest(
            type=typ,
            name=name,
            urn=f"urn:pulumi:{stack}::kubeflow-eks::{typ}::{name}",
            properties=json_format.ParseDict(dict(props), struct_pb2.Struct()),
        )
        return self.stub.Analyze(request, timeout=60)

    def configure(self, config: Mapping[str, Mapping[str, Any]]) -> None:
        """The whole `--policy-pack-config` (one call replaces any earlier one)."""
        policy_config = {
            policy: analyzer_pb2.PolicyConfig(
                enforcementLevel=analyzer_pb2.MANDATORY,
                properties=json_format.ParseDict(dict(properties), struct_pb2.Struct()),
            )
            for policy, properties in config.items()
        }
        self.stub.Configure(
            analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=policy_config), timeout=60
        )


def start_pack(tmp_path: Path) -> Iterator[RunningPack]:
    stderr = (tmp_path / "policy-pack.stderr").open("wb")
    process = subprocess.Popen(
        # The engine address is not used by a policy pack; the CLI passes one all the same.
        [str(policy_python()), "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(POLICY_DIR)],
        cwd=POLICY_DIR,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().decode().strip()
        if not port.isdigit():
            stderr.flush()
            log = (tmp_path / "policy-pack.stderr").read_text()
            pytest.fail(f"the policy pack did not start: {log}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            yield RunningPack(process, analyzer_pb2_grpc.AnalyzerStub(channel))
    finally:
        process.terminate()
        process.wait(timeout=30)
        stderr.close()


@pytest.fixture(scope="session")
def policy_pack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPack]:
    yield from start_pack(tmp_path_factory.mktemp("policy-pack"))


@pytest.fixture
def fresh_policy_pack(tmp_path: Path) -> Iterator[RunningPack]:
    """A pack of its own, for tests that change its configuration."""
    yield from start_pack(tmp_path)
