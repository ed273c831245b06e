"""The AWS half of an EKS stack: VPC, cluster, node groups, add-ons, storage, autoscaler,
and the load balancer in front of Kubeflow."""

from __future__ import annotations

from typing import Any

import pulumi

from components.aws.addons import NodeAddons, NodeAddonsArgs
from components.aws.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from components.aws.cluster import EksCluster, EksClusterArgs
from components.aws.iam import PodIdentityCluster
from components.aws.load_balancer import (
    KubeflowLoadBalancer,
    KubeflowLoadBalancerArgs,
    LoadBalancerController,
    LoadBalancerControllerArgs,
)
from components.aws.monitoring import (
    CLOUDWATCH_ADDON,
    NODE_MONITORING_ADDON,
    EksMonitoring,
    EksMonitoringArgs,
)
from components.aws.network import Network, NetworkArgs
from components.aws.node_groups import ManagedNodeGroup, ManagedNodeGroupArgs
from components.aws.storage import EbsStorage, EbsStorageArgs
from model import EksStack, SystemNodeGroup, versions
from model.aws import SYSTEM_NODE_GROUP, SYSTEM_NODE_LABEL
from model.naming import node_group_name
from stack.program.platform import Platform


def stack_tags(cfg: EksStack) -> dict[str, str]:
    return {
        "kubeflow-eks:stack": cfg.stack,
        "kubeflow-eks:cluster": cfg.cluster_name,
        **cfg.tags,
    }


def node_group_name_prefix(group: str, zone_suffix: str | None = None) -> str:
    """The managed node group's name prefix: at most 37 characters (Pulumi appends 26).

    The model keeps GPU group names to 28 characters, so ``<group>-<zone>-`` always fits.
    """
    prefix = f"{node_group_name(group, zone_suffix)}-"
    assert len(prefix) <= 37, prefix
    return prefix


def _gpu_node_groups(
    cfg: EksStack, cluster: EksCluster, network: Network, tags: dict[str, str]
) -> dict[str, list[ManagedNodeGroup]]:
    """One managed node group per GPU group, or per GPU group and AZ when zonal."""
    created: dict[str, list[ManagedNodeGroup]] = {}
    for group in cfg.gpu_node_groups:
        placements: list[tuple[str | None, pulumi.Output[list[str]]]]
        if group.placement == "zonal":
            placements = [
                (
                    cfg.vpc.zone_suffix(zone, cfg.region or ""),
                    pulumi.Output.all(network.private_subnet_by_zone[zone]),
                )
                for zone in cfg.vpc.zones
            ]
        else:
            placements = [(None, network.private_subnet_ids)]
        for suffix, subnets in placements:
            logical = f"{cfg.cluster_name}-{node_group_name(group.name, suffix)}"
            created.setdefault(group.name, []).append(
                ManagedNodeGroup(
                    logical,
                    ManagedNodeGroupArgs(
                        cluster_name=cluster.cluster_name,
                        name_prefix=node_group_name_prefix(group.name, suffix),
                        node_role_arn=cluster.node_role_arn,
                        subnet_ids=subnets,
                        kubernetes_version=cfg.kubernetes_version,
                        shape=group,
                        release_version=cfg.node_ami_release(group),
                        labels=group.node_labels(),
                        taints=group.taints,
                        gpus_per_node=group.gpus_per_node,
                        autoscaler_tags=cfg.cluster_autoscaler.enabled,
                        auto_repair=group.auto_repair,
                        tags={**tags, "kubeflow-eks:gpu-group": group.name},
                    ),
                    opts=pulumi.ResourceOptions(depends_on=[cluster, network]),
                )
            )
    return created


