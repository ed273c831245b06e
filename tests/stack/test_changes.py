"""`stack.check NEW --compared-to OLD` says what a stack edit would delete, replace or keep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import check
from tests.pulumi_mocks import STACKS

ROLLS = (
    "the nodes' AMI release {} -> {}: EKS rolls the group, one node at a time (a new node "
    "starts, an old one is drained): pods on each old node are evicted, running jobs and "
    "notebooks on them restart"
)


def _edited(tmp_path: Path, stack: str, edit: Any, side: str = "new") -> Path:
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    edit(document["config"])
    folder = tmp_path / side
    folder.mkdir(exist_ok=True)
    path = folder / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _compare(
    new: Path, stack: str, capsys: pytest.CaptureFixture[str], old: Path | None = None
) -> list[str]:
    old = old or STACKS / f"Pulumi.{stack}.yaml"
    code = check.main([str(new), "--compared-to", str(old)])
    assert code == 0
    prefix = f"{new}: "
    return [
        line.removeprefix(prefix)
        for line in capsys.readouterr().out.splitlines()
        if not line.startswith((f"{prefix}ok", f"{prefix}note:", f"{prefix}warning:"))
    ]


def test_removing_a_profile_keeps_its_data_unless_the_stack_allows_deleting_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def drop_production_models(config: dict[str, Any]) -> None:
        kubeflow = config["kubeflow-eks:kubeflow"]
        kubeflow["profiles"] = [p for p in kubeflow["profiles"] if p["name"] != "production-models"]

    [line] = _compare(_edited(tmp_path, "prod", drop_production_models), "prod", capsys)
    assert line.startswith(
        "kubeflow.profiles[production-models]: retains the profile, its namespace"
    )

    def and_allow_it(config: dict[str, Any]) -> None:
        drop_production_models(config)
        config["kubeflow-eks:kubeflow"]["allowDeletion"] = ["Profile/production-models"]

    [line] = _compare(_edited(tmp_path, "prod", and_allow_it), "prod", capsys)
    assert line.startswith("kubeflow.profiles[production-models]: deletes the profile")


def test_gpu_groups_removed_or_rebuilt_and_a_version_bump_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        groups = config["kubeflow-eks:gpuNodeGroups"]
        groups[0]["instanceTypes"] = ["g6.4xlarge"]
        config["kubeflow-eks:gpuNodeGroups"] = groups[:1]
        config["kubeflow-eks:kubernetesVersion"] = "1.35"

    def older_kubernetes(config: dict[str, Any]) -> None:
        config["kubeflow-eks:kubernetesVersion"] = "1.34"

    old = _edited(tmp_path, "prod", older_kubernetes, side="old")
    lines = _compare(_edited(tmp_path, "prod", edit), "prod", capsys, old=old)
    assert lines == [
        "kubernetesVersion: upgrades 1.34 -> 1.35: the control plane, then every node group "
        "(nodes roll), then add-ons and charts",
        "gpuNodeGroups[gpu-multi-spot]: deletes the node group: its nodes are drained and "
        "running jobs and notebooks on them are evicted",
        "gpuNodeGroups[gpu-ondemand]: replaces every node (instance_types changed): pods on "
        "them are evicted",
        f"systemNodeGroup: upgrades {ROLLS.format('1.34.9-20260714', '1.35.6-20260714')}",
    ]


def test_a_node_ami_release_edit_names_each_group_it_rolls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def pin_one_group(config: dict[str, Any]) -> None:
        config["kubeflow-eks:gpuNodeGroups"][1]["amiReleaseVersion"] = "1.35.6-20260801"

    lines = _compare(_edited(tmp_path, "prod", pin_one_group), "prod", capsys)
    rolls = ROLLS.format("1.35.6-20260714", "1.35.6-20260801")
    assert lines == [f"gpuNodeGroups[gpu-multi-spot]: upgrades {rolls}"]

    def security_bump(config: dict[str, Any]) -> None:
        config["kubeflow-eks:nodeAmiReleases"] = {"AL2023": "1.35.6-20260801"}

    lines = _compare(_edited(tmp_path, "prod", security_bump), "prod", capsys)
    assert [line.split(":", 1)[0] for line in lines] == [
        "systemNodeGroup",
        "gpuNodeGroups[gpu-multi-spot]",
        "gpuNodeGroups[gpu-ondemand]",
    ]
    assert all("1.35.6-20260714 -> 1.35.6-20260801" in line for line in lines)


def test_an_unchanged_stack_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _compare(_edited(tmp_path, "onprem", lambda config: None), "onprem", capsys)
    assert lines == [f"deletes and replaces nothing that {STACKS / 'Pulumi.onprem.yaml'} deployed"]


def test_compared_to_needs_exactly_one_new_file(capsys: pytest.CaptureFixture[str]) -> None:
    prod = str(STACKS / "Pulumi.prod.yaml")
    assert check.main([prod, prod, "--compared-to", prod]) == 2
    assert check.main([prod, "--compared-to"]) == 2
    assert "--compared-to OLD_STACK_FILE" in capsys.readouterr().err
