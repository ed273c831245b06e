"""The cluster's GPU groups, as the stack publishes them into a notebook, and GPU placement.

The stack mounts a JSON file (``gpu-groups.json``, version 1) into every notebook and points
``$FNJOB_GPU_GROUPS`` at it::

    {"version": 1, "default": "gpu-spot",
     "groups": [{"name": "gpu-spot", "resource": "nvidia.com/gpu", "gpusPerNode": 1,
                 "gpuModel": "NVIDIA A10G", "nodeSelector": {...}, "tolerations": [...]}]}

The file comes from outside this process: it is read as data and validated, and unknown
keys are ignored (newer stacks may add some). ``place_gpus`` turns a GPU request into the
pod's resource name, tolerations and node selector.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fnjob.errors import FnJobError
from fnjob.options import Scheduling, frozen_str_mapping, frozen_tolerations

__all__ = [
    "DEFAULT_GPU_NODE_SELECTOR",
    "DEFAULT_GPU_RESOURCE",
    "DEFAULT_GPU_TOLERATIONS",
    "GPU_GROUPS_ENV",
    "GpuGroup",
    "GpuGroups",
    "GpuGroupsFileError",
    "GpuPlacement",
    "gpu_groups_from_environment",
    "load_gpu_groups",
    "place_gpus",
]

GPU_GROUPS_ENV = "FNJOB_GPU_GROUPS"
SUPPORTED_VERSION = 1
# Without a groups file: what the NVIDIA device plugin and GPU feature discovery set up.
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    MappingProxyType({"key": DEFAULT_GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}),
)
DEFAULT_GPU_NODE_SELECTOR: Mapping[str, str] = MappingProxyType({"nvidia.com/gpu.present": "true"})


class GpuGroupsFileError(FnJobError, ValueError):
    """The GPU groups file cannot be read, is not JSON, or is not a version this fnjob reads."""


@dataclass(frozen=True)
class GpuGroup:
    """One group of GPU nodes: how to reach it and what it has (``None`` when unknown)."""

    name: str
    resource: str = DEFAULT_GPU_RESOURCE
    gpus_per_node: int | None = None
    gpu_model: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name={self.name!r} must be a non-empty string")
        if not isinstance(self.resource, str) or "/" not in self.resource:
            raise ValueError(f"resource={self.resource!r} must be an extended resource name")
        per_node = self.gpus_per_node
        if per_node is not None and (
            isinstance(per_node, bool) or not isinstance(per_node, int) or per_node < 1
        ):
            raise ValueError(f"gpusPerNode={per_node!r} must be a whole number >= 1 or null")
        if self.gpu_model is not None and not isinstance(self.gpu_model, str):
            raise ValueError(f"gpuModel={self.gpu_model!r} must be a string or null")
        object.__setattr__(
            self, "node_selector", frozen_str_mapping("nodeSelector", self.node_selector)
        )
        object.__setattr__(self, "tolerations", frozen_tolerations("tolerations", self.tolerations))

    def describe(self) -> str:
        hardware = [
            self.gpu_model or "",
            "" if self.gpus_per_node is None else f"{self.gpus_per_node} per node",
        ]
        known = ", ".join(part for part in hardware if part)
        return f"{self.name} ({known})" if known else self.name


@dataclass(frozen=True)
class GpuGroups:
    """The groups a cluster offers; ``default`` names one of them, or is None when there is
    no GPU group. ``source`` says where they were read from (for messages)."""

    groups: tuple[GpuGroup, ...]
    default: str | None = None
    source: str = "gpu groups"

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        names = [group.name for group in self.groups]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise GpuGroupsFileError(f"{self.source}: group names repeat: {duplicates}")
        if self.default is not None and self.default not in names:
            raise GpuGroupsFileError(
                f"{self.source}: default {self.default!r} is not one of the groups {names}"
            )

    @property
    def names(self) -> list[str]:
        return [group.name for group in self.groups]

    def get(self, name: str) -> GpuGroup | None:
        return next((group for group in self.groups if group.name == name), None)

    @classmethod
    def from_document(cls, document: object, *, source: str) -> GpuGroups:
        """Validate a parsed ``gpu-groups.json``; unknown keys are ignored."""
        if not isinstance(document, Mapping):
            raise GpuGroupsFileError(f"{source}: expected a JSON object at the top")
        version = document.get("version")
        if version != SUPPORTED_VERSION:
            raise GpuGroupsFileError(
                f"{source}: version {version!r} is not supported; this fnjob reads version "
                f"{SUPPORTED_VERSION} (upgrade fnjob, or ask whoever runs the stack)"
            )
        entries = document.get("groups") or []
        if not isinstance(entries, Sequence) or isinstance(entries, str):
            raise GpuGroupsFileError(f"{source}: groups must be a list")
        groups = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise GpuGroupsFileError(f"{source}: groups[{index}] must be an object")
            try:
                groups.append(
                    GpuGroup(
                        name=entry.get("name"),  # type: ignore[arg-type]
                        resource=entry.get("resource") or DEFAULT_GPU_RESOURCE,
                        gpus_per_node=entry.get("gpusPerNode"),
                        gpu_model=entry.get("gpuModel"),
                        node_selector=entry.get("nodeSelector") or {},
                        tolerations=entry.get("tolerations") or (),
                    )
                )
            except ValueError as error:
                raise GpuGroupsFileError(f"{source}: groups[{index}]: {error}") from None
        default = document.get("default")
        if default is not None and not isinstance(default, str):
            raise GpuGroupsFileError(f"{source}: default must be a group name or null")
        return cls(groups=tuple(groups), default=default, source=source)


def load_gpu_groups(path: str | os.PathLike[str]) -> GpuGroups:
    """Read a ``gpu-groups.json``; raises ``GpuGroupsFileError`` naming the file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise GpuGroupsFileError(f"cannot read the GPU groups file {source}: {error}") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        raise GpuGroupsFileError(f"{source} is not valid JSON: {error}") from None
    return GpuGroups.from_document(document, source=source)


