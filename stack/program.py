"""The whole stack: wires the components from one validated StackConfig.

``__main__.py`` calls ``build_stack(load_stack_config())``; tests call the same function
under Pulumi's mocks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.aws.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from components.aws.cluster import EksCluster, EksClusterArgs
from components.aws.network import Network, NetworkArgs
from components.aws.node_groups import ManagedNodeGroup, ManagedNodeGroupArgs
from components.aws.storage import EbsStorage, EbsStorageArgs
from components.gpu.device_plugin import DevicePluginArgs, NvidiaDevicePlugin
from components.gpu.scheduling import GpuScheduling
from components.kubeflow.component import Kubeflow
from components.kubeflow.transform import KubeflowArgs, ProfileSpec
from stack.config import GpuNodeGroupConfig, StackConfig


@dataclass(frozen=True)
class Platform:
    """What the Kubernetes-side components build on."""

    provider: k8s.Provider
    # Resources the cluster must have before workloads land (node groups, storage).
    ready: list[pulumi.Resource]


def gpu_scheduling_from_config(cfg: StackConfig) -> tuple[GpuScheduling, ...]:
    """The GPU groups' labels and taints, as the device plugin and notebook form need them."""
    return tuple(
        GpuScheduling(
            name=group.name,
            labels=dict(group.labels),
            taints=group.taints,
            bundles_device_plugin=group.bundles_device_plugin,
            # EKS nodes carry our group label; on-premises nodes are found by their own labels.
            managed_labels=cfg.is_eks,
        )
        for group in cfg.gpu_node_groups
    )


def kubeflow_args_from_config(cfg: StackConfig) -> KubeflowArgs:
    kubeflow = cfg.kubeflow
    return KubeflowArgs(
        admin_email=kubeflow.admin_email,
        source=kubeflow.local_path or kubeflow.version,
        components=kubeflow.components,
        http_mode=kubeflow.http_mode,
        gpu_groups=gpu_scheduling_from_config(cfg),
        notebook_images=kubeflow.notebook_images,
        profiles=tuple(ProfileSpec(p.name, p.owner) for p in kubeflow.profiles),
        registry_access=kubeflow.registry_access,
    )


def _stack_tags(cfg: StackConfig) -> dict[str, str]:
    return {
        "kubeflow-eks:stack": cfg.stack,
        "kubeflow-eks:cluster": cfg.cluster_name,
        **cfg.tags,
    }


def _gpu_group_args(
    cfg: StackConfig, group: GpuNodeGroupConfig, cluster: EksCluster, subnets: pulumi.Output[Any]
) -> ManagedNodeGroupArgs:
    return ManagedNodeGroupArgs(
        cluster_name=cluster.cluster_name,
        node_role_arn=cluster.node_role_arn,
        subnet_ids=subnets,
        kubernetes_version=cfg.kubernetes_version,
        instance_types=group.instance_types,
        ami_type=group.ami_type,
        capacity_type=group.capacity_type,
        min_size=group.min_size,
        desired_size=group.desired_size,
        max_size=group.max_size,
        disk_size_gb=group.disk_size_gb,
        labels=dict(group.node_labels),
        taints=group.taints,
        gpus_per_node=group.gpus_per_node,
        autoscaler_tags=cfg.cluster_autoscaler.enabled,
        tags={**_stack_tags(cfg), "kubeflow-eks:gpu-group": group.name},
    )


