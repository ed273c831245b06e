"""Node health and GPU metrics on EKS: two pinned EKS add-ons, after the node groups.

- ``eks-node-monitoring-agent`` sets node conditions (``AcceleratedHardwareReady``, ...) that
  managed node auto-repair acts on. Its agent tolerates every taint already; its GPU health
  checks run in a second DaemonSet (``dcgm-server``) that tolerates none by default, so it is
  given the GPU groups' taints.
- ``amazon-cloudwatch-observability`` (Container Insights) collects NVIDIA GPU metrics per GPU
  and per pod through its DCGM exporter, with an IRSA role for the CloudWatch agent. Its DCGM
  exporter is given exactly the GPU groups' taints, as the device plugin is.

Both wait for the node groups: an add-on is ACTIVE only once its pods run, and the GPU pods
have no node to run on before the GPU groups exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.aws.iam import IrsaRole, IrsaRoleArgs
from components.gpu.scheduling import union_tolerations
from model import GpuGroup

NODE_MONITORING_ADDON = "eks-node-monitoring-agent"
CLOUDWATCH_ADDON = "amazon-cloudwatch-observability"
# Where the add-on runs the CloudWatch agent (its chart's namespace and service account).
CLOUDWATCH_NAMESPACE = "amazon-cloudwatch"
CLOUDWATCH_SERVICE_ACCOUNT = "cloudwatch-agent"
CLOUDWATCH_AGENT_POLICY = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"


def node_monitoring_configuration(groups: Sequence[GpuGroup]) -> dict[str, Any]:
    """The node monitoring agent's configurationValues: its DCGM server on tainted GPU nodes."""
    tolerations = union_tolerations(groups)
    return {"dcgmAgent": {"tolerations": tolerations}} if tolerations else {}


def cloudwatch_configuration(groups: Sequence[GpuGroup]) -> dict[str, Any]:
    """The CloudWatch add-on's configurationValues: its DCGM exporter tolerates exactly the GPU
    groups' taints (replacing the chart's tolerate-everything default for that DaemonSet)."""
    tolerations = union_tolerations(groups)
    return {"dcgmExporter": {"tolerations": tolerations}} if tolerations else {}


def _configuration(values: Mapping[str, Any]) -> str | None:
    return json.dumps(values, sort_keys=True) if values else None


@dataclass(frozen=True)
class EksMonitoringArgs:
    """Which add-ons to install, at which pinned versions (None: off), for which GPU groups."""

    cluster_name: pulumi.Input[str]
    gpu_groups: Sequence[GpuGroup]
    node_monitoring_version: str | None
    cloudwatch_version: str | None
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    # The system and GPU node groups (the add-ons' pods run there) and CoreDNS (the agents
    # call CloudWatch by name).
    depends_on: Sequence[pulumi.Resource]
    permissions_boundary: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class EksMonitoring(pulumi.ComponentResource):
    """The EKS node monitoring agent and the CloudWatch Observability add-on."""

    addons: dict[str, aws.eks.Addon]

    def __init__(
        self, name: str, args: EksMonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubeflow-eks:monitoring:EksMonitoring", name, None, opts)
        after_nodes = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.addons = {}
        if args.node_monitoring_version is not None:
            self.addons[NODE_MONITORING_ADDON] = aws.eks.Addon(
                f"{name}-node-health",
                cluster_name=args.cluster_name,
                addon_name=NODE_MONITORING_ADDON,
                addon_version=args.node_monitoring_version,
                configuration_values=_configuration(node_monitoring_configuration(args.gpu_groups)),
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                tags=dict(args.tags),
                opts=after_nodes,
            )
        if args.cloudwatch_version is not None:
            # Short: the role's name (cluster name, this, "-cw-role") must fit IAM's 64.
            role = IrsaRole(
                f"{name}-cw",
                IrsaRoleArgs(
                    oidc_provider_arn=args.oidc_provider_arn,
                    oidc_provider_url=args.oidc_provider_url,
                    namespace=CLOUDWATCH_NAMESPACE,
                    service_account=CLOUDWATCH_SERVICE_ACCOUNT,
                    managed_policy_arns=(CLOUDWATCH_AGENT_POLICY,),
                    permissions_boundary=args.permissions_boundary,
                    tags=args.tags,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.addons[CLOUDWATCH_ADDON] = aws.eks.Addon(
                f"{name}-gpu-metrics",
                cluster_name=args.cluster_name,
                addon_name=CLOUDWATCH_ADDON,
                addon_version=args.cloudwatch_version,
                service_account_role_arn=role.arn,
                configuration_values=_configuration(cloudwatch_configuration(args.gpu_groups)),
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                tags=dict(args.tags),
                opts=after_nodes,
            )
        self.register_outputs({"addons": sorted(self.addons)})
