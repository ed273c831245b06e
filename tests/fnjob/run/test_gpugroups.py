"""The notebook contract's GPU groups file, and where GPU pods go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fnjob.options import Scheduling
from fnjob.run.gpugroups import (
    GpuGroupsFileError,
    gpu_groups_from_environment,
    load_gpu_groups,
    place_gpus,
)

SPOT_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
    {"key": "capacity", "operator": "Equal", "value": "spot", "effect": "NoSchedule"},
]
# As the contract gives it, plus keys a newer stack might add.
GROUPS = {
    "version": 1,
    "default": "gpu-spot",
    "generatedBy": "kubeflow-eks (a key this fnjob does not know)",
    "groups": [
        {
            "name": "gpu-spot",
            "resource": "nvidia.com/gpu",
            "gpusPerNode": 1,
            "gpuModel": "NVIDIA A10G",
            "nodeSelector": {"kubeflow-eks.io/gpu-group": "gpu-spot"},
            "tolerations": SPOT_TOLERATIONS,
            "instanceTypes": ["g5.xlarge"],
        },
        {
            "name": "gpu-multi",
            "resource": "nvidia.com/gpu",
            "gpusPerNode": 4,
            "gpuModel": "NVIDIA L4",
            "nodeSelector": {"kubeflow-eks.io/gpu-group": "gpu-multi"},
            "tolerations": SPOT_TOLERATIONS[:1],
        },
        {
            "name": "onprem-lab",
            "resource": "nvidia.com/gpu",
            "gpusPerNode": None,
            "gpuModel": None,
            "nodeSelector": {"lab": "gpu"},
            "tolerations": [],
        },
    ],
}


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "gpu-groups.json"
    path.write_text(json.dumps(document))
    return path


def test_default_group_is_used_and_said_to_be_the_default(tmp_path: Path) -> None:
    groups = load_gpu_groups(write(tmp_path, GROUPS))
    placement = place_gpus(1, Scheduling(), groups)
    assert placement is not None
    assert placement.resource == "nvidia.com/gpu"
    assert [dict(t) for t in placement.tolerations] == SPOT_TOLERATIONS
    assert placement.node_selector == {"kubeflow-eks.io/gpu-group": "gpu-spot"}
    described = placement.describe()
    assert "gpu-spot (NVIDIA A10G, 1 per node)" in described
    assert f"the default in {tmp_path / 'gpu-groups.json'}" in described


def test_a_named_group_is_used_and_explicit_placement_still_overrides(tmp_path: Path) -> None:
    groups = load_gpu_groups(write(tmp_path, GROUPS))
    placement = place_gpus(4, Scheduling(gpu_group="gpu-multi"), groups)
    assert placement is not None and placement.group is not None
    assert placement.group.name == "gpu-multi" and not placement.by_default
    overridden = place_gpus(
        1,
        Scheduling(gpu_group="gpu-spot", gpu_node_selector={"pool": "mine"}, gpu_tolerations=()),
        groups,
    )
    assert overridden is not None
    assert overridden.node_selector == {"pool": "mine"}
    assert overridden.tolerations == ()


def test_unknown_group_lists_the_known_ones(tmp_path: Path) -> None:
    groups = load_gpu_groups(write(tmp_path, GROUPS))
    with pytest.raises(ValueError) as caught:
        place_gpus(1, Scheduling(gpu_group="gpu-ondemand"), groups)
    assert "gpu_group='gpu-ondemand' is not one of the GPU groups" in str(caught.value)
    assert "gpu-spot, gpu-multi, onprem-lab" in str(caught.value)


def test_too_many_gpus_names_the_groups_that_fit(tmp_path: Path) -> None:
    groups = load_gpu_groups(write(tmp_path, GROUPS))
    with pytest.raises(ValueError) as caught:
        place_gpus(2, Scheduling(), groups)
    message = str(caught.value)
    assert "gpus=2 does not fit GPU group gpu-spot (NVIDIA A10G, 1 per node)" in message
    assert "gpu-multi (NVIDIA L4, 4 per node)" in message
    assert "size unknown: onprem-lab" in message
    # Unknown hardware is not refused.
    assert place_gpus(8, Scheduling(gpu_group="onprem-lab"), groups) is not None


def test_without_a_groups_file_gpus_get_the_default_placement() -> None:
    placement = place_gpus(2, Scheduling(), None)
    assert placement is not None and placement.group is None
    assert [dict(t) for t in placement.tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert placement.node_selector == {"nvidia.com/gpu.present": "true"}
    with pytest.raises(ValueError, match="needs the cluster's GPU groups: set FNJOB_GPU_GROUPS"):
        place_gpus(1, Scheduling(gpu_group="gpu-spot"), None)
    with pytest.raises(ValueError, match=r"needs GPUs: ask for Resources\(gpus=N\)"):
        place_gpus(0, Scheduling(gpu_group="gpu-spot"), None)
    assert place_gpus(0, Scheduling(), None) is None


def test_a_stack_without_gpu_groups_says_so(tmp_path: Path) -> None:
    groups = load_gpu_groups(write(tmp_path, {"version": 1, "default": None, "groups": []}))
    with pytest.raises(ValueError, match="lists no GPU group"):
        place_gpus(1, Scheduling(), groups)


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({**GROUPS, "version": 2}, "version 2 is not supported; this fnjob reads version 1"),
        ({"groups": []}, "version None is not supported"),
        ({**GROUPS, "default": "gpu-big"}, "default 'gpu-big' is not one of the groups"),
        ({**GROUPS, "groups": [{"name": "a", "gpusPerNode": 0}]}, "gpusPerNode=0"),
        ({**GROUPS, "groups": "gpu-spot"}, "groups must be a list"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, document: Any, words: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(GpuGroupsFileError) as caught:
        load_gpu_groups(path)
    assert str(path) in str(caught.value)
    assert words in str(caught.value)


def test_the_environment_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GROUPS)
    assert gpu_groups_from_environment({}) is None
    groups = gpu_groups_from_environment({"FNJOB_GPU_GROUPS": str(path)})
    assert groups is not None and groups.default == "gpu-spot"
    with pytest.raises(GpuGroupsFileError, match="cannot read the GPU groups file"):
        gpu_groups_from_environment({"FNJOB_GPU_GROUPS": str(tmp_path / "missing.json")})
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(GpuGroupsFileError, match="is not valid JSON"):
        load_gpu_groups(tmp_path / "broken.json")