def build_eks(cfg: EksStack) -> tuple[Platform, dict[str, Any]]:
    """VPC, EKS, node groups, add-ons, storage and autoscaler; the platform and outputs."""
    assert cfg.region is not None  # the model requires it
    name = cfg.cluster_name
    pins = versions.pins(cfg.kubernetes_version)
    tags = stack_tags(cfg)
    network = Network(
        name, NetworkArgs(config=cfg.vpc, cluster_name=name, region=cfg.region, tags=tags)
    )
    cluster = EksCluster(
        name,
        EksClusterArgs(
            cluster_name=name,
            kubernetes_version=cfg.kubernetes_version,
            vpc_id=network.vpc_id,
            private_subnet_ids=network.private_subnet_ids,
            public_subnet_ids=network.public_subnet_ids,
            endpoint=cfg.endpoint,
            control_plane_logs=cfg.control_plane_logs,
            secrets_encryption=cfg.secrets_encryption,
            admin_role_arns=cfg.admin_role_arns,
            viewer_role_arns=cfg.viewer_role_arns,
            permissions_boundary=cfg.permissions_boundary,
            addon_versions=pins.addons,
            tags=tags,
        ),
    )
    system: SystemNodeGroup = cfg.system_node_group
    system_group = ManagedNodeGroup(
        f"{name}-{SYSTEM_NODE_GROUP}",
        ManagedNodeGroupArgs(
            cluster_name=cluster.cluster_name,
            name_prefix=node_group_name_prefix(SYSTEM_NODE_GROUP),
            node_role_arn=cluster.node_role_arn,
            subnet_ids=network.private_subnet_ids,
            kubernetes_version=cfg.kubernetes_version,
            shape=system,
            release_version=cfg.node_ami_release(system),
            labels={SYSTEM_NODE_LABEL: "system"},
            tags=tags,
        ),
        opts=pulumi.ResourceOptions(depends_on=[cluster, network]),
    )
    gpu_groups = _gpu_node_groups(cfg, cluster, network, tags)
    all_gpu_groups = [ng for node_groups in gpu_groups.values() for ng in node_groups]
    addons = NodeAddons(
        f"{name}-addons",
        NodeAddonsArgs(
            cluster_name=cluster.cluster_name,
            versions=pins.addons,
            nodes=[system_group],
            tags=tags,
        ),
    )
    storage = EbsStorage(
        f"{name}-ebs",
        EbsStorageArgs(
            cluster_name=cluster.cluster_name,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_provider_url=cluster.oidc_provider_url,
            provider=cluster.provider,
            addon_version=pins.addons["aws-ebs-csi-driver"],
            # Its controller calls the EC2 API by name, through CoreDNS.
            depends_on=[system_group, addons.addons["coredns"]],
            permissions_boundary=cfg.permissions_boundary,
            tags=tags,
        ),
    )
    monitoring = cfg.monitoring
    if monitoring.node_health or monitoring.gpu_metrics:
        EksMonitoring(
            f"{name}-monitoring",
            EksMonitoringArgs(
                cluster_name=cluster.cluster_name,
                gpu_groups=cfg.gpu_node_groups,
                node_monitoring_version=pins.addons[NODE_MONITORING_ADDON]
                if monitoring.node_health
                else None,
                cloudwatch_version=pins.addons[CLOUDWATCH_ADDON]
                if monitoring.gpu_metrics
                else None,
                oidc_provider_arn=cluster.oidc_provider_arn,
                oidc_provider_url=cluster.oidc_provider_url,
                depends_on=[system_group, *all_gpu_groups, addons.addons["coredns"]],
                permissions_boundary=cfg.permissions_boundary,
                tags=tags,
            ),
        )
    # Workloads land once nodes, DNS and storage for their volumes exist.
    ready: list[pulumi.Resource] = [system_group, addons, storage]
    if cfg.cluster_autoscaler.enabled:
        ready.append(
            ClusterAutoscaler(
                f"{name}-autoscaler",
                ClusterAutoscalerArgs(
                    cluster_name=name,
                    region=cfg.region,
                    chart_version=cfg.autoscaler_chart,
                    image_tag=cfg.autoscaler_image,
                    oidc_provider_arn=cluster.oidc_provider_arn,
                    oidc_provider_url=cluster.oidc_provider_url,
                    node_group_arns=[g.node_group_arn for g in [system_group, *all_gpu_groups]],
                    provider=cluster.provider,
                    depends_on=[system_group, addons, storage, *all_gpu_groups],
                    permissions_boundary=cfg.permissions_boundary,
                    tags=tags,
                ),
            )
        )
    outputs: dict[str, Any] = {
        "clusterName": cluster.cluster_name,
        "kubeconfig": cluster.kubeconfig,
        "oidcProviderArn": cluster.oidc_provider_arn,
        "oidcProviderUrl": cluster.oidc_provider_url,
        "vpcId": network.vpc_id,
        "nodeGroups": pulumi.Output.all(
            system=pulumi.Output.all(system_group.node_group_name),
            **{
                group: pulumi.Output.all(*[ng.node_group_name for ng in node_groups])
                for group, node_groups in gpu_groups.items()
            },
        ),
        "connectCommand": pulumi.Output.concat(
            "aws eks update-kubeconfig --region ", cfg.region, " --name ", cluster.cluster_name
        ),
    }
    platform = Platform(
        provider=cluster.provider,
        ready=ready,
        network=network,
        ingress_ready=[system_group, addons, storage],
        pod_identity=PodIdentityCluster(
            name=cluster.cluster_name, agent=addons.addons["eks-pod-identity-agent"]
        ),
    )
    return platform, outputs


def kubeflow_load_balancer(
    cfg: EksStack, platform: Platform, kubeflow: pulumi.Resource
) -> pulumi.Output[str]:
    """The AWS Load Balancer Controller and the ALB that serves https://<domain>/."""
    assert platform.network is not None and cfg.region is not None and cfg.kubeflow.domain
    assert platform.pod_identity is not None
    name = cfg.cluster_name
    tags = stack_tags(cfg)
    controller = LoadBalancerController(
        f"{name}-lb-controller",
        LoadBalancerControllerArgs(
            cluster_name=name,
            pod_identity=platform.pod_identity,
            region=cfg.region,
            vpc_id=platform.network.vpc_id,
            chart_version=versions.pins(cfg.kubernetes_version).load_balancer_controller_chart,
            provider=platform.provider,
            depends_on=platform.ingress_ready,
            permissions_boundary=cfg.permissions_boundary,
            tags=tags,
        ),
    )
    network = platform.network
    internal = cfg.kubeflow.load_balancer.internal
    balancer = KubeflowLoadBalancer(
        f"{name}-kubeflow-lb",
        KubeflowLoadBalancerArgs(
            kubeflow=cfg.kubeflow,
            vpc_id=network.vpc_id,
            vpc_cidr=network.vpc_cidr,
            subnet_ids=network.private_subnet_ids if internal else network.public_subnet_ids,
            provider=platform.provider,
            binding_after=[controller, kubeflow],
            tags=tags,
        ),
    )
    return balancer.dns_name
