"""NVIDIA's DCGM exporter (on premises): only on the GPU groups' nodes, tolerating their taints."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from components.gpu.dcgm_exporter import DcgmExporterArgs, dcgm_exporter_objects
from model import OnpremGpuGroup, Taint

IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"
DGX = OnpremGpuGroup(
    name="dgx",
    labels={"node-role.example.org/gpu": "dgx"},
    taints=(Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule"),),
)
RTX = OnpremGpuGroup(
    name="rtx",
    labels={"node-role.example.org/gpu": "rtx", "lab": "b"},
    taints=(
        Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule"),
        Taint(key="lab", value="b", effect="NoExecute"),
    ),
)


def _pod(*groups: OnpremGpuGroup) -> dict[str, Any]:
    objects = dcgm_exporter_objects(DcgmExporterArgs(gpu_groups=groups, image=IMAGE))
    [daemon_set] = [o for o in objects if o["kind"] == "DaemonSet"]
    pod: dict[str, Any] = daemon_set["spec"]["template"]["spec"]
    return pod


def test_it_runs_only_where_a_group_s_labels_all_match() -> None:
    terms = _pod(DGX, RTX)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "node-role.example.org/gpu", "operator": "In", "values": ["dgx"]}
            ]
        },
        {
            "matchExpressions": [
                {"key": "lab", "operator": "In", "values": ["b"]},
                {"key": "node-role.example.org/gpu", "operator": "In", "values": ["rtx"]},
            ]
        },
    ]


def test_it_tolerates_each_taint_of_the_groups_once_and_nothing_else() -> None:
    assert _pod(DGX, RTX)["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        {"key": "lab", "operator": "Equal", "value": "b", "effect": "NoExecute"},
    ]


def test_it_labels_series_with_the_pod_holding_each_gpu() -> None:
    pod = _pod(DGX)
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DCGM_EXPORTER_KUBERNETES"] == "true"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/kubelet/pod-resources" in mounts
    assert container["ports"] == [{"name": "metrics", "containerPort": 9400}]


def test_the_objects_are_valid_kubernetes() -> None:
    for obj in dcgm_exporter_objects(DcgmExporterArgs(gpu_groups=(DGX, RTX), image=IMAGE)):
        kubernetes_validate.validate(obj, "1.34.0", strict=True)
