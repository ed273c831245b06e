"""What the cluster-side components build on, whichever way the cluster came to be."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.aws.iam import PodIdentityCluster
from components.aws.network import Network


@dataclass(frozen=True)
class Platform:
    """What the Kubernetes-side components build on."""

    provider: k8s.Provider
    # Resources the cluster must have before workloads land (node groups, storage).
    ready: list[pulumi.Resource]
    # EKS only: the VPC, and what the load balancer controller waits for.
    network: Network | None = None
    ingress_ready: list[pulumi.Resource] = field(default_factory=list)
    # EKS only: the cluster and add-on that Pod Identity associations wait for.
    pod_identity: PodIdentityCluster | None = None
