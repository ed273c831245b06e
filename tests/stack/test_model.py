"""The stack model, tried as a user would: stack files in tests/stack/files/{bad,good}.

Every bad file is refused offline (``python -m stack.check``'s path) with a message naming
the key and what to write instead, and the program registers no resource for it. Every good
file checks clean and deploys under mocks. A bad file's header says what must be reported:

    # expect: <key path> :: <text the message must contain>
    # never shows: <a secret the message must not echo>
    # offline only: <why the program itself cannot see this>
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stack.load import load_stack_file
from stack.problems import StackConfigError
from tests.pulumi_mocks import ROOT, RecordingMocks, file_config, run_program, stack_file_config

FILES = Path(__file__).parent / "files"
BAD = sorted((FILES / "bad").glob("Pulumi.*.yaml"))
GOOD = sorted((FILES / "good").glob("Pulumi.*.yaml"))


def _case(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def _header(path: Path, tag: str) -> list[str]:
    return re.findall(rf"^# {tag}: (.+)$", path.read_text(), flags=re.MULTILINE)


def test_the_corpus_is_broad() -> None:
    assert len(BAD) >= 40 and len(GOOD) >= 10
    for path in BAD:
        assert _header(path, "expect"), f"{path.name} says nothing about what is wrong"


@pytest.mark.parametrize("path", BAD, ids=_case)
def test_bad_stack_file_is_refused_naming_the_key_and_the_fix(path: Path) -> None:
    with pytest.raises(StackConfigError) as caught:
        load_stack_file(path, require_secrets=False)
    messages = [str(p) for p in caught.value.problems]
    for expectation in _header(path, "expect"):
        key, _, text = expectation.partition(" :: ")
        named = [m for m in messages if m.startswith(f"{key}:")]
        assert named, f"no problem names {key!r}: {messages}"
        assert any(text in m for m in named), f"{named} do not say {text!r}"
    for secret in _header(path, "never shows"):
        assert secret not in str(caught.value)


@pytest.mark.parametrize("path", [p for p in BAD if not _header(p, "offline only")], ids=_case)
def test_bad_stack_registers_no_resource(path: Path) -> None:
    mocks = RecordingMocks()
    with pytest.raises(StackConfigError) as caught:
        run_program(file_config(path), stack=_case(path), mocks=mocks)
    assert mocks.resources == [], f"registered {[r.name for r in mocks.resources]}"
    # The program names the same key (or, for a list the renderer checks, the list itself).
    keys = {e.partition(" :: ")[0] for e in _header(path, "expect")}
    paths = [p.path for p in caught.value.problems]
    assert any(k.startswith(p) or p.startswith(k) for k in keys for p in paths), paths


@pytest.mark.parametrize("path", GOOD, ids=_case)
def test_good_stack_file_checks_clean_and_deploys(path: Path) -> None:
    cfg = load_stack_file(path, require_secrets=False)
    assert cfg.stack == _case(path)
    run = run_program(file_config(path), stack=_case(path))
    assert run.mocks.resources
    assert run.outputs["clusterName"] == cfg.cluster_name


def test_every_problem_is_reported_at_once() -> None:
    config = stack_file_config("dev")
    config.update(
        {
            "kubeflow-eks:kubernetesVersion": "1.20",
            "kubeflow-eks:clusterName": "Bad Name",
            "kubeflow-eks:gpuNodeGroups": [
                {"name": "gpu", "instanceTypes": ["g5.xlarge"], "capacityType": "cheap"}
            ],
            "kubeflow-eks:endpoint": {"publicAccessCidrs": ["::/0"]},
        }
    )
    with pytest.raises(StackConfigError) as caught:
        run_program(config, stack="dev")
    paths = {p.path for p in caught.value.problems}
    assert {
        "kubernetesVersion",
        "clusterName",
        "gpuNodeGroups[0].capacityType",
        "endpoint.publicAccessCidrs[0]",
    } <= paths


def test_a_wrong_mode_is_the_only_problem_reported() -> None:
    [path] = [p for p in BAD if _case(p) == "mode-misspelled"]
    with pytest.raises(StackConfigError) as caught:
        load_stack_file(path, require_secrets=False)
    assert [p.path for p in caught.value.problems] == ["mode"]


def test_defaults_are_resolved_once_in_the_model() -> None:
    [path] = [p for p in GOOD if _case(p) == "graviton-gpus-with-derived-ami"]
    cfg = load_stack_file(path, require_secrets=False)
    assert cfg.system_node_group.ami_type == "AL2023_ARM_64_STANDARD"
    [group] = cfg.gpu_node_groups
    assert group.ami_type == "AL2023_ARM_64_NVIDIA"
    assert (group.gpus_per_node, group.gpu_model) == (1, "NVIDIA T4G")
    assert group.desired_size == group.min_size == 0
    assert cfg.cluster_name == "kubeflow-graviton-gpus-with-derived-ami"[:32].rstrip("-")


def test_check_command_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    bad = next(p for p in BAD if _case(p) == "arm-ami-on-x86-instances")
    result = subprocess.run(
        [sys.executable, "-m", "stack.check", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "gpuNodeGroups[0].amiType" in result.stderr
    assert "use amiType AL2023_x86_64_NVIDIA" in result.stderr

    good = subprocess.run(
        [sys.executable, "-m", "stack.check", "stacks/Pulumi.dev.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout
    assert "kubeflowAdminPassword is not set yet" in good.stdout


def test_project_file_declares_only_keys_every_stack_may_carry() -> None:
    """Pulumi requires declared keys without a default and merges declared defaults into
    every stack: a declared AWS-only key would break onprem stacks."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["stackConfigDir"] == "stacks"
    assert set(project["config"]) == {"mode"}
    assert project["config"]["mode"]["default"] == "eks"
    # The default Pulumi merges in passes the model in both modes.
    for stack in ("dev", "onprem"):
        merged = stack_file_config(stack)
        merged.setdefault("kubeflow-eks:mode", "eks")
        run_program(merged, stack=stack)


