"""One setting walked from the stack file to the cluster: a GPU group's taints.

They are typed once (``gpuNodeGroups[].taints``) and reach, as the same ``model.Taint``
values, the EKS node groups that carry them, the NVIDIA device plugin that must tolerate
them, the notebook form's GPU choice, and the GPU groups file fnjob's jobs are placed by.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fnjob.options import Scheduling
from fnjob.run.gpugroups import load_gpu_groups, place_gpus
from tests.pulumi_mocks import STACKS, StackRun, file_config, reveal, run_program

GROUP = "gpu-vision"
# As a stack file writes them: with a value, and without one (any value matches).
TAINTS = [
    {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
    {"key": "example.org/team", "value": "vision", "effect": "NoExecute"},
    {"key": "example.org/dedicated", "effect": "PreferNoSchedule"},
]
# What a pod needs to run there, written out by hand from the taints above.
TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    {"key": "example.org/team", "operator": "Equal", "value": "vision", "effect": "NoExecute"},
    {"key": "example.org/dedicated", "operator": "Exists", "effect": "PreferNoSchedule"},
]
EKS_EFFECTS = {
    "NoSchedule": "NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
}


def _run(tmp: Path) -> StackRun:
    document = yaml.safe_load((STACKS / "Pulumi.dev.yaml").read_text())
    document["config"]["kubeflow-eks:gpuNodeGroups"] = [
        {"name": GROUP, "instanceTypes": ["g5.xlarge"], "maxSize": 2, "taints": TAINTS}
    ]
    path = tmp / "Pulumi.taint-walk.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return run_program(file_config(path), stack="taint-walk")


def _kubeflow_objects(run: StackRun) -> list[dict[str, Any]]:
    groups = run.mocks.of_type("kubernetes:yaml/v2:ConfigGroup")
    return [o for g in groups if "-kubeflow-" in g.name for o in reveal(g.inputs["objs"])]


def test_a_gpu_groups_taints_reach_every_place_identically(tmp_path: Path) -> None:
    run = _run(tmp_path)
    mocks = run.mocks

    # The EKS node groups (one per AZ) carry the taints, in EKS's spelling of the effect.
    node_groups = [
        r.inputs for r in mocks.of_type("aws:eks/nodeGroup:NodeGroup") if GROUP in r.name
    ]
    assert len(node_groups) >= 2
    for node_group in node_groups:
        assert node_group["taints"] == [
            {"key": t["key"], "value": t.get("value", ""), "effect": EKS_EFFECTS[t["effect"]]}
            for t in TAINTS
        ]

    # The device plugin tolerates exactly them.
    [plugin] = [
        r.inputs
        for r in mocks.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs.get("chart") == "nvidia-device-plugin"
    ]
    assert plugin["values"]["tolerations"] == TOLERATIONS

    objects = _kubeflow_objects(run)
    # The notebook form's GPU group choice tolerates them.
    [form] = [
        yaml.safe_load(o["data"]["spawner_ui_config.yaml"])["spawnerFormDefaults"]
        for o in objects
        if o["kind"] == "ConfigMap" and "spawner_ui_config.yaml" in (o.get("data") or {})
    ]
    [choice] = form["tolerationGroup"]["options"]
    assert choice["groupKey"] == GROUP
    assert choice["tolerations"] == TOLERATIONS

    # Every profile's GPU groups file lists them, and fnjob places a GPU job with them.
    files = [
        o["data"]["gpu-groups.json"]
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "fnjob-gpu-groups"
    ]
    assert files
    for index, text in enumerate(files):
        [group] = json.loads(text)["groups"]
        assert group["name"] == GROUP
        assert group["tolerations"] == TOLERATIONS
        path = tmp_path / f"gpu-groups-{index}.json"
        path.write_text(text)
        placement = place_gpus(1, Scheduling(), load_gpu_groups(path))
        assert placement is not None
        assert [dict(t) for t in placement.tolerations] == TOLERATIONS
