"""Everything the stack installs is pinned, per Kubernetes version, in model/versions.yaml."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
import yaml

from components.aws.addons import NODE_ADDONS
from model import versions
from stack import check
from tests.pulumi_mocks import STACKS, run_program, stack_file_config

EKS_ADDONS = {"vpc-cni", "kube-proxy", "aws-ebs-csi-driver", *NODE_ADDONS}
# The chart version from which the cluster-autoscaler's ClusterRole can read resource.k8s.io
# (DRA), which autoscaler 1.34 and later wait for before they scale anything.
FIRST_CHART_WITH_DRA_RBAC = (9, 54, 0)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.lstrip("v").split("."))


@pytest.mark.parametrize("kubernetes", versions.SUPPORTED_KUBERNETES_VERSIONS)
def test_every_supported_version_pins_everything(kubernetes: str) -> None:
    pins = versions.pins(kubernetes)
    assert set(pins.addons) == EKS_ADDONS
    for addon, version in pins.addons.items():
        assert re.fullmatch(r"v\d+\.\d+\.\d+-eksbuild\.\d+", version), (addon, version)
    assert pins.addons["kube-proxy"].startswith(f"v{kubernetes}.")
    assert pins.autoscaler_image.startswith(f"v{kubernetes}.")
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pins.autoscaler_image)
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins.load_balancer_controller_chart)
    assert pins.kubectl.startswith(f"v{kubernetes}.")
    if _version(kubernetes) >= (1, 34):
        assert _version(pins.autoscaler_chart) >= FIRST_CHART_WITH_DRA_RBAC


@pytest.mark.parametrize("kubernetes", versions.SUPPORTED_KUBERNETES_VERSIONS)
def test_the_program_installs_exactly_the_pins(kubernetes: str) -> None:
    config = stack_file_config("dev", **{"kubeflow-eks:kubernetesVersion": kubernetes})
    mocks = run_program(config, stack="dev").mocks
    pins = versions.pins(kubernetes)
    addons = {
        a.inputs["addonName"]: a.inputs["addonVersion"]
        for a in mocks.of_type("aws:eks/addon:Addon")
    }
    [cluster] = mocks.of_type("eks:index:Cluster")
    addons["kube-proxy"] = cluster.inputs["kubeProxyAddonOptions"]["version"]
    addons["vpc-cni"] = cluster.inputs["vpcCniOptions"]["addonVersion"]
    assert addons == dict(pins.addons)
    releases = {r.inputs["chart"]: r.inputs for r in mocks.of_type("kubernetes:helm.sh/v3:Release")}
    assert releases["cluster-autoscaler"]["version"] == pins.autoscaler_chart
    assert releases["nvidia-device-plugin"]["version"] == versions.chart("nvidia-device-plugin")
    for release in releases.values():
        assert release["version"], "every chart is pinned"


def test_a_version_past_eks_standard_support_is_named_with_its_cost_and_the_way_out() -> None:
    pins = versions.pins("1.34")
    assert pins.support_warning(pins.standard_support_until) is None
    day_after = pins.standard_support_until + datetime.timedelta(days=1)
    warning = pins.support_warning(day_after)
    assert warning is not None
    assert "left EKS standard support on 2026-12-02" in warning
    assert "extended support costs more per cluster-hour" in warning
    assert warning.endswith("move to 1.35")
    ended = pins.support_warning(pins.extended_support_until + datetime.timedelta(days=1))
    assert ended is not None and "EKS upgrades such clusters on its own" in ended


def test_every_version_has_its_support_window() -> None:
    for version in versions.SUPPORTED_KUBERNETES_VERSIONS:
        pins = versions.pins(version)
        assert pins.standard_support_until < pins.extended_support_until


def test_stack_check_warns_about_a_stack_in_extended_support(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load((STACKS / "Pulumi.dev.yaml").read_text())
    document["config"]["kubeflow-eks:kubernetesVersion"] = "1.33"  # past standard support
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(document))
    assert check.main([str(path)]) == 0
    assert f"{path}: warning: kubernetesVersion 1.33 left EKS" in capsys.readouterr().out
