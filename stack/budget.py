"""Warnings about settings that let a shared GPU platform spend more than it should.

`python -m stack.check` prints them; none stops a deploy. Each names the key to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from model import EksStack, OnpremStack


@dataclass(frozen=True)
class BudgetWarning:
    key: str
    text: str

    def __str__(self) -> str:
        return f"{self.key}: {self.text}"


def _gpu_capacity(cfg: EksStack) -> int:
    """GPUs the stack's GPU groups hold when every group is at its maxSize."""
    total = 0
    for group in cfg.gpu_node_groups:
        groups = len(cfg.vpc.zones) if group.placement == "zonal" else 1
        total += group.max_size * groups * group.gpus_per_node
    return total


def _quota_gpus(cfg: EksStack | OnpremStack) -> int | None:
    """GPUs the profiles may hold together; None when one of them has no GPU limit."""
    kubeflow = cfg.kubeflow
    total = 0
    for profile in kubeflow.profiles:
        gpus = (profile.quota or kubeflow.default_quota).gpus
        if gpus is None:
            return None
        total += gpus
    return total


def budget_warnings(cfg: EksStack | OnpremStack) -> list[BudgetWarning]:
    warnings = []
    kubeflow = cfg.kubeflow
    if kubeflow.enabled and not kubeflow.culling.enabled:
        warnings.append(
            BudgetWarning(
                "kubeflow.culling.enabled",
                "idle notebooks are never stopped: a notebook holding a GPU keeps its node "
                "running until its owner stops it",
            )
        )
    if not isinstance(cfg, EksStack) or not cfg.gpu_node_groups:
        return warnings
    capacity, quotas = _gpu_capacity(cfg), _quota_gpus(cfg)
    if kubeflow.enabled and kubeflow.profiles and quotas is not None and capacity > quotas:
        warnings.append(
            BudgetWarning(
                "gpuNodeGroups",
                f"the GPU groups can grow to {capacity} GPUs, more than the profiles' quotas "
                f"allow together ({quotas}): lower maxSize or raise quotas",
            )
        )
    if all(g.capacity_type == "SPOT" for g in cfg.gpu_node_groups):
        warnings.append(
            BudgetWarning(
                "gpuNodeGroups[].capacityType",
                "every GPU group is SPOT: a reclaim stops GPU notebooks with no on-demand "
                "group to come back on; add a small ON_DEMAND group for notebooks",
            )
        )
    return warnings
