"""Bad stack configurations are refused up front: every problem named, nothing registered."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.config import (
    SUPPORTED_KUBERNETES_VERSIONS,
    StackConfigError,
    load_stack_file,
)
from tests.pulumi_mocks import ROOT, RecordingMocks, run_program, stack_file_config


def _dev(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(stack_file_config("dev"))
    for key, value in changes.items():
        config[key] = value
    return config


def _gpu(**fields: Any) -> list[dict[str, Any]]:
    group = {
        "name": "gpu",
        "instanceTypes": ["g5.xlarge"],
        "amiType": "AL2023_x86_64_NVIDIA",
        "capacityType": "SPOT",
        "minSize": 0,
        "desiredSize": 0,
        "maxSize": 2,
    }
    group.update(fields)
    return [{k: v for k, v in group.items() if v is not None}]


def _onprem(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(stack_file_config("onprem"))
    config.update(changes)
    return config


P = "kubeflow-eks:"
BAD_CONFIGS: dict[str, tuple[dict[str, Any], str, str]] = {
    # id: (config, key path that must be named, text of what is allowed)
    "desired above max": (
        _dev(**{P + "gpuNodeGroups": _gpu(minSize=0, desiredSize=3, maxSize=2)}),
        "gpuNodeGroups[0].desiredSize",
        "minSize <= desiredSize <= maxSize",
    ),
    "min above desired": (
        _dev(**{P + "systemNodeGroup": {"minSize": 3, "desiredSize": 2, "maxSize": 4}}),
        "systemNodeGroup.desiredSize",
        "minSize <= desiredSize <= maxSize",
    ),
    "ARM AMI on x86 GPU": (
        _dev(**{P + "gpuNodeGroups": _gpu(amiType="AL2023_ARM_64_NVIDIA")}),
        "gpuNodeGroups[0].amiType",
        "g5.xlarge is x86_64",
    ),
    "x86 AMI on g5g": (
        _dev(**{P + "gpuNodeGroups": _gpu(instanceTypes=["g5g.xlarge"])}),
        "gpuNodeGroups[0].amiType",
        "g5g.xlarge is arm64",
    ),
    "CPU type in GPU group": (
        _dev(**{P + "gpuNodeGroups": _gpu(instanceTypes=["m6i.xlarge"])}),
        "gpuNodeGroups[0].instanceTypes[0]",
        "not an NVIDIA GPU instance type",
    ),
    "AL2 GPU AMI (end of life)": (
        _dev(**{P + "gpuNodeGroups": _gpu(amiType="AL2_x86_64_GPU")}),
        "gpuNodeGroups[0].amiType",
        "allowed: AL2023_x86_64_NVIDIA",
    ),
    "mixed GPU counts": (
        _dev(**{P + "gpuNodeGroups": _gpu(instanceTypes=["g5.xlarge", "g5.12xlarge"])}),
        "gpuNodeGroups[0].instanceTypes",
        "same GPU count",
    ),
    "unsupported Kubernetes version": (
        _dev(**{P + "kubernetesVersion": "1.27"}),
        "kubernetesVersion",
        "allowed: " + ", ".join(SUPPORTED_KUBERNETES_VERSIONS),
    ),
    "bad VPC CIDR": (
        _dev(
            **{
                P + "vpc": {
                    "cidr": "10.20.0.0/33",
                    "availabilityZones": ["us-west-2a", "us-west-2b"],
                }
            }
        ),
        "vpc.cidr",
        "CIDR block",
    ),
    "bad endpoint CIDR": (
        _dev(**{P + "endpoint": {"publicAccessCidrs": ["203.0.113.7/24"]}}),
        "endpoint.publicAccessCidrs[0]",
        "host bits zero",
    ),
    "one AZ": (
        _dev(**{P + "vpc": {"availabilityZones": ["us-west-2a"]}}),
        "vpc.availabilityZones",
        "at least two distinct AZs",
    ),
    "AZ of another region": (
        _dev(**{P + "vpc": {"availabilityZones": ["us-west-2a", "eu-west-1b"]}}),
        "vpc.availabilityZones[1]",
        "must be an AZ of us-west-2",
    ),
    "group name not DNS-safe": (
        _dev(**{P + "gpuNodeGroups": _gpu(name="GPU_Spot")}),
        "gpuNodeGroups[0].name",
        "DNS label",
    ),
    "cluster name not DNS-safe": (
        _dev(**{P + "clusterName": "My Cluster"}),
        "clusterName",
        "DNS label",
    ),
    "bad taint effect": (
        _dev(
            **{
                P + "gpuNodeGroups": _gpu(
                    taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NoRun"}]
                )
            }
        ),
        "gpuNodeGroups[0].taints[0].effect",
        "allowed: NoSchedule, PreferNoSchedule, NoExecute",
    ),
    "bad capacity type": (
        _dev(**{P + "gpuNodeGroups": _gpu(capacityType="spot")}),
        "gpuNodeGroups[0].capacityType",
        "allowed: ON_DEMAND, SPOT",
    ),
    "onprem with AWS keys": (
        _onprem(**{P + "vpc": {"availabilityZones": ["us-west-2a", "us-west-2b"]}}),
        "vpc",
        "not allowed in onprem mode",
    ),
    "onprem GPU group with instance types": (
        _onprem(**{P + "gpuNodeGroups": [{"name": "dgx", "instanceTypes": ["p4d.24xlarge"]}]}),
        "gpuNodeGroups[0].instanceTypes",
        "not allowed in onprem mode",
    ),
    "onprem with aws:region": (
        _onprem(**{"aws:region": "us-west-2"}),
        "aws:region",
        "not allowed in onprem mode",
    ),
    "unknown top-level key (typo)": (
        _dev(**{P + "gpuNodeGroup": _gpu()}),
        "gpuNodeGroup",
        "unknown key",
    ),
    "missing region": (
        {k: v for k, v in _dev().items() if k != "aws:region"},
        "aws:region",
        "pulumi config set aws:region",
    ),
    "missing admin password": (
        {k: v for k, v in _dev().items() if k != P + "kubeflowAdminPassword"},
        "kubeflowAdminPassword",
        "pulumi config set --secret kubeflowAdminPassword",
    ),
    "short admin password": (
        _dev(**{P + "kubeflowAdminPassword": "12341234"}),
        "kubeflowAdminPassword",
        "at least 12 characters",
    ),
    "upstream default admin email": (
        _dev(**{P + "kubeflow": {"adminEmail": "user@example.com", "protocol": "http"}}),
        "kubeflow.adminEmail",
        "upstream's default user",
    ),
    "minSize 0 without autoscaler": (
        _dev(**{P + "clusterAutoscaler": {"enabled": False}}),
        "clusterAutoscaler.enabled",
        "never scales up",
    ),
    "device plugin outside 0.20.x": (
        _dev(**{P + "devicePlugin": {"chartVersion": "0.14.0"}}),
        "devicePlugin.chartVersion",
        "0.20",
    ),
    "label set by the stack": (
        _dev(**{P + "gpuNodeGroups": _gpu(labels={"nvidia.com/gpu.present": "false"})}),
        "gpuNodeGroups[0].labels.nvidia.com/gpu.present",
        "set by the stack itself",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS), ids=list(BAD_CONFIGS))
def test_bad_config_is_rejected_before_any_resource(case: str) -> None:
    config, path, allowed = BAD_CONFIGS[case]
    with pytest.raises(StackConfigError) as caught:
        run_program(config, stack="dev")
    messages = [str(p) for p in caught.value.problems]
    named = [m for m in messages if m.startswith(f"{path}:")]
    assert named, f"no problem names {path!r}: {messages}"
    assert any(allowed in m for m in named), f"{named} does not say {allowed!r}"


def test_zero_resources_are_registered_on_bad_config() -> None:
    for case, (config, _, _) in BAD_CONFIGS.items():
        mocks = RecordingMocks()
        with pytest.raises(StackConfigError):
            run_program(config, stack="dev", mocks=mocks)
        assert mocks.resources == [], f"{case}: registered {[r.name for r in mocks.resources]}"


def test_every_problem_is_reported_at_once() -> None:
    config = _dev(
        **{
            P + "kubernetesVersion": "1.20",
            P + "clusterName": "Bad Name",
            P + "gpuNodeGroups": _gpu(capacityType="cheap", maxSize=-1),
        }
    )
    with pytest.raises(StackConfigError) as caught:
        run_program(config, stack="dev")
    paths = {p.path for p in caught.value.problems}
    assert {
        "kubernetesVersion",
        "clusterName",
        "gpuNodeGroups[0].capacityType",
        "gpuNodeGroups[0].maxSize",
    } <= paths
    assert "4 problems" in str(caught.value) or len(caught.value.problems) >= 4


def test_example_stack_files_check_clean() -> None:
    for name in ("dev", "prod", "onprem"):
        cfg = load_stack_file(ROOT / "stacks" / f"Pulumi.{name}.yaml", require_secrets=False)
        assert cfg.stack == name


def test_check_command_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    document = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    document["config"]["kubeflow-eks:gpuNodeGroups"][0]["amiType"] = "AL2023_ARM_64_NVIDIA"
    bad = tmp_path / "Pulumi.broken.yaml"
    bad.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [sys.executable, "-m", "stack.config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "gpuNodeGroups[0].amiType" in result.stderr
    assert "g5.xlarge is x86_64" in result.stderr

    good = subprocess.run(
        [sys.executable, "-m", "stack.config", "stacks/Pulumi.dev.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert "ok" in good.stdout
    assert "kubeflowAdminPassword is not set yet" in good.stdout


def test_plain_text_secret_in_stack_file_is_refused(tmp_path: Path) -> None:
    document = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    document["config"]["kubeflow-eks:kubeflowAdminPassword"] = "hunter2-hunter2"
    bad = tmp_path / "Pulumi.leaky.yaml"
    bad.write_text(yaml.safe_dump(document))
    with pytest.raises(StackConfigError) as caught:
        load_stack_file(bad)
    assert any(
        p.path == "kubeflowAdminPassword" and "secret" in p.allowed for p in caught.value.problems
    )


def test_project_file_declares_only_keys_every_stack_may_carry() -> None:
    """Pulumi requires declared keys without a default and merges declared defaults into
    every stack: a declared AWS-only key would break onprem stacks."""
    from stack.config import AWS_ONLY_KEYS, TOP_LEVEL_KEYS

    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "kubeflow-eks"
    assert project["stackConfigDir"] == "stacks"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    declared = project["config"]
    assert declared, "declare what Pulumi can type"
    for key, spec in declared.items():
        assert key in TOP_LEVEL_KEYS
        assert key not in AWS_ONLY_KEYS
        assert "default" in spec, f"{key} would be required in every stack"
    assert declared["mode"]["default"] == "eks"

    # The defaults Pulumi would merge in pass the parser in both modes.
    for stack in ("dev", "onprem"):
        merged = stack_file_config(stack)
        for key, spec in declared.items():
            merged.setdefault(f"kubeflow-eks:{key}", spec["default"])
        run_program(merged, stack=stack)
