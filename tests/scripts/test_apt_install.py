"""scripts/apt-install (used by scripts/check): apt runs with services held off, and the
machine's /usr/sbin/policy-rc.d is left exactly as it was, whatever happens to apt.

The tests point the script at a policy file in a temporary folder (POLICY_RC_D) and put a fake
apt-get on PATH, so nothing on this machine changes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.pulumi_mocks import ROOT

APT_INSTALL = ROOT / "scripts" / "apt-install"

# Records what apt-get saw of the policy file at each call, then fails or is interrupted on
# request, as a real apt run can.
FAKE_APT_GET = r"""#!/usr/bin/env python3
import json, os, signal, sys
policy = os.environ["POLICY_RC_D"]
seen = {"args": sys.argv[1:], "exists": os.path.exists(policy)}
if seen["exists"]:
    seen["content"] = open(policy).read()
    seen["executable"] = os.access(policy, os.X_OK)
with open(os.environ["FAKE_APT_LOG"], "a") as log:
    log.write(json.dumps(seen) + "\n")
action = os.environ.get("FAKE_APT_ACTION", "")
if sys.argv[1] == "install" and action == "fail":
    sys.exit(100)
if sys.argv[1] == "install" and action == "terminate":
    os.kill(os.getppid(), signal.SIGTERM)
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(FAKE_APT_GET)
    apt.chmod(0o755)
    # When the suite runs unprivileged the script asks sudo; ours just runs the command.
    sudo = bin_dir / "sudo"
    sudo.write_text('#!/bin/sh\nexec "$@"\n')
    sudo.chmod(0o755)
    return bin_dir


def run_script(
    script: Path, fake_bin: Path, policy: Path, *args: str, action: str = ""
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, object]]]:
    log = policy.parent / "apt-calls.jsonl"
    env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "HOME": str(policy.parent),
        "POLICY_RC_D": str(policy),
        "FAKE_APT_LOG": str(log),
        "FAKE_APT_ACTION": action,
    }
    result = subprocess.run(
        ["bash", str(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def assert_held_off_during(calls: list[dict[str, object]]) -> None:
    assert [c["args"][0] for c in calls] == ["update", "install"]  # type: ignore[index]
    for call in calls:
        assert call["exists"], "apt ran without a policy-rc.d"
        assert call["content"] == "#!/bin/sh\nexit 101\n"
        assert call["executable"]


@pytest.mark.parametrize("action", ["", "fail", "terminate"])
def test_policy_is_removed_again_when_there_was_none(
    tmp_path: Path, fake_bin: Path, action: str
) -> None:
    policy = tmp_path / "policy-rc.d"
    result, calls = run_script(APT_INSTALL, fake_bin, policy, "docker-registry", action=action)
    assert_held_off_during(calls)
    assert calls[1]["args"][-1] == "docker-registry"  # type: ignore[index]
    assert result.returncode == {"": 0, "fail": 100, "terminate": 143}[action]
    assert not policy.exists() and not policy.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["apt-calls.jsonl", "bin"]


@pytest.mark.parametrize("action", ["", "fail", "terminate"])
def test_an_existing_policy_comes_back_byte_for_byte_with_its_mode(
    tmp_path: Path, fake_bin: Path, action: str
) -> None:
    policy = tmp_path / "policy-rc.d"
    original = '#!/bin/sh\n# the admin\'s own policy\n[ "$1" = apache2 ] && exit 101\nexit 0\n'
    policy.write_text(original)
    policy.chmod(0o750)
    result, calls = run_script(APT_INSTALL, fake_bin, policy, "podman", action=action)
    assert_held_off_during(calls)
    assert result.returncode != 0 if action else result.returncode == 0
    assert policy.read_text() == original
    assert stat.S_IMODE(policy.stat().st_mode) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["apt-calls.jsonl", "bin", "policy-rc.d"]


def test_a_symlinked_policy_stays_a_symlink(tmp_path: Path, fake_bin: Path) -> None:
    target = tmp_path / "site-policy"
    target.write_text("#!/bin/sh\nexit 0\n")
    policy = tmp_path / "policy-rc.d"
    policy.symlink_to(target)
    result, calls = run_script(APT_INSTALL, fake_bin, policy, "skopeo")
    assert result.returncode == 0, result.stderr
    assert_held_off_during(calls)
    assert policy.is_symlink() and os.readlink(policy) == str(target)
    assert target.read_text() == "#!/bin/sh\nexit 0\n"


def test_check_restores_the_policy_when_its_package_install_fails(
    tmp_path: Path, fake_bin: Path
) -> None:
    """The whole of scripts/check, as a new machine runs it: a package is missing, apt fails."""
    dpkg_query = fake_bin / "dpkg-query"
    dpkg_query.write_text("#!/bin/sh\nexit 1\n")  # nothing is installed
    dpkg_query.chmod(0o755)
    policy = tmp_path / "policy-rc.d"
    result, calls = run_script(ROOT / "scripts" / "check", fake_bin, policy, action="fail")
    assert result.returncode == 100
    assert "installing system packages: podman" in result.stdout
    assert_held_off_during(calls)
    assert not policy.exists()


def test_no_package_named_is_a_usage_error(tmp_path: Path, fake_bin: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    result, calls = run_script(APT_INSTALL, fake_bin, policy)
    assert result.returncode == 2
    assert "usage: scripts/apt-install PACKAGE" in result.stderr
    assert calls == [] and not policy.exists()
