"""NVIDIA device plugin values: tolerations, placement, time-slicing, and when it is skipped."""

from __future__ import annotations

import pytest
import yaml

from components.gpu.device_plugin import (
    DevicePluginArgs,
    DevicePluginConfigError,
    device_plugin_values,
    needs_device_plugin,
)
from components.gpu.scheduling import GpuScheduling, SchedulingConfigError, Taint
from tests.kubeflow.conftest import GPU_A10, GPU_BOTTLEROCKET

GPU_H100 = GpuScheduling(
    name="h100",
    taints=(Taint("nvidia.com/gpu", "true", "NoSchedule"), Taint("tier", "premium", "NoExecute")),
)


def _terms(values: dict[str, object]) -> list[dict[str, object]]:
    return values["affinity"]["nodeAffinity"][  # type: ignore[index]
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]


def test_tolerations_are_exactly_the_served_groups_taints() -> None:
    values = device_plugin_values(DevicePluginArgs(gpu_groups=(GPU_A10, GPU_H100)))
    assert values["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        {"key": "tier", "operator": "Equal", "value": "premium", "effect": "NoExecute"},
    ]


def test_mixed_cluster_runs_only_on_groups_without_a_bundled_plugin() -> None:
    values = device_plugin_values(DevicePluginArgs(gpu_groups=(GPU_A10, GPU_BOTTLEROCKET)))
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
    args = DevicePluginArgs(gpu_groups=(GPU_BOTTLEROCKET,))
    assert not needs_device_plugin(args)
    with pytest.raises(DevicePluginConfigError, match="bundle their own"):
        device_plugin_values(args)
    assert not needs_device_plugin(DevicePluginArgs(gpu_groups=()))


def test_time_slicing_shares_each_gpu() -> None:
    values = device_plugin_values(DevicePluginArgs(gpu_groups=(GPU_A10,), time_slicing_replicas=4))
    config = values["config"]
    assert config["default"] in config["map"]
    parsed = yaml.safe_load(config["map"][config["default"]])
    assert parsed["sharing"]["timeSlicing"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 4}
    ]
    assert "config" not in device_plugin_values(DevicePluginArgs(gpu_groups=(GPU_A10,)))


def test_onprem_groups_are_found_by_their_labels() -> None:
    onprem = GpuScheduling(name="lab", labels={"lab.example/gpu": "a6000"}, managed_labels=False)
    values = device_plugin_values(DevicePluginArgs(gpu_groups=(onprem,)))
    assert _terms(values) == [
        {"matchExpressions": [{"key": "lab.example/gpu", "operator": "In", "values": ["a6000"]}]}
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chart_version": "0.17.0"}, "chart_version '0.17.0' is not allowed"),
        ({"time_slicing_replicas": 1}, "time_slicing_replicas 1 is not allowed"),
        ({"time_slicing_replicas": -2}, "time_slicing_replicas -2"),
        ({"namespace": "GPU"}, "namespace 'GPU'"),
    ],
)
def test_invalid_device_plugin_args(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DevicePluginConfigError, match=message):
        DevicePluginArgs(gpu_groups=(GPU_A10,), **kwargs)  # type: ignore[arg-type]


def test_invalid_scheduling_values_name_what_is_allowed() -> None:
    with pytest.raises(SchedulingConfigError, match="effect 'NoWay' is not allowed"):
        Taint("nvidia.com/gpu", "true", "NoWay")
    with pytest.raises(SchedulingConfigError, match="GPU group name 'GPU_A'"):
        GpuScheduling(name="GPU_A")
    with pytest.raises(SchedulingConfigError, match="needs labels"):
        GpuScheduling(name="lab", managed_labels=False)
    assert Taint.parse("nvidia.com/gpu=true:NoSchedule") == Taint(
        "nvidia.com/gpu", "true", "NoSchedule"
    )
