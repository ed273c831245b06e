"""What an edit of a stack file would delete or replace, read from the two files offline.

`python -m stack.check NEW --compared-to OLD` prints it (OLD is the file as last deployed,
e.g. `git show main:stacks/Pulumi.prod.yaml > /tmp/old.yaml`). Users' data is retained by
the stack unless `kubeflow.allowDeletion` names it, so most lines say what Pulumi will stop
managing and what stays; the others say what goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model import EksGpuGroup, EksStack, OnpremStack, SystemNodeGroup

StackModel = EksStack | OnpremStack


@dataclass(frozen=True)
class Change:
    key: str
    effect: Literal["deletes", "replaces", "retains", "upgrades"]
    what: str

    def __str__(self) -> str:
        return f"{self.key}: {self.effect} {self.what}"


# Node-group settings EKS cannot change in place: a new group is made and the old one drained.
_NODE_GROUP_REPLACED_BY = (
    "instance_types",
    "ami_type",
    "capacity_type",
    "disk_size_gb",
    "placement",
)


def _replaced_fields(old: EksGpuGroup, new: EksGpuGroup) -> list[str]:
    return [f for f in _NODE_GROUP_REPLACED_BY if getattr(old, f) != getattr(new, f)]


def _gpu_group_changes(old: StackModel, new: StackModel) -> list[Change]:
    changes = []
    before = {g.name: g for g in old.gpu_node_groups}
    after = {g.name: g for g in new.gpu_node_groups}
    for name in sorted(before.keys() - after.keys()):
        changes.append(
            Change(
                f"gpuNodeGroups[{name}]",
                "deletes",
                "the node group: its nodes are drained and running jobs and notebooks on them "
                "are evicted",
            )
        )
    for name in sorted(before.keys() & after.keys()):
        old_group, new_group = before[name], after[name]
        if isinstance(old_group, EksGpuGroup) and isinstance(new_group, EksGpuGroup):
            fields = _replaced_fields(old_group, new_group)
            if fields:
                changes.append(
                    Change(
                        f"gpuNodeGroups[{name}]",
                        "replaces",
                        f"every node ({', '.join(fields)} changed): pods on them are evicted",
                    )
                )
    return changes


def _node_ami_changes(old: StackModel, new: StackModel) -> list[Change]:
    """A node group whose AMI release moves (an amiReleaseVersion or nodeAmiReleases edit, or
    a kubernetesVersion whose pin differs) is updated in place: EKS rolls its nodes."""
    if not (isinstance(old, EksStack) and isinstance(new, EksStack)):
        return []
    if old.region != new.region or old.cluster_name != new.cluster_name:
        return []  # a new cluster: said by _cluster_changes
    kept: list[tuple[str, SystemNodeGroup | EksGpuGroup, SystemNodeGroup | EksGpuGroup]] = [
        ("systemNodeGroup", old.system_node_group, new.system_node_group)
    ]
    before = {g.name: g for g in old.gpu_node_groups}
    after = {g.name: g for g in new.gpu_node_groups}
    for name in sorted(before.keys() & after.keys()):
        if not _replaced_fields(before[name], after[name]):  # else a new group, said above
            kept.append((f"gpuNodeGroups[{name}]", before[name], after[name]))
    changes = []
    for key, old_group, new_group in kept:
        was, will = old.node_ami_release(old_group), new.node_ami_release(new_group)
        if was != will:
            changes.append(
                Change(
                    key,
                    "upgrades",
                    f"the nodes' AMI release {was} -> {will}: EKS rolls the group, one node "
                    "at a time (a new node starts, an old one is drained): pods on each old "
                    "node are evicted, running jobs and notebooks on them restart",
                )
            )
    return changes


def _profile_changes(old: StackModel, new: StackModel) -> list[Change]:
    changes = []
    kept = {p.name for p in new.kubeflow.profiles}
    allowed = set(new.kubeflow.allow_deletion)
    for profile in old.kubeflow.profiles:
        if profile.name in kept:
            continue
        key = f"kubeflow.profiles[{profile.name}]"
        if f"Profile/{profile.name}" in allowed:
            changes.append(
                Change(
                    key,
                    "deletes",
                    "the profile, its namespace with its notebooks' volumes, and its registry "
                    "with its images (kubeflow.allowDeletion names it)",
                )
            )
        else:
            changes.append(
                Change(
                    key,
                    "retains",
                    "the profile, its namespace, volumes and registry: the stack stops managing "
                    f"them (add Profile/{profile.name} to kubeflow.allowDeletion to delete them)",
                )
            )
    return changes


def _cluster_changes(old: StackModel, new: StackModel) -> list[Change]:
    if old.is_eks != new.is_eks:
        return [Change("mode", "replaces", "the whole platform: the cluster and all on it")]
    changes = []
    if old.cluster_name != new.cluster_name:
        what = "the cluster and everything on it" if new.is_eks else "every object's names"
        changes.append(Change("clusterName", "replaces", what))
    if isinstance(old, EksStack) and isinstance(new, EksStack):
        if old.region != new.region:
            changes.append(Change("aws:region", "replaces", "every AWS resource of the stack"))
        if old.kubernetes_version != new.kubernetes_version:
            changes.append(
                Change(
                    "kubernetesVersion",
                    "upgrades",
                    f"{old.kubernetes_version} -> {new.kubernetes_version}: the control plane, "
                    "then every node group (nodes roll), then add-ons and charts",
                )
            )
    return changes


def _kubeflow_changes(old: StackModel, new: StackModel) -> list[Change]:
    if old.kubeflow.enabled and not new.kubeflow.enabled:
        return [
            Change(
                "kubeflow.enabled",
                "deletes",
                "every Kubeflow object except CRDs, PVCs, namespaces and Profiles, which are "
                "retained unless kubeflow.allowDeletion names them",
            )
        ]
    before = (old.kubeflow.version, old.kubeflow.local_path, old.kubeflow.components)
    after = (new.kubeflow.version, new.kubeflow.local_path, new.kubeflow.components)
    if old.kubeflow.enabled and before != after:
        return [
            Change(
                "kubeflow",
                "upgrades",
                "the Kubeflow objects: run python -m stack.upgrade_plan --stack "
                f"{new.stack} --to <the new tree> to see what is added, removed and replaced",
            )
        ]
    return []


def stack_changes(old: StackModel, new: StackModel) -> list[Change]:
    """What deploying `new` over a stack deployed from `old` deletes, replaces or retains."""
    return [
        *_cluster_changes(old, new),
        *_gpu_group_changes(old, new),
        *_node_ami_changes(old, new),
        *_kubeflow_changes(old, new),
        *_profile_changes(old, new),
    ]
