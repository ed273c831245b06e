"""The NVIDIA device plugin: tolerations, placement, time-slicing, and when it is skipped."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.gpu.device_plugin import (
    DevicePluginArgs,
    NvidiaDevicePlugin,
    device_plugin_values,
    needs_device_plugin,
)
from model import DevicePlugin, EksGpuGroup, OnpremGpuGroup, Taint
from tests.kubeflow.conftest import GPU_A10, GPU_BOTTLEROCKET
from tests.pulumi_mocks import RecordingMocks, run_program

RELEASE = "kubernetes:helm.sh/v3:Release"
GPU_H100 = EksGpuGroup(
    name="h100",
    instance_types=("p5.48xlarge",),
    taints=(
        Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule"),
        Taint(key="tier", value="premium", effect="NoExecute"),
    ),
)


def _args(*groups: Any, replicas: int = 0) -> DevicePluginArgs:
    return DevicePluginArgs(
        DevicePlugin(chart_version="0.20.0", time_slicing_replicas=replicas), gpu_groups=groups
    )


def _terms(values: dict[str, Any]) -> list[dict[str, Any]]:
    return values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]


def test_tolerations_are_exactly_the_served_groups_taints() -> None:
    values = device_plugin_values(_args(GPU_A10, GPU_H100))
    assert values["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        {"key": "tier", "operator": "Equal", "value": "premium", "effect": "NoExecute"},
    ]


def test_mixed_cluster_runs_only_on_groups_without_a_bundled_plugin() -> None:
    values = device_plugin_values(_args(GPU_A10, GPU_BOTTLEROCKET))
    assert _terms(values) == [
        {
            "matchExpressions": [
                {"key": "kubeflow-eks.io/gpu-group", "operator": "In", "values": ["a10g"]}
            ]
        }
    ]
    # The Bottlerocket group's extra taint is not tolerated: nothing of ours runs there.
    assert all(t["key"] != "dedicated" for t in values["tolerations"])


def test_only_bottlerocket_groups_means_no_plugin() -> None:
    assert not needs_device_plugin(_args(GPU_BOTTLEROCKET))
    assert not needs_device_plugin(_args())


def test_time_slicing_shares_each_gpu() -> None:
    values = device_plugin_values(_args(GPU_A10, replicas=4))
    config = values["config"]
    assert config["default"] in config["map"]
    parsed = yaml.safe_load(config["map"][config["default"]])
    assert parsed["sharing"]["timeSlicing"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 4}
    ]
    assert "config" not in device_plugin_values(_args(GPU_A10))


def test_onprem_groups_are_found_by_their_labels() -> None:
    onprem = OnpremGpuGroup(name="lab", labels={"lab.example/gpu": "a6000"})
    values = device_plugin_values(_args(onprem))
    assert _terms(values) == [
        {"matchExpressions": [{"key": "lab.example/gpu", "operator": "In", "values": ["a6000"]}]}
    ]


def _device_plugin_program(*groups: Any, replicas: int = 0) -> Any:
    def program() -> dict[str, Any]:
        provider = k8s.Provider("k8s", kubeconfig="{}")
        NvidiaDevicePlugin(
            "gpu",
            _args(*groups, replicas=replicas),
            opts=pulumi.ResourceOptions(providers=[provider]),
        )
        return {}

    return program


def test_device_plugin_release_inputs() -> None:
    run = run_program({}, _device_plugin_program(GPU_A10, GPU_BOTTLEROCKET, replicas=2))
    [release] = run.mocks.of_type(RELEASE)
    inputs = release.inputs
    assert inputs["chart"] == "nvidia-device-plugin"
    assert inputs["version"] == "0.20.0"
    assert inputs["repositoryOpts"]["repo"] == "https://nvidia.github.io/k8s-device-plugin"
    assert inputs["namespace"] == "nvidia-device-plugin"
    assert inputs["values"]["tolerations"] == GPU_A10.tolerations()
    assert "replicas: 2" in next(iter(inputs["values"]["config"]["map"].values()))


def test_no_release_when_every_group_bundles_the_plugin() -> None:
    mocks = RecordingMocks()
    run_program({}, _device_plugin_program(GPU_BOTTLEROCKET), mocks=mocks)
    assert mocks.of_type(RELEASE) == []
    assert len(mocks.of_type("kubeflow-eks:device_plugin:NvidiaDevicePlugin")) == 1
