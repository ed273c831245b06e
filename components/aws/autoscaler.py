"""cluster-autoscaler (Helm chart) with an IRSA role that can only resize this cluster's groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.aws.iam import IrsaRole, IrsaRoleArgs, policy_document

AUTOSCALER_NAMESPACE = "kube-system"
AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
CHART_REPO = "https://kubernetes.github.io/autoscaler"


def autoscaler_policy(cluster_name: str, node_group_arns: Sequence[str]) -> str:
    """Resize and terminate only ASGs tagged as owned by this cluster; read what it must."""
    owned = {
        "StringEquals": {
            f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned",
            "aws:ResourceTag/k8s.io/cluster-autoscaler/enabled": "true",
        }
    }
    statements: list[Mapping[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": [
                "autoscaling:SetDesiredCapacity",
                "autoscaling:TerminateInstanceInAutoScalingGroup",
            ],
            "Resource": "*",
            "Condition": owned,
        },
        {
            "Effect": "Allow",
            "Action": [
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeAutoScalingInstances",
                "autoscaling:DescribeLaunchConfigurations",
                "autoscaling:DescribeScalingActivities",
                "autoscaling:DescribeTags",
                "ec2:DescribeImages",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplateVersions",
                "ec2:GetInstanceTypesFromInstanceRequirements",
            ],
            "Resource": "*",
        },
    ]
    if node_group_arns:
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["eks:DescribeNodegroup"],
                "Resource": list(node_group_arns),
            }
        )
    return policy_document(statements)


def autoscaler_values(
    cluster_name: str, region: str, image_tag: str, role_arn: str
) -> dict[str, Any]:
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        # The autoscaler's minor version must match the cluster's (model/versions.yaml).
        "image": {"tag": image_tag},
        "rbac": {
            "serviceAccount": {
                "create": True,
                "name": AUTOSCALER_SERVICE_ACCOUNT,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            }
        },
        "extraArgs": {
            "balance-similar-node-groups": "true",
            "skip-nodes-with-local-storage": "false",
            "expander": "least-waste",
        },
        "nodeSelector": {"kubernetes.io/os": "linux"},
    }


@dataclass(frozen=True)
class ClusterAutoscalerArgs:
    cluster_name: str
    region: str
    chart_version: str
    image_tag: str
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    node_group_arns: Sequence[pulumi.Input[str]]
    provider: k8s.Provider
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    permissions_boundary: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class ClusterAutoscaler(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: ClusterAutoscalerArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("kubeflow-eks:autoscaler:ClusterAutoscaler", name, None, opts)
        policy = pulumi.Output.all(*args.node_group_arns).apply(
            lambda arns: autoscaler_policy(args.cluster_name, arns)
        )
        role = IrsaRole(
            f"{name}-irsa",
            IrsaRoleArgs(
                oidc_provider_arn=args.oidc_provider_arn,
                oidc_provider_url=args.oidc_provider_url,
                namespace=AUTOSCALER_NAMESPACE,
                service_account=AUTOSCALER_SERVICE_ACCOUNT,
                inline_policy=policy,
                permissions_boundary=args.permissions_boundary,
                tags=args.tags,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        values = role.arn.apply(
            lambda arn: autoscaler_values(args.cluster_name, args.region, args.image_tag, arn)
        )
        k8s.helm.v3.Release(
            f"{name}-chart",
            name="cluster-autoscaler",
            chart="cluster-autoscaler",
            version=args.chart_version,
            namespace=AUTOSCALER_NAMESPACE,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CHART_REPO),
            values=values,
            atomic=True,
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.provider, depends_on=args.depends_on
            ),
        )
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn})
