"""Where GPU workloads may run, derived from the stack's GPU groups (``model.GpuGroup``).

The device plugin, the notebook form and fnjob all place pods with these functions, so a
taint or label is typed once, in the stack file, and never again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from model import GPU_GROUP_LABEL, GPU_RESOURCE, EksGpuGroup, GpuGroup, Taint

GPU_GROUPS_DOCUMENT_VERSION = 1


def groups_node_affinity(groups: Sequence[GpuGroup]) -> dict[str, Any]:
    """Required node affinity onto the nodes of any of ``groups`` (terms are ORed)."""
    created = [g.name for g in groups if isinstance(g, EksGpuGroup)]
    terms: list[dict[str, Any]] = []
    if created:
        # One term for all stack-created groups keeps the affinity short and readable.
        terms.append(
            {"matchExpressions": [{"key": GPU_GROUP_LABEL, "operator": "In", "values": created}]}
        )
    for group in groups:
        if not isinstance(group, EksGpuGroup):
            terms += group.node_affinity()["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]["nodeSelectorTerms"]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    }


def union_tolerations(groups: Sequence[GpuGroup]) -> list[dict[str, Any]]:
    """Exactly the tolerations for the taints the groups carry, each once, in first-seen order."""
    seen: dict[Taint, None] = {}
    for group in groups:
        for taint in group.taints:
            seen.setdefault(taint, None)
    return [taint.toleration() for taint in seen]


def gpu_groups_document(groups: Sequence[GpuGroup]) -> dict[str, Any]:
    """What fnjob reads in a notebook (``FNJOB_GPU_GROUPS``): how to land on each group."""
    return {
        "version": GPU_GROUPS_DOCUMENT_VERSION,
        "default": groups[0].name if groups else None,
        "groups": [
            {
                "name": group.name,
                "resource": GPU_RESOURCE,
                "gpusPerNode": group.gpus_per_node,
                "gpuModel": group.gpu_model,
                "nodeSelector": group.selector_labels(),
                "tolerations": group.tolerations(),
            }
            for group in groups
        ],
    }
