"""GPU node groups: the one GPU-group type, and the device plugin's settings."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from model import catalog, versions
from model.aws import CapacityType, ami_release_rule
from model.base import (
    MISSING,
    LabelKey,
    Labels,
    Model,
    Rules,
    UniqueStrings,
    custom,
    dns_label,
    label_value,
    matches,
)

# Labels every GPU node the stack creates carries, besides the user's own.
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_GROUP_LABEL = "kubeflow-eks.io/gpu-group"
# The cluster-autoscaler's AWS provider waits for a node with this label to report its GPUs
# before counting it ready, so it does not add a second (paid) GPU node meanwhile.
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
GPU_RESOURCE = "nvidia.com/gpu"
STACK_LABELS = (GPU_PRESENT_LABEL, GPU_GROUP_LABEL, ACCELERATOR_LABEL)
GpuAmiType = Literal[
    "AL2023_x86_64_NVIDIA",
    "AL2023_ARM_64_NVIDIA",
    "BOTTLEROCKET_x86_64_NVIDIA",
    "BOTTLEROCKET_ARM_64_NVIDIA",
]
GPU_AMI_TYPES: Mapping[GpuAmiType, catalog.Architecture] = {
    "AL2023_x86_64_NVIDIA": "x86_64",
    "AL2023_ARM_64_NVIDIA": "arm64",
    "BOTTLEROCKET_x86_64_NVIDIA": "x86_64",
    "BOTTLEROCKET_ARM_64_NVIDIA": "arm64",
}
# Node-group name prefixes are at most 37 characters (Pulumi adds a 26-character suffix);
# a GPU group's prefix is "<name>-<zone>-", so names stay well inside it.
GPU_GROUP_NAME_MAX = 28


class Taint(Model):
    """A node taint, as the node group sets it and as pods must tolerate it."""

    key: LabelKey
    value: Annotated[str, AfterValidator(label_value)] = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    @model_validator(mode="before")
    @classmethod
    def _object_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            key_value, _, effect = data.partition(":")
            key, _, value = key_value.partition("=")
            shown = (
                f'{{key: {key or GPU_RESOURCE}, value: "{value}", '
                f"effect: {effect or 'NoSchedule'}}}"
            )
            raise custom("taint_string", f"write the taint as an object: {shown}")
        return data

    def toleration(self) -> dict[str, Any]:
        """The toleration that matches exactly this taint."""
        if self.value:
            return {
                "key": self.key,
                "operator": "Equal",
                "value": self.value,
                "effect": self.effect,
            }
        return {"key": self.key, "operator": "Exists", "effect": self.effect}

    def __str__(self) -> str:
        text = f"{self.key}={self.value}" if self.value else self.key
        return f"{text}:{self.effect}"


DEFAULT_GPU_TAINT = Taint(key=GPU_RESOURCE, value="true", effect="NoSchedule")


class GpuGroup(Model):
    """One group of GPU nodes: what places a pod on them. The one GPU-group type: the node
    group, the device plugin, the notebook form and fnjob all read it."""

    name: Annotated[str, dns_label(GPU_GROUP_NAME_MAX, "gpu-spot")] = Field(
        description="DNS label naming the group; EKS nodes get kubeflow-eks.io/gpu-group=<name>"
    )
    labels: Labels = Field(default_factory=dict, description="extra node labels")
    taints: tuple[Taint, ...] = Field(
        default=(DEFAULT_GPU_TAINT,),
        description="node taints as {key, value, effect}; [] for none",
    )

    @field_validator("taints", mode="after")
    @classmethod
    def _distinct_taints(cls, taints: tuple[Taint, ...]) -> tuple[Taint, ...]:
        keys = [(t.key, t.effect) for t in taints]
        if len(set(keys)) != len(keys):
            raise custom("unique", "each taint key and effect may appear once")
        return taints

    # Overridden by the EKS and on-premises groups.
    @property
    def gpus_per_node(self) -> int | None:
        return None

    @property
    def gpu_model(self) -> str | None:
        return None

    @property
    def bundles_device_plugin(self) -> bool:
        """Bottlerocket NVIDIA AMIs ship their own device plugin; ours must not run there."""
        return False

    def selector_labels(self) -> dict[str, str]:
        """Labels that select exactly this group's nodes."""
        raise NotImplementedError

    def tolerations(self) -> list[dict[str, Any]]:
        return [taint.toleration() for taint in self.taints]

    def node_affinity(self) -> dict[str, Any]:
        terms = [
            {
                "matchExpressions": [
                    {"key": key, "operator": "In", "values": [value]}
                    for key, value in sorted(self.selector_labels().items())
                ]
            }
        ]
        return {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }


