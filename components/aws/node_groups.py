"""EKS managed node groups: a launch template (IMDSv2, encrypted gp3 root) and autoscaler tags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from model import NodeGroupShape, Taint

_EKS_TAINT_EFFECTS = {
    "NoSchedule": "NO_SCHEDULE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
}
_AUTOSCALER_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


def autoscaler_node_template_tags(
    labels: Mapping[str, str], taints: Sequence[Taint], gpus_per_node: int
) -> dict[str, str]:
    """ASG tags that let cluster-autoscaler build a node template for a group at zero nodes.

    Without them the autoscaler cannot know that an empty GPU group would bring
    ``nvidia.com/gpu`` capacity, the group's labels and taints, and never scales it up.
    """
    tags = {f"{_AUTOSCALER_TEMPLATE}/label/{key}": value for key, value in labels.items()}
    tags.update({f"{_AUTOSCALER_TEMPLATE}/taint/{t.key}": f"{t.value}:{t.effect}" for t in taints})
    if gpus_per_node:
        tags[f"{_AUTOSCALER_TEMPLATE}/resources/nvidia.com/gpu"] = str(gpus_per_node)
    return tags


def root_device_name(ami_type: str) -> str:
    """The volume to size and encrypt: Bottlerocket keeps images and pods on its data volume."""
    return "/dev/xvdb" if ami_type.startswith("BOTTLEROCKET") else "/dev/xvda"


@dataclass(frozen=True)
class ManagedNodeGroupArgs:
    cluster_name: pulumi.Input[str]
    # The node group's name prefix (at most 37 characters; Pulumi appends a unique suffix).
    name_prefix: str
    node_role_arn: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]
    kubernetes_version: str
    # Instance and AMI types, capacity type, sizes and root disk: the stack's system group or
    # one of its GPU groups, as the model validated it.
    shape: NodeGroupShape
    # The EKS AMI release (releaseVersion): without it EKS takes the newest release of the
    # AMI type whenever it creates or updates the group, and a later update rolls every node.
    release_version: str
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Taint] = ()
    gpus_per_node: int = 0
    autoscaler_tags: bool = False
    # EKS replaces a node that stays unhealthy (NotReady, or GPU faults the node monitoring
    # agent reports), so a broken GPU node stops holding jobs that never start.
    auto_repair: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)


class ManagedNodeGroup(pulumi.ComponentResource):
    """One EKS managed node group with our launch template and, optionally, autoscaler tags."""

    node_group_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ManagedNodeGroupArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("kubeflow-eks:nodes:ManagedNodeGroup", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            description=f"Nodes of {name}: IMDSv2 only, encrypted gp3",
            update_default_version=True,
            # Hop limit 1 keeps pods off the node role's credentials; pods use IRSA instead.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=root_device_name(args.shape.ami_type),
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=args.shape.disk_size_gb,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type=kind, tags={**args.tags, "Name": name}
                )
                for kind in ("instance", "volume")
            ],
            tags=dict(args.tags),
            opts=child,
        )
        node_group = aws.eks.NodeGroup(
            f"{name}-ng",
            cluster_name=args.cluster_name,
            node_group_name_prefix=args.name_prefix,
            node_role_arn=args.node_role_arn,
            subnet_ids=args.subnet_ids,
            version=args.kubernetes_version,
            ami_type=args.shape.ami_type,
            release_version=args.release_version,
            capacity_type=args.shape.capacity_type,
            instance_types=list(args.shape.instance_types),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.shape.min_size,
                desired_size=args.shape.desired_size,
                max_size=args.shape.max_size,
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            node_repair_config=aws.eks.NodeGroupNodeRepairConfigArgs(enabled=True)
            if args.auto_repair
            else None,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            labels=dict(args.labels),
            taints=[
                aws.eks.NodeGroupTaintArgs(
                    key=t.key, value=t.value, effect=_EKS_TAINT_EFFECTS[t.effect]
                )
                for t in args.taints
            ],
            tags=dict(args.tags),
            # The autoscaler owns the size once the group exists.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["scalingConfig.desiredSize"]),
        )
        if args.autoscaler_tags:
            asg_name = node_group.resources.apply(
                lambda resources: resources[0].autoscaling_groups[0].name  # type: ignore[index]
            )
            template_tags = autoscaler_node_template_tags(
                args.labels, args.taints, args.gpus_per_node
            )
            for key, value in sorted(template_tags.items()):
                suffix = key.removeprefix(f"{_AUTOSCALER_TEMPLATE}/").replace("/", "-")
                aws.autoscaling.Tag(
                    f"{name}-ca-{suffix}",
                    autoscaling_group_name=asg_name,
                    tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                    opts=child,
                )
        self.node_group_name = node_group.node_group_name
        self.node_group_arn = node_group.arn
        self.register_outputs({"node_group_name": self.node_group_name})
