"""The EKS control plane (pulumi-eks), the node IAM role and a Kubernetes provider for it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from components.aws.iam import workload_role
from model import Endpoint

NODE_POLICIES = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    # Nodes pull from ECR with their role: fnjob images and custom notebook images.
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
)
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
# Read-only Kubernetes access (no Secrets): what a CI preview needs to read live objects.
CLUSTER_VIEW_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
CLUSTER_SERVICE_POLICY = "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"


def service_trust(service: str) -> str:
    """Trust for an AWS service (EKS for the control plane, EC2 for nodes)."""
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        # EKS tags its sessions (as pulumi-eks's own cluster role allows).
        "Action": ["sts:AssumeRole", "sts:TagSession"]
        if service == "eks.amazonaws.com"
        else "sts:AssumeRole",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@dataclass(frozen=True)
class EksClusterArgs:
    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[Sequence[str]]
    public_subnet_ids: pulumi.Input[Sequence[str]]
    # Who reaches the Kubernetes API (the stack's endpoint section).
    endpoint: Endpoint
    control_plane_logs: Sequence[str] = ()
    secrets_encryption: bool = True
    admin_role_arns: Sequence[str] = ()
    viewer_role_arns: Sequence[str] = ()
    permissions_boundary: str | None = None
    # Pinned EKS add-on versions (model/versions.yaml), by add-on name.
    addon_versions: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


class EksCluster(pulumi.ComponentResource):
    """An EKS cluster with access entries, IRSA's OIDC provider and the add-ons that run
    without nodes (vpc-cni, kube-proxy); the others come with ``NodeAddons``."""

    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    oidc_provider_url: pulumi.Output[str]
    node_role_arn: pulumi.Output[str]
    provider: k8s.Provider

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kubeflow-eks:cluster:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        encryption_key_arn: pulumi.Output[str] | None = None
        if args.secrets_encryption:
            key = aws.kms.Key(
                f"{name}-secrets",
                description=f"Envelope encryption of Kubernetes secrets in {args.cluster_name}",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                tags=dict(args.tags),
                opts=child,
            )
            encryption_key_arn = key.arn

        node_role = workload_role(
            f"{name}-node",
            assume_role_policy=service_trust("ec2.amazonaws.com"),
            description=f"Worker nodes of {args.cluster_name}",
            permissions_boundary=args.permissions_boundary,
            tags=args.tags,
            opts=child,
        )
        for policy_arn in NODE_POLICIES:
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy_arn.rsplit('/', 1)[-1]}",
                role=node_role.name,
                policy_arn=policy_arn,
                opts=child,
            )

        access_entries = {
            f"admin-{index}": eks.AccessEntryArgs(
                principal_arn=arn,
                access_policies={
                    "cluster-admin": eks.AccessPolicyAssociationArgs(
                        policy_arn=CLUSTER_ADMIN_POLICY,
                        access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    )
                },
            )
            for index, arn in enumerate(args.admin_role_arns)
        } | {
            f"viewer-{index}": eks.AccessEntryArgs(
                principal_arn=arn,
                access_policies={
                    "view": eks.AccessPolicyAssociationArgs(
                        policy_arn=CLUSTER_VIEW_POLICY,
                        access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    )
                },
            )
            for index, arn in enumerate(args.viewer_role_arns)
        }
        # The control plane's role, made here rather than inside pulumi-eks so that it carries
        # the same path and permissions boundary as every other role of the stack.
        service_role = workload_role(
            f"{name}-control-plane",
            assume_role_policy=service_trust("eks.amazonaws.com"),
            description=f"EKS control plane of {args.cluster_name}",
            permissions_boundary=args.permissions_boundary,
            tags=args.tags,
            opts=child,
        )
        service_policy = aws.iam.RolePolicyAttachment(
            f"{name}-control-plane",
            role=service_role.name,
            policy_arn=CLUSTER_SERVICE_POLICY,
            opts=child,
        )
        cluster = eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=args.kubernetes_version,
            service_role=service_role,
            vpc_id=args.vpc_id,
            private_subnet_ids=args.private_subnet_ids,
            public_subnet_ids=args.public_subnet_ids,
            node_associate_public_ip_address=False,
            endpoint_private_access=True,
            endpoint_public_access=args.endpoint.public_access,
            public_access_cidrs=list(args.endpoint.public_access_cidrs)
            if args.endpoint.public_access
            else None,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries=access_entries or None,
            create_oidc_provider=True,
            skip_default_node_group=True,
            enabled_cluster_log_types=list(args.control_plane_logs) or None,
            encryption_config_key_arn=encryption_key_arn,
            # CoreDNS pods need a node: it is created after the system node group (NodeAddons),
            # or its add-on stays DEGRADED and times out the first `pulumi up`.
            coredns_addon_options=eks.CoreDnsAddonOptionsArgs(enabled=False),
            # DaemonSets: ready with zero nodes, and nodes need them to become Ready.
            kube_proxy_addon_options=eks.KubeProxyAddonOptionsArgs(
                enabled=True, version=args.addon_versions["kube-proxy"]
            ),
            vpc_cni_options=eks.VpcCniOptionsArgs(
                addon_version=args.addon_versions["vpc-cni"], enable_network_policy=True
            ),
            tags=dict(args.tags),
            # EKS checks the role's policy when it creates the cluster.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service_policy]),
        )

        # The name as an output of the cluster (the component resolves once the control plane
        # and its add-ons exist): whatever takes it (node groups, add-ons, Pod Identity
        # associations) waits for them, which a plain string would not make it do.
        self.cluster_name = cluster.urn.apply(lambda _: args.cluster_name)
        self.kubeconfig = pulumi.Output.secret(cluster.kubeconfig_json)
        self.oidc_provider_arn = cluster.oidc_provider_arn
        self.oidc_provider_url = cluster.oidc_provider_url
        self.node_role_arn = node_role.arn
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            delete_unreachable=False,
            opts=child,
        )
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "kubeconfig": self.kubeconfig,
                "oidc_provider_arn": self.oidc_provider_arn,
                "oidc_provider_url": self.oidc_provider_url,
            }
        )