class OnpremGpuGroup(GpuGroup):
    """GPU servers the stack does not create: found by their own labels."""

    gpus_per_node_: int | None = Field(
        default=None, alias="gpusPerNode", ge=1, le=64, description="GPUs per server, if known"
    )
    gpu_model_: str | None = Field(
        default=None, alias="gpuModel", description="GPU model shown to users, if known"
    )

    @model_validator(mode="after")
    def _selectable(self) -> OnpremGpuGroup:
        rules = Rules()
        if not self.labels:
            rules.add(
                "labels",
                MISSING,
                "list the labels that select this group's servers, e.g. "
                '{nvidia.com/gpu.present: "true"}; without labels nothing selects them',
            )
        rules.raise_if_any()
        return self

    @property
    def gpus_per_node(self) -> int | None:
        return self.gpus_per_node_

    @property
    def gpu_model(self) -> str | None:
        return self.gpu_model_

    def selector_labels(self) -> dict[str, str]:
        return dict(self.labels)


def _reservedlabel_keys(labels: Mapping[str, str]) -> Mapping[str, str]:
    for key in labels:
        if key in STACK_LABELS:
            raise custom("stack_label", f"remove {key}: the stack sets it on every GPU node")
        prefix = key.rpartition("/")[0]
        if prefix.endswith(("kubernetes.io", "k8s.io")):
            raise custom(
                "reserved_label",
                f"remove {key}: EKS managed node groups refuse labels under kubernetes.io and "
                "k8s.io; use your own prefix, e.g. example.org/" + key.rpartition("/")[2],
            )
    return labels


