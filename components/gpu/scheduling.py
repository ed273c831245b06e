"""Where GPU workloads may run: the labels and taints of each GPU node group.

Both the NVIDIA device plugin and the Kubeflow notebook spawner derive their tolerations and
node affinity from these values, so a taint is typed once (in the node-group config) and
never again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from stack.naming import is_dns_label, is_label_key, is_label_value

# Every GPU node the stack creates carries these two labels besides the user's own.
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_GROUP_LABEL = "kubeflow-eks.io/gpu-group"
GPU_RESOURCE = "nvidia.com/gpu"

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class SchedulingConfigError(ValueError):
    """A GPU group's name, label or taint is not something Kubernetes accepts."""


def _check_key(what: str, key: str) -> None:
    if not is_label_key(key):
        raise SchedulingConfigError(
            f"{what} {key!r} is not a valid Kubernetes key: allowed is an optional DNS prefix "
            "and '/', then up to 63 characters [A-Za-z0-9-_.] starting and ending alphanumeric"
        )


def _check_value(what: str, value: str) -> None:
    if not is_label_value(value):
        raise SchedulingConfigError(
            f"{what} {value!r} is not a valid Kubernetes label/taint value: allowed is empty or "
            "up to 63 characters [A-Za-z0-9-_.] starting and ending alphanumeric"
        )


@dataclass(frozen=True)
class Taint:
    """A node taint, as the node group sets it and as pods must tolerate it."""

    key: str
    value: str
    effect: str

    def __post_init__(self) -> None:
        _check_key("taint key", self.key)
        _check_value(f"taint {self.key!r} value", self.value)
        if self.effect not in TAINT_EFFECTS:
            raise SchedulingConfigError(
                f"taint {self.key!r} effect {self.effect!r} is not allowed: use one of "
                f"{', '.join(TAINT_EFFECTS)}"
            )

    @classmethod
    def parse(cls, text: str) -> Taint:
        """Parse kubectl's notation `key=value:Effect` (or `key:Effect`)."""
        key_value, sep, effect = text.partition(":")
        if not sep:
            raise SchedulingConfigError(
                f"taint {text!r} has no effect: write key=value:Effect, e.g. "
                "nvidia.com/gpu=true:NoSchedule"
            )
        key, _, value = key_value.partition("=")
        return cls(key=key, value=value, effect=effect)

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
        return (
            f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"
        )


DEFAULT_GPU_TAINT = Taint(key=GPU_RESOURCE, value="true", effect="NoSchedule")


@dataclass(frozen=True)
class GpuScheduling:
    """Labels and taints of one GPU node group, as every GPU node of that group carries them.

    `bundles_device_plugin` is True for node images that ship their own NVIDIA device plugin
    (Bottlerocket NVIDIA); ours must not run there.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = (DEFAULT_GPU_TAINT,)
    bundles_device_plugin: bool = False
    # True when the stack creates the nodes and so labels them with GPU_GROUP_LABEL; False for
    # on-premises groups, whose nodes are found by their configured `labels` alone.
    managed_labels: bool = True

    def __post_init__(self) -> None:
        if not is_dns_label(self.name):
            raise SchedulingConfigError(
                f"GPU group name {self.name!r} is not allowed: use lowercase letters, digits and "
                "'-', starting and ending alphanumeric, at most 63 characters"
            )
        for key, value in self.labels.items():
            _check_key(f"GPU group {self.name!r} label key", key)
            _check_value(f"GPU group {self.name!r} label {key!r} value", value)
        if not isinstance(self.taints, tuple) or not all(isinstance(t, Taint) for t in self.taints):
            raise SchedulingConfigError(
                f"GPU group {self.name!r} taints must be a tuple of Taint, got {self.taints!r}"
            )
        if not self.managed_labels and not self.labels:
            raise SchedulingConfigError(
                f"GPU group {self.name!r} is not created by the stack, so it needs labels that "
                "select its nodes (e.g. {'nvidia.com/gpu.present': 'true'})"
            )
        # Freeze a private copy so the caller's dict can't change us later.
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def node_labels(self) -> dict[str, str]:
        """Every label a node of this group carries (ours win over user labels)."""
        return {**self.labels, GPU_PRESENT_LABEL: "true", GPU_GROUP_LABEL: self.name}

    def tolerations(self) -> list[dict[str, Any]]:
        return [taint.toleration() for taint in self.taints]

    def selector_labels(self) -> dict[str, str]:
        """Labels that identify exactly this group's nodes."""
        return {GPU_GROUP_LABEL: self.name} if self.managed_labels else dict(self.labels)

    def node_selector_term(self) -> dict[str, Any]:
        return {
            "matchExpressions": [
                {"key": key, "operator": "In", "values": [value]}
                for key, value in sorted(self.selector_labels().items())
            ]
        }

    def node_affinity(self) -> dict[str, Any]:
        """Node affinity that pins a pod to this group's nodes."""
        return groups_node_affinity((self,))


def groups_node_affinity(groups: tuple[GpuScheduling, ...]) -> dict[str, Any]:
    """Required node affinity onto the nodes of any of `groups` (terms are ORed)."""
    managed = [g.name for g in groups if g.managed_labels]
    terms: list[dict[str, Any]] = []
    if managed:
        # One term for all stack-created groups keeps the affinity short and readable.
        terms.append(
            {"matchExpressions": [{"key": GPU_GROUP_LABEL, "operator": "In", "values": managed}]}
        )
    terms += [g.node_selector_term() for g in groups if not g.managed_labels]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def union_tolerations(groups: tuple[GpuScheduling, ...]) -> list[dict[str, Any]]:
    """Exactly the tolerations for the taints the groups carry, each once, in first-seen order."""
    seen: dict[Taint, None] = {}
    for group in groups:
        for taint in group.taints:
            seen.setdefault(taint, None)
    return [taint.toleration() for taint in seen]


def check_unique_names(groups: tuple[GpuScheduling, ...], what: str) -> None:
    names = [g.name for g in groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SchedulingConfigError(
            f"{what}: GPU group names must be unique, repeated: {', '.join(duplicates)}"
        )