def gpu_groups_from_environment(environ: Mapping[str, str] | None = None) -> GpuGroups | None:
    """The groups file ``$FNJOB_GPU_GROUPS`` names, or None when the variable is not set."""
    path = (os.environ if environ is None else environ).get(GPU_GROUPS_ENV, "").strip()
    return load_gpu_groups(path) if path else None


@dataclass(frozen=True)
class GpuPlacement:
    """Where GPU pods go: the resource to request, the tolerations and the node selector,
    and the group they came from (``by_default``: nobody named it)."""

    resource: str
    tolerations: tuple[Mapping[str, Any], ...]
    node_selector: Mapping[str, str]
    group: GpuGroup | None = None
    by_default: bool = False
    source: str | None = None

    def describe(self) -> str:
        """A status line for the user: which group, and why."""
        if self.group is None:
            return (
                f"GPUs: {self.resource}, no GPU groups file (${GPU_GROUPS_ENV}); default placement"
            )
        why = f"the default in {self.source}" if self.by_default else f"from {self.source}"
        return f"GPU group {self.group.describe()}, {why}"


def place_gpus(gpus: int, scheduling: Scheduling, groups: GpuGroups | None) -> GpuPlacement | None:
    """The placement for ``gpus`` GPUs, or None when no GPU is asked for.

    Raises ``ValueError`` for a group that does not exist (listing those that do), for more
    GPUs than any node of the group has (naming the groups that could fit), and for a
    ``gpu_group`` without a groups file or without GPUs.
    """
    if gpus == 0:
        if scheduling.gpu_group is not None:
            raise ValueError(
                f"gpu_group={scheduling.gpu_group!r} needs GPUs: ask for Resources(gpus=N)"
            )
        return None
    if groups is None:
        if scheduling.gpu_group is not None:
            raise ValueError(
                f"gpu_group={scheduling.gpu_group!r} needs the cluster's GPU groups: set "
                f"{GPU_GROUPS_ENV} to its gpu-groups.json (notebooks of this stack have it)"
            )
        group = None
        resource = DEFAULT_GPU_RESOURCE
        tolerations: tuple[Mapping[str, Any], ...] = DEFAULT_GPU_TOLERATIONS
        node_selector: Mapping[str, str] = DEFAULT_GPU_NODE_SELECTOR
        by_default = False
    else:
        name = scheduling.gpu_group or groups.default
        if name is None:
            raise ValueError(
                f"{groups.source} lists no GPU group, so the cluster has no GPU nodes for "
                f"{gpus} GPU(s); ask whoever runs the stack to add a GPU node group"
            )
        found = groups.get(name)
        if found is None:
            raise ValueError(
                f"gpu_group={name!r} is not one of the GPU groups in {groups.source}: "
                f"{', '.join(groups.names) or '(none)'}"
            )
        if found.gpus_per_node is not None and gpus > found.gpus_per_node:
            fitting = [
                g.describe() for g in groups.groups if g.gpus_per_node and g.gpus_per_node >= gpus
            ]
            unknown = [g.name for g in groups.groups if g.gpus_per_node is None]
            hint = f"groups with {gpus}+ GPUs per node: {', '.join(fitting) or 'none'}"
            if unknown:
                hint += f"; size unknown: {', '.join(unknown)}"
            raise ValueError(
                f"gpus={gpus} does not fit GPU group {found.describe()}: a pod runs on one node; "
                + hint
            )
        group, resource = found, found.resource
        tolerations, node_selector = found.tolerations, found.node_selector
        by_default = scheduling.gpu_group is None
    if scheduling.gpu_tolerations is not None:
        tolerations = scheduling.gpu_tolerations
    if scheduling.gpu_node_selector is not None:
        node_selector = scheduling.gpu_node_selector
    return GpuPlacement(
        resource=resource,
        tolerations=tuple(tolerations),
        node_selector=MappingProxyType(dict(node_selector)),
        group=group,
        by_default=by_default,
        source=None if groups is None else groups.source,
    )
