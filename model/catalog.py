"""The EC2 instance catalog the stack model checks instance types against.

GPU families are data (``gpu_instances.yaml``): architecture, GPU model and memory, and the
GPUs of every size AWS sells. CPU types (system group) are only checked for shape and
architecture, by the family naming rule AWS follows (Graviton families carry a ``g`` after
the generation digit: m7g, c6gn, r8g, t4g).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

Architecture = Literal["x86_64", "arm64"]

_CATALOG_FILE = Path(__file__).with_name("gpu_instances.yaml")
_INSTANCE_TYPE = re.compile(r"^(?P<family>[a-z][a-z0-9-]*)\.(?P<size>[a-z0-9]+)$")
_GRAVITON_FAMILY = re.compile(r"^[a-z]+\d+g")


@dataclass(frozen=True)
class GpuFamily:
    name: str
    architecture: Architecture
    gpu_model: str
    gpu_memory_gib: int
    accelerator_label: str
    sizes: Mapping[str, int]


@dataclass(frozen=True)
class GpuInstanceType:
    """One NVIDIA GPU instance type: what a node of it brings."""

    name: str
    family: GpuFamily
    gpus: int

    @property
    def architecture(self) -> Architecture:
        return self.family.architecture

    @property
    def gpu_model(self) -> str:
        return self.family.gpu_model


@functools.cache
def gpu_families() -> Mapping[str, GpuFamily]:
    data = yaml.safe_load(_CATALOG_FILE.read_text())["families"]
    return {
        name: GpuFamily(
            name=name,
            architecture=entry["architecture"],
            gpu_model=entry["gpuModel"],
            gpu_memory_gib=int(entry["gpuMemoryGiB"]),
            accelerator_label=entry["acceleratorLabel"],
            sizes={str(size): int(count) for size, count in entry["sizes"].items()},
        )
        for name, entry in data.items()
    }


def split_instance_type(instance_type: str) -> tuple[str, str] | None:
    """``("g5", "xlarge")`` for ``g5.xlarge``; None when it is not shaped like a type."""
    match = _INSTANCE_TYPE.match(instance_type)
    return (match["family"], match["size"]) if match else None


def gpu_instance_type(instance_type: str) -> GpuInstanceType | None:
    """The catalog entry of an NVIDIA GPU instance type, None when it is not one."""
    parts = split_instance_type(instance_type)
    if parts is None:
        return None
    family = gpu_families().get(parts[0])
    if family is None or parts[1] not in family.sizes:
        return None
    return GpuInstanceType(instance_type, family, family.sizes[parts[1]])


def explain_not_gpu(instance_type: str) -> str:
    """Why a type is not accepted as a GPU type, and what to write instead."""
    parts = split_instance_type(instance_type)
    families = gpu_families()
    if parts is not None and parts[0] in families:
        sizes = ", ".join(f"{parts[0]}.{size}" for size in families[parts[0]].sizes)
        return f"{instance_type} does not exist; {parts[0]} comes in {sizes}"
    return f"not an NVIDIA GPU instance type; use one of the families {', '.join(families)}"


def cpu_architecture(instance_type: str) -> Architecture:
    family = instance_type.partition(".")[0]
    return "arm64" if _GRAVITON_FAMILY.match(family) else "x86_64"
