"""stack.check warns about settings that let a shared GPU platform overspend, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import check
from stack.budget import budget_warnings
from stack.load import load_stack_file
from tests.pulumi_mocks import STACKS


def _stack(tmp_path: Path, stack: str, edit: Any) -> Path:
    document = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())
    edit(document["config"])
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _warnings(path: Path) -> dict[str, str]:
    cfg = load_stack_file(path, require_secrets=False)
    return {w.key: w.text for w in budget_warnings(cfg)}


def test_gpu_capacity_past_the_quotas_sum_is_named(tmp_path: Path) -> None:
    # prod: two zonal GPU groups over three AZs; two profiles at the default quota of 4.
    warnings = _warnings(STACKS / "Pulumi.prod.yaml")
    assert warnings["gpuNodeGroups"].startswith(
        "the GPU groups can grow to 18 GPUs, more than the profiles' quotas allow together (8)"
    )

    def raise_quotas(config: dict[str, Any]) -> None:
        config["kubeflow-eks:kubeflow"]["defaultQuota"] = {"gpus": 9}

    assert "gpuNodeGroups" not in _warnings(_stack(tmp_path, "prod", raise_quotas))

    def a_profile_without_gpu_limit(config: dict[str, Any]) -> None:
        config["kubeflow-eks:kubeflow"]["profiles"][0]["quota"] = {"cpu": "64"}

    assert "gpuNodeGroups" not in _warnings(_stack(tmp_path, "prod", a_profile_without_gpu_limit))


def test_culling_off_and_spot_only_gpus_are_named(tmp_path: Path) -> None:
    def culling_off(config: dict[str, Any]) -> None:
        config["kubeflow-eks:kubeflow"]["culling"] = {"enabled": False}

    warnings = _warnings(_stack(tmp_path, "dev", culling_off))
    assert "idle notebooks are never stopped" in warnings["kubeflow.culling.enabled"]
    # dev's only GPU group is spot.
    assert "every GPU group is SPOT" in warnings["gpuNodeGroups[].capacityType"]
    assert "gpuNodeGroups[].capacityType" not in _warnings(STACKS / "Pulumi.prod.yaml")


def test_check_prints_the_warnings_and_still_passes(capsys: pytest.CaptureFixture[str]) -> None:
    path = STACKS / "Pulumi.dev.yaml"
    assert check.main([str(path)]) == 0
    assert f"{path}: warning: gpuNodeGroups[].capacityType: every GPU group is SPOT" in (
        capsys.readouterr().out
    )
