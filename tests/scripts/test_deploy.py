"""scripts/deploy: clear messages before anything is deployed, local state by default, the
policy pack on every preview and update, and a checkout the tests leave alone.

Every run happens in a temporary copy of the checkout, with this suite's Python
(DEPLOY_PYTHON) and fake `pulumi`/`aws` commands that log their arguments.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pulumi_mocks import ROOT

# A stack whose required secret is set (encrypted), so the script goes on to pulumi itself.
READY_STACK = "ci-test"
SECURE_PASSWORD = (
    "\n  kubeflow-eks:kubeflowAdminPassword:\n    secure: AAABAJ0SbmF0aXZlLWNpcGhlcg==\n"
)


def checkout_files() -> list[Path]:
    """What a fresh clone has: tracked and new files, nothing ignored (.venv, state, caches)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        paths = [Path(p) for p in listed.stdout.decode().split("\0") if p]
        return [p for p in paths if (ROOT / p).is_file()]
    skip = {".git", ".venv", ".pulumi-state", "__pycache__", ".pytest_cache", ".mypy_cache"}
    return [
        p.relative_to(ROOT)
        for p in ROOT.rglob("*")
        if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
    ]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    copy = tmp_path / "checkout"
    for relative in checkout_files():
        target = copy / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    ready = (
        (copy / "stacks" / "Pulumi.dev.yaml")
        .read_text()
        .replace("\nconfig:\n", "\nconfig:" + SECURE_PASSWORD, 1)
    )
    (copy / "stacks" / f"Pulumi.{READY_STACK}.yaml").write_text(ready)
    return copy


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pulumi", "aws"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls.log"\n')
        script.chmod(0o755)
    return bin_dir


def deploy(
    checkout: Path, bin_dir: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    environment = {
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(checkout.parent),
        "DEPLOY_PYTHON": sys.executable,
        **env,
    }
    result = subprocess.run(
        ["bash", str(checkout / "scripts" / "deploy"), *args],
        cwd=checkout,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    log = checkout.parent / "calls.log"
    return result, log.read_text().splitlines() if log.exists() else []


def test_missing_pulumi_cli_is_named(checkout: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result, _ = deploy(checkout, empty, "dev")
    assert result.returncode == 2
    assert "Pulumi CLI is not installed" in result.stderr


def test_unknown_stack_is_named(checkout: Path, fake_bin: Path) -> None:
    result, _ = deploy(checkout, fake_bin, "staging")
    assert result.returncode == 2
    assert "no stacks/Pulumi.staging.yaml" in result.stderr


def test_local_state_stack_selected_and_unset_secret_stops_before_up(
    checkout: Path, fake_bin: Path
) -> None:
    result, calls = deploy(checkout, fake_bin, "dev", PULUMI_CONFIG_PASSPHRASE="test-passphrase")
    assert f"pulumi login file://{checkout}/.pulumi-state" in calls
    assert (checkout / ".pulumi-state").is_dir()
    assert "pulumi stack select --create dev" in calls
    assert result.returncode == 2
    assert "pulumi config set --secret kubeflowAdminPassword" in result.stderr
    assert not any(c.startswith("pulumi up") for c in calls)


def test_state_folder_and_python_come_from_the_environment(
    checkout: Path, fake_bin: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    result, calls = deploy(
        checkout,
        fake_bin,
        READY_STACK,
        PULUMI_CONFIG_PASSPHRASE="test-passphrase",
        KUBEFLOW_EKS_STATE_DIR=str(state),
    )
    assert result.returncode == 0, result.stderr
    assert f"pulumi login file://{state}" in calls and state.is_dir()
    # Given a Python, the script sets up no virtualenv and writes no state in the checkout.
    for made in (".venv", "policy/.venv", ".pulumi-state"):
        assert not (checkout / made).exists(), made


def test_up_and_preview_run_the_policy_pack(checkout: Path, fake_bin: Path) -> None:
    env = {"PULUMI_CONFIG_PASSPHRASE": "test-passphrase"}
    result, calls = deploy(checkout, fake_bin, READY_STACK, "--refresh", **env, CI="true")
    assert result.returncode == 0, result.stderr
    assert calls[-1] == "pulumi up --policy-pack policy --yes --refresh"
    (checkout.parent / "calls.log").unlink()
    result, calls = deploy(checkout, fake_bin, "--preview", READY_STACK, **env)
    assert result.returncode == 0, result.stderr
    assert calls[-1] == "pulumi preview --diff --policy-pack policy"


def test_passphrase_is_required_for_self_managed_state(checkout: Path, fake_bin: Path) -> None:
    result, calls = deploy(checkout, fake_bin, "dev", PULUMI_BACKEND_URL="s3://team-state/ml")
    assert result.returncode == 2
    assert "PULUMI_CONFIG_PASSPHRASE" in result.stderr
    assert not any(c.startswith("pulumi up") for c in calls)


def test_kms_secrets_provider_replaces_the_passphrase_for_new_stacks(
    checkout: Path, fake_bin: Path
) -> None:
    result, calls = deploy(
        checkout,
        fake_bin,
        READY_STACK,
        PULUMI_BACKEND_URL="s3://team-state?region=eu-central-1",
        PULUMI_SECRETS_PROVIDER="awskms://alias/kubeflow-eks-pulumi-secrets?region=eu-central-1",
    )
    assert result.returncode == 0, result.stderr
    assert (
        "pulumi stack select --create --secrets-provider "
        "awskms://alias/kubeflow-eks-pulumi-secrets?region=eu-central-1 ci-test"
    ) in calls


def test_a_ci_preview_never_creates_a_stack(checkout: Path, fake_bin: Path) -> None:
    """The preview role may not write stack state: before the first deploy there is nothing
    to compare, and the deploy job after it creates the stack."""
    failing_select = fake_bin / "pulumi"
    failing_select.write_text(
        f'#!/bin/sh\necho "pulumi $*" >> "{checkout.parent}/calls.log"\n'
        '[ "$1 $2" = "stack select" ] && exit 255\nexit 0\n'
    )
    result, calls = deploy(
        checkout,
        fake_bin,
        "--preview",
        READY_STACK,
        CI="true",
        PULUMI_BACKEND_URL="s3://team-state?region=eu-central-1",
        PULUMI_SECRETS_PROVIDER="awskms://alias/k?region=eu-central-1",
    )
    assert calls[-1] == "pulumi stack select ci-test"
    assert result.returncode == 0, result.stderr
    assert "stack ci-test does not exist" in result.stdout
    assert "the deploy that follows creates it" in result.stdout


def test_the_checkout_is_left_alone(checkout: Path, fake_bin: Path) -> None:
    """Issue 8: running the deploy tests writes no .venv or .pulumi-state into the checkout."""

    def snapshot() -> set[str]:
        return {
            str(p.relative_to(ROOT))
            for folder in (ROOT, ROOT / "policy", ROOT / "bootstrap")
            if folder.is_dir()
            for p in folder.iterdir()
        }

    before = snapshot()
    deploy(checkout, fake_bin, "dev", PULUMI_CONFIG_PASSPHRASE="test-passphrase")
    deploy(checkout, fake_bin, READY_STACK, PULUMI_CONFIG_PASSPHRASE="test-passphrase")
    assert snapshot() == before
    assert os.path.commonpath([checkout, ROOT]) != str(ROOT)