def test_registry_credentials_are_per_profile_and_never_shown() -> None:
    from stack.load import parse_stack_config

    raw = {
        "mode": "onprem",
        "onprem": {"kubeconfigPath": "~/.kube/config"},
        "gpuNodeGroups": [{"name": "dgx", "labels": {"example.org/gpu": "a100"}}],
        "kubeflow": {
            "adminEmail": "admin@example.org",
            "registryAccess": "docker-config",
            "profiles": [
                {"name": "lab", "owner": "lab@example.org"},
                {"name": "ops", "owner": "ops@example.org"},
            ],
        },
    }
    leaked = '{"auths": {"r": {"auth": "c2VjcmV0"}}, "oops": '
    cases = [
        ({}, {"registryDockerConfigs.lab", "registryDockerConfigs.ops"}),
        ({"lab": leaked, "ops": '{"auths": {}}'}, {"registryDockerConfigs.lab"}),
        (
            {"lab": '{"auths": {}}', "ops": '{"auths": {}}', "dev": '{"auths": {}}'},
            {"registryDockerConfigs.dev"},
        ),
    ]
    for configs, paths in cases:
        secrets = {"kubeflowAdminPassword": "a-long-password", "registryDockerConfigs": configs}
        with pytest.raises(StackConfigError) as caught:
            parse_stack_config(raw, stack="lab", secrets=secrets)
        assert {p.path for p in caught.value.problems} == paths
        assert "c2VjcmV0" not in str(caught.value)
    ok = {"lab": '{"auths": {}}', "ops": '{"auths": {}}'}
    cfg = parse_stack_config(
        raw,
        stack="lab",
        secrets={"kubeflowAdminPassword": "a-long-password", "registryDockerConfigs": ok},
    )
    assert set(cfg.registry_docker_configs) == {"lab", "ops"}
    assert "auths" not in repr(cfg)
