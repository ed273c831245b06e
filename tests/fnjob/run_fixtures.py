"""Helpers shared by the run tests (the real fixtures are in conftest.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.fnjob.fake_kube_api import FakeKubeApi


def fnjob_containers(podman_env: dict[str, str]) -> list[str]:
    """Names of containers fnjob started that still exist (running or not)."""
    listed = subprocess.run(
        ["podman", "ps", "--all", "--filter", "label=fnjob/run-id", "--format", "{{.Names}}"],
        env=podman_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def api_client_for(fake: FakeKubeApi) -> Any:
    """A real kubernetes ApiClient whose server is the fake."""
    configuration = client.Configuration()
    configuration.host = fake.host
    return client.ApiClient(configuration)


def write_kubeconfig(path: Path, server: str, namespace: str = "team-a") -> Path:
    """A kubeconfig whose current context talks to ``server`` with a bearer token."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
users:
- name: tester
  user:
    token: not-a-real-token
contexts:
- name: fake
  context:
    cluster: fake
    user: tester
    namespace: {namespace}
current-context: fake
"""
    )
    return path


FNJOB_SOURCE = Path(__file__).resolve().parents[2] / "fnjob"


def with_fnjob_importable(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child Python that must import this checkout's fnjob, installed or not."""
    paths = [str(FNJOB_SOURCE), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}