class EksGpuGroup(GpuGroup):
    """A GPU node group the stack creates: managed node groups of NVIDIA instances."""

    labels: Annotated[Labels, AfterValidator(_reservedlabel_keys)] = Field(
        default_factory=dict, description="extra node labels"
    )
    instance_types: UniqueStrings = Field(
        min_length=1,
        # The families are the catalog's (gpu_instances.yaml), never a copy of them.
        description="NVIDIA types of one GPU model and count "
        f"({', '.join(catalog.gpu_families())})",
    )
    ami_type: GpuAmiType = Field(
        default_factory=lambda data: _default_gpu_ami(data.get("instance_types")),
        description="default: AL2023 NVIDIA for the instances' CPU",
    )
    capacity_type: CapacityType = Field(default="ON_DEMAND", description="ON_DEMAND or SPOT")
    min_size: int = Field(
        default=0, ge=0, le=1000, description="fewest nodes (per AZ when zonal); 0 scales from zero"
    )
    max_size: int = Field(default=1, ge=1, le=1000, description="most nodes (per AZ when zonal)")
    desired_size: int = Field(
        default_factory=lambda data: data.get("min_size", 0),
        ge=0,
        le=1000,
        description="default: minSize",
    )
    disk_size_gb: int = Field(
        default=100, ge=20, le=16384, description="encrypted gp3 (Bottlerocket: the data volume)"
    )
    placement: Literal["zonal", "spread"] = Field(
        default="zonal",
        description="zonal: one node group per AZ (a notebook's EBS volume is zonal, so it "
        "comes back in its AZ); spread: one group over all AZs",
    )
    auto_repair: bool = Field(
        default=True,
        description="EKS node auto-repair: a node that stays NotReady is replaced",
    )
    ami_release_version: str | None = Field(
        default=None,
        description="the group's EKS AMI release, e.g. 1.35.6-20260714 (default: "
        "nodeAmiReleases, then the release model/versions.yaml pins)",
    )

    @model_validator(mode="after")
    def _fits(self) -> EksGpuGroup:
        rules = Rules()
        ami_release_rule(rules, self.ami_type, self.ami_release_version)
        known = []
        for index, name in enumerate(self.instance_types):
            entry = catalog.gpu_instance_type(name)
            if entry is None:
                rules.add(f"instanceTypes[{index}]", name, catalog.explain_not_gpu(name))
            else:
                known.append(entry)
        shapes = {(e.gpu_model, e.gpus) for e in known}
        if len(shapes) > 1:
            listed = ", ".join(f"{e.name}: {e.gpus} x {e.gpu_model}" for e in known)
            rules.add(
                "instanceTypes",
                list(self.instance_types),
                f"use one GPU model and count per group ({listed}); the autoscaler's node "
                "template, the notebook form and fnjob describe a group by them",
            )
        architectures = {e.architecture for e in known}
        if known:
            want = GPU_AMI_TYPES[self.ami_type]
            for entry in known:
                if entry.architecture != want:
                    fix = _ami_for(self.ami_type, entry.architecture)
                    rules.add(
                        "amiType",
                        self.ami_type,
                        f"{entry.name} is {entry.architecture}; use amiType {fix}",
                    )
                    break
        elif len(architectures) > 1:
            rules.add("instanceTypes", list(self.instance_types), "use one CPU architecture")
        rules.check_sizes(self.min_size, self.desired_size, self.max_size)
        rules.raise_if_any()
        return self

    @cached_property
    def instances(self) -> tuple[catalog.GpuInstanceType, ...]:
        found = (catalog.gpu_instance_type(t) for t in self.instance_types)
        return tuple(entry for entry in found if entry is not None)

    @property
    def architecture(self) -> catalog.Architecture:
        return self.instances[0].architecture

    @property
    def gpus_per_node(self) -> int:
        return self.instances[0].gpus

    @property
    def gpu_model(self) -> str:
        return self.instances[0].gpu_model

    @property
    def accelerator(self) -> str:
        return self.instances[0].family.accelerator_label

    @property
    def bundles_device_plugin(self) -> bool:
        return self.ami_type.startswith("BOTTLEROCKET")

    def node_labels(self) -> dict[str, str]:
        """Every label the group's nodes carry: the user's, then ours."""
        return {
            **self.labels,
            GPU_PRESENT_LABEL: "true",
            GPU_GROUP_LABEL: self.name,
            ACCELERATOR_LABEL: self.accelerator,
        }

    def selector_labels(self) -> dict[str, str]:
        return {GPU_GROUP_LABEL: self.name}


def _default_gpu_ami(instance_types: Any) -> GpuAmiType:
    entry = catalog.gpu_instance_type(instance_types[0]) if instance_types else None
    arm = entry is not None and entry.architecture == "arm64"
    return "AL2023_ARM_64_NVIDIA" if arm else "AL2023_x86_64_NVIDIA"


def _ami_for(ami_type: str, architecture: str) -> str:
    family = ami_type.split("_", 1)[0]
    return next(
        name
        for name, arch in GPU_AMI_TYPES.items()
        if arch == architecture and name.startswith(family)
    )


class DevicePlugin(Model):
    enabled: bool = Field(
        default=True,
        description="NVIDIA device plugin (skipped on Bottlerocket groups, which ship one)",
    )
    chart_version: Annotated[str, matches(r"^0\.20\.\d+$", "0.20.0 (a 0.20.x chart)")] = Field(
        default_factory=lambda: versions.chart("nvidia-device-plugin"),
        description="a 0.20.x chart (default: the pinned one)",
    )
    time_slicing_replicas: int = Field(
        default=0, description="0 off, or 2..64 pods sharing each GPU"
    )

    @field_validator("time_slicing_replicas")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value != 0 and not 2 <= value <= 64:
            raise custom("time_slicing", "use 0 (off) or 2 to 64 pods per GPU")
        return value
