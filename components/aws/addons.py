"""EKS add-ons whose pods need a node: created after the system node group, pinned.

An add-on is only ACTIVE once its pods run. On a cluster with no node yet, CoreDNS stays
Pending, the add-on DEGRADED, and its creation fails after the provider's 20-minute wait
(pulumi-eks enables it itself only when it creates nodes). So these wait for nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

# Add-ons with pods that must be scheduled before the add-on counts as ready.
NODE_ADDONS = ("coredns", "eks-pod-identity-agent")


@dataclass(frozen=True)
class NodeAddonsArgs:
    cluster_name: pulumi.Input[str]
    versions: Mapping[str, str]
    nodes: Sequence[pulumi.Resource]
    tags: Mapping[str, str] = field(default_factory=dict)


class NodeAddons(pulumi.ComponentResource):
    """CoreDNS and the EKS Pod Identity agent, once the system nodes exist."""

    def __init__(
        self, name: str, args: NodeAddonsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubeflow-eks:addons:NodeAddons", name, None, opts)
        self.addons = {
            addon: aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=args.cluster_name,
                addon_name=addon,
                addon_version=args.versions[addon],
                # EKS installs a self-managed CoreDNS with the cluster; the add-on takes it over.
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                tags=dict(args.tags),
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.nodes)),
            )
            for addon in NODE_ADDONS
        }
        self.register_outputs({})
