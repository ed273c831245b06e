"""Everything the stack installs is pinned, per Kubernetes version, in model/versions.yaml."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
import yaml

from components.aws.addons import NODE_ADDONS
from components.aws.monitoring import CLOUDWATCH_ADDON, NODE_MONITORING_ADDON
from model import versions
from stack import check
from tests.pulumi_mocks import STACKS, RecordingMocks, run_program, stack_file_config

K8S = "kubeflow-eks:kubernetesVersion"
# Overrides of the right form; the releases EKS would be given, not necessarily published ones.
STACK_WIDE = "1.35.6-20260801"
ONE_GROUP = "1.35.6-20260901"
EKS_ADDONS = {
    "vpc-cni",
    "kube-proxy",
    "aws-ebs-csi-driver",
    *NODE_ADDONS,
    NODE_MONITORING_ADDON,
    CLOUDWATCH_ADDON,
}
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
    # The AMI release of AL2023 nodes (standard and NVIDIA) carries the kubelet of this minor.
    assert re.fullmatch(rf"{re.escape(kubernetes)}\.\d+-\d{{8}}", pins.node_ami_releases["AL2023"])
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


def test_every_node_ami_pin_says_where_it_was_read() -> None:
    table = yaml.safe_load(versions._TABLE.read_text())
    for kubernetes in versions.SUPPORTED_KUBERNETES_VERSIONS:
        node_amis = table["kubernetes"][kubernetes]["nodeAmis"]
        assert set(node_amis) == set(versions.AMI_FAMILIES)
        for family, pin in node_amis.items():
            if pin["release"] is None:  # an unverified family says so instead of a source
                assert pin["source"].startswith("not verified"), (kubernetes, family)
            else:
                assert "amazon-eks-ami" in pin["source"] or "bottlerocket" in pin["source"]


@pytest.mark.parametrize(
    ("node_amis", "message"),
    [
        (None, "kubernetes.1.35.nodeAmis: missing; pin the AMI release of each of"),
        (
            {"BOTTLEROCKET": {"release": None, "source": "not verified"}},
            "kubernetes.1.35.nodeAmis.AL2023: missing",
        ),
        (
            {
                "AL2023": {"release": "1.34.9-20260714", "source": "amazon-eks-ami v20260714"},
                "BOTTLEROCKET": {"release": None, "source": "not verified"},
            },
            "nodeAmis.AL2023.release: '1.34.9-20260714': use a 1.35.x release",
        ),
        (
            {
                "AL2023": {"release": "1.35.6-20260714"},
                "BOTTLEROCKET": {"release": None, "source": "not verified"},
            },
            "nodeAmis.AL2023.source: say where the release was read",
        ),
    ],
    ids=["no-table", "no-family", "other-minor", "no-source"],
)
def test_a_missing_or_wrong_ami_pin_is_named_by_version_and_family(
    node_amis: object, message: str
) -> None:
    with pytest.raises(versions.VersionTableError) as caught:
        versions.node_ami_releases("1.35", node_amis)
    assert message in str(caught.value)
    assert str(caught.value).startswith("model/versions.yaml: kubernetes.1.35.nodeAmis")


def _node_releases(mocks: RecordingMocks) -> dict[str, str]:
    return {
        r.name: r.inputs.get("releaseVersion") for r in mocks.of_type("aws:eks/nodeGroup:NodeGroup")
    }


@pytest.mark.parametrize("kubernetes", versions.SUPPORTED_KUBERNETES_VERSIONS)
def test_every_node_group_runs_the_pinned_ami_release(kubernetes: str) -> None:
    config = stack_file_config("prod", **{"kubeflow-eks:kubernetesVersion": kubernetes})
    mocks = run_program(config, stack="prod").mocks
    releases = _node_releases(mocks)
    assert len(releases) >= 3, "the system group and the GPU groups (per AZ)"
    assert set(releases.values()) == {versions.pins(kubernetes).node_ami_releases["AL2023"]}
    for group in mocks.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert group.inputs["releaseVersion"].startswith(f"{group.inputs['version']}.")


def test_changing_kubernetes_version_moves_every_node_group_to_that_versions_pin() -> None:
    before = _node_releases(run_program(stack_file_config("dev", **{K8S: "1.34"})).mocks)
    after = _node_releases(run_program(stack_file_config("dev", **{K8S: "1.35"})).mocks)
    assert before.keys() == after.keys()
    assert set(before.values()) == {"1.34.9-20260714"}
    assert set(after.values()) == {"1.35.6-20260714"}


def test_a_group_or_stack_wide_ami_release_overrides_the_pin() -> None:
    config = stack_file_config("prod", **{"kubeflow-eks:nodeAmiReleases": {"AL2023": STACK_WIDE}})
    groups = config["kubeflow-eks:gpuNodeGroups"]
    groups = [{**groups[0], "amiReleaseVersion": ONE_GROUP}, *groups[1:]]
    config["kubeflow-eks:gpuNodeGroups"] = groups
    mocks = run_program(config, stack="prod").mocks
    by_group = {
        r.inputs["nodeGroupNamePrefix"]: r.inputs["releaseVersion"]
        for r in mocks.of_type("aws:eks/nodeGroup:NodeGroup")
    }
    first = groups[0]["name"]
    assert {r for p, r in by_group.items() if p.startswith(f"{first}-")} == {ONE_GROUP}
    assert {r for p, r in by_group.items() if not p.startswith(f"{first}-")} == {STACK_WIDE}
    assert by_group["system-"] == STACK_WIDE


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