def build_eks(cfg: StackConfig) -> tuple[Platform, dict[str, Any]]:
    """VPC, EKS, node groups, storage and autoscaler; returns the platform and outputs."""
    assert cfg.network is not None and cfg.system_node_group is not None and cfg.region
    tags = _stack_tags(cfg)
    network = Network(
        cfg.cluster_name, NetworkArgs(config=cfg.network, cluster_name=cfg.cluster_name, tags=tags)
    )
    cluster = EksCluster(
        cfg.cluster_name,
        EksClusterArgs(
            cluster_name=cfg.cluster_name,
            kubernetes_version=cfg.kubernetes_version,
            vpc_id=network.vpc_id,
            private_subnet_ids=network.private_subnet_ids,
            public_subnet_ids=network.public_subnet_ids,
            public_access=cfg.endpoint.public_access,
            public_access_cidrs=cfg.endpoint.public_access_cidrs,
            control_plane_logs=cfg.control_plane_logs,
            secrets_encryption=cfg.secrets_encryption,
            admin_role_arns=cfg.admin_role_arns,
            tags=tags,
        ),
    )
    system = cfg.system_node_group
    system_group = ManagedNodeGroup(
        f"{cfg.cluster_name}-system",
        ManagedNodeGroupArgs(
            cluster_name=cluster.cluster_name,
            node_role_arn=cluster.node_role_arn,
            subnet_ids=network.private_subnet_ids,
            kubernetes_version=cfg.kubernetes_version,
            instance_types=system.instance_types,
            ami_type=system.ami_type,
            capacity_type="ON_DEMAND",
            min_size=system.min_size,
            desired_size=system.desired_size,
            max_size=system.max_size,
            disk_size_gb=system.disk_size_gb,
            labels={"kubeflow-eks.io/node-role": "system"},
            tags=tags,
        ),
        opts=pulumi.ResourceOptions(depends_on=[cluster]),
    )
    gpu_groups = [
        ManagedNodeGroup(
            f"{cfg.cluster_name}-{group.name}",
            _gpu_group_args(cfg, group, cluster, network.private_subnet_ids),
            opts=pulumi.ResourceOptions(depends_on=[cluster]),
        )
        for group in cfg.gpu_node_groups
    ]
    storage = EbsStorage(
        f"{cfg.cluster_name}-ebs",
        EbsStorageArgs(
            cluster_name=cluster.cluster_name,
            oidc_provider_arn=cluster.oidc_provider_arn,
            oidc_provider_url=cluster.oidc_provider_url,
            provider=cluster.provider,
            depends_on=[system_group],
            tags=tags,
        ),
    )
    ready: list[pulumi.Resource] = [system_group, storage]
    if cfg.cluster_autoscaler.enabled:
        ready.append(
            ClusterAutoscaler(
                f"{cfg.cluster_name}-autoscaler",
                ClusterAutoscalerArgs(
                    cluster_name=cfg.cluster_name,
                    region=cfg.region,
                    kubernetes_version=cfg.kubernetes_version,
                    chart_version=cfg.cluster_autoscaler.chart_version,
                    oidc_provider_arn=cluster.oidc_provider_arn,
                    oidc_provider_url=cluster.oidc_provider_url,
                    node_group_arns=[g.node_group_arn for g in [system_group, *gpu_groups]],
                    provider=cluster.provider,
                    depends_on=[system_group],
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
            system=system_group.node_group_name,
            **{
                g.name: ng.node_group_name
                for g, ng in zip(cfg.gpu_node_groups, gpu_groups, strict=True)
            },
        ),
        "connectCommand": pulumi.Output.concat(
            "aws eks update-kubeconfig --region ", cfg.region, " --name ", cluster.cluster_name
        ),
    }
    return Platform(provider=cluster.provider, ready=ready), outputs


def build_onprem(cfg: StackConfig) -> tuple[Platform, dict[str, Any]]:
    """An existing cluster reached through a kubeconfig: no AWS resource at all."""
    assert cfg.onprem is not None
    if cfg.secrets.onprem_kubeconfig is not None:
        kubeconfig: pulumi.Input[str] = pulumi.Output.secret(cfg.secrets.onprem_kubeconfig)
    else:
        path = os.path.expanduser(cfg.onprem.kubeconfig_path or "")
        # The provider reads the file itself; the path is not secret, its content is.
        kubeconfig = path
    provider = k8s.Provider(
        f"{cfg.cluster_name}-k8s",
        kubeconfig=kubeconfig,
        context=cfg.onprem.context,
        delete_unreachable=False,
    )
    context = f" --context {cfg.onprem.context}" if cfg.onprem.context else ""
    outputs: dict[str, Any] = {
        "clusterName": cfg.cluster_name,
        "connectCommand": f"kubectl{context} get nodes -l nvidia.com/gpu.present=true",
    }
    return Platform(provider=provider, ready=[]), outputs


def build_stack(cfg: StackConfig) -> dict[str, Any]:
    """Register every resource of the stack; returns the stack outputs."""
    platform, outputs = build_eks(cfg) if cfg.is_eks else build_onprem(cfg)
    on_cluster = pulumi.ResourceOptions(providers=[platform.provider], depends_on=platform.ready)
    if cfg.device_plugin.enabled and cfg.gpu_node_groups:
        NvidiaDevicePlugin(
            f"{cfg.cluster_name}-nvidia",
            DevicePluginArgs(
                gpu_groups=gpu_scheduling_from_config(cfg),
                chart_version=cfg.device_plugin.chart_version,
                time_slicing_replicas=cfg.device_plugin.time_slicing_replicas,
            ),
            opts=on_cluster,
        )
    if cfg.kubeflow.enabled:
        assert cfg.secrets.kubeflow_admin_password is not None  # checked by the config
        docker_config = cfg.secrets.registry_docker_config
        kubeflow = Kubeflow(
            f"{cfg.cluster_name}-kubeflow",
            kubeflow_args_from_config(cfg),
            admin_password=pulumi.Output.secret(cfg.secrets.kubeflow_admin_password),
            docker_config_json=pulumi.Output.secret(docker_config) if docker_config else None,
            opts=on_cluster,
        )
        outputs["kubeflowAdmin"] = kubeflow.admin_email
        outputs["kubeflowDashboard"] = kubeflow.dashboard_url
        outputs["kubeflowPortForward"] = kubeflow.dashboard_port_forward
    return outputs
