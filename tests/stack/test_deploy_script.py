"""scripts/deploy: clear messages before anything is deployed, local state by default."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.pulumi_mocks import ROOT


def _fake_tools(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("pulumi", "aws"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
        script.chmod(0o755)
    return bin_dir, log


def _deploy(
    tmp_path: Path, bin_dir: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        **env,
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "deploy"), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_missing_pulumi_cli_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _deploy(tmp_path, empty, "dev")
    assert result.returncode == 2
    assert "Pulumi CLI is not installed" in result.stderr


def test_unknown_stack_is_named(tmp_path: Path) -> None:
    bin_dir, _ = _fake_tools(tmp_path)
    result = _deploy(tmp_path, bin_dir, "staging")
    assert result.returncode == 2
    assert "no stacks/Pulumi.staging.yaml" in result.stderr


def test_local_state_stack_selected_and_unset_secret_stops_before_up(tmp_path: Path) -> None:
    bin_dir, log = _fake_tools(tmp_path)
    result = _deploy(tmp_path, bin_dir, "dev", PULUMI_CONFIG_PASSPHRASE="test-passphrase")
    calls = log.read_text().splitlines()
    assert f"pulumi login file://{ROOT}/.pulumi-state" in calls
    assert "pulumi stack select --create dev" in calls
    assert result.returncode == 2
    assert "pulumi config set --secret kubeflowAdminPassword" in result.stderr
    assert not any(c.startswith("pulumi up") for c in calls)


def test_passphrase_is_required_for_self_managed_state(tmp_path: Path) -> None:
    bin_dir, log = _fake_tools(tmp_path)
    result = _deploy(tmp_path, bin_dir, "dev", PULUMI_BACKEND_URL="s3://team-state/ml")
    assert result.returncode == 2
    assert "PULUMI_CONFIG_PASSPHRASE" in result.stderr
    assert "pulumi up" not in (log.read_text() if log.exists() else "")
