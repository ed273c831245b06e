"""IAM roles for Kubernetes service accounts (IRSA), trusted by exactly one service account."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

# Every role the stack creates lives under this path. The CI deploy role may change roles only
# here, and only with the stack's permissions boundary (bootstrap/ci_bootstrap/program.py keeps
# the same path; tests/bootstrap compares them).
ROLE_PATH = "/kubeflow-eks/"


def workload_role(
    name: str,
    *,
    assume_role_policy: pulumi.Input[str],
    description: str,
    permissions_boundary: str | None,
    tags: Mapping[str, str],
    opts: pulumi.ResourceOptions,
    name_prefix: str | None = None,
) -> aws.iam.Role:
    """An IAM role the stack creates: under ``ROLE_PATH``, bounded by the stack's
    permissions boundary (stack key ``permissionsBoundary``) when it has one."""
    return aws.iam.Role(
        name,
        name_prefix=name_prefix,
        path=ROLE_PATH,
        permissions_boundary=permissions_boundary,
        assume_role_policy=assume_role_policy,
        description=description,
        tags=dict(tags),
        opts=opts,
    )


def irsa_trust_policy(
    oidc_provider_arn: str, oidc_provider_url: str, namespace: str, service_account: str
) -> str:
    """A trust policy letting only ``namespace/service_account`` assume the role."""
    issuer = oidc_provider_url.removeprefix("https://")
    statement = {
        "Effect": "Allow",
        "Principal": {"Federated": oidc_provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "StringEquals": {
                f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                f"{issuer}:aud": "sts.amazonaws.com",
            }
        },
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, sort_keys=True)


@dataclass(frozen=True)
class IrsaRoleArgs:
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    namespace: str
    service_account: str
    managed_policy_arns: Sequence[str] = ()
    inline_policy: pulumi.Input[str] | None = None
    permissions_boundary: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.namespace or not self.service_account:
            raise ValueError("IrsaRoleArgs needs a namespace and a service_account")


class IrsaRole(pulumi.ComponentResource):
    """An IAM role assumable through the cluster's OIDC provider by one service account."""

    arn: pulumi.Output[str]
    name: pulumi.Output[str]

    def __init__(self, name: str, args: IrsaRoleArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kubeflow-eks:irsa:IrsaRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_provider_url).apply(
            lambda v: irsa_trust_policy(v[0], v[1], args.namespace, args.service_account)
        )
        role = workload_role(
            f"{name}-role",
            assume_role_policy=trust,
            description=f"IRSA role for {args.namespace}/{args.service_account}",
            permissions_boundary=args.permissions_boundary,
            tags=args.tags,
            opts=child,
        )
        for index, policy_arn in enumerate(args.managed_policy_arns):
            aws.iam.RolePolicyAttachment(
                f"{name}-managed-{index}", role=role.name, policy_arn=policy_arn, opts=child
            )
        if args.inline_policy is not None:
            aws.iam.RolePolicy(
                f"{name}-inline", role=role.id, policy=args.inline_policy, opts=child
            )
        self.arn = role.arn
        self.name = role.name
        self.register_outputs({"arn": self.arn})


def policy_document(statements: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def pod_identity_trust(cluster_arn: str, namespace: str, service_account: str) -> str:
    """Trust for EKS Pod Identity, only for one ServiceAccount of one cluster.

    An association could attach the role to any ServiceAccount; requiring the session tags
    Pod Identity sets means that gives nothing anywhere else.
    """
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/eks-cluster-arn": cluster_arn,
                        "aws:RequestTag/kubernetes-namespace": namespace,
                        "aws:RequestTag/kubernetes-service-account": service_account,
                    }
                },
            }
        ]
    )


@dataclass(frozen=True)
class PodIdentityCluster:
    """Where Pod Identity associations go, and what they wait for.

    EKS creates an association only on an existing cluster, and a pod gets its credentials
    only from the ``eks-pod-identity-agent`` add-on on its node. ``name`` is an output of the
    cluster resource (a plain string would give Pulumi nothing to order by); ``agent`` is
    that add-on.
    """

    name: pulumi.Output[str]
    agent: pulumi.Resource


def pod_identity_association(
    name: str,
    cluster: PodIdentityCluster,
    *,
    namespace: str,
    service_account: str,
    role_arn: pulumi.Input[str],
    tags: Mapping[str, str],
    parent: pulumi.Resource,
) -> aws.eks.PodIdentityAssociation:
    """Gives ``namespace/service_account`` the role, once the cluster and the agent exist."""
    return aws.eks.PodIdentityAssociation(
        name,
        cluster_name=cluster.name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role_arn,
        tags=dict(tags),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[cluster.agent]),
    )


@dataclass(frozen=True)
class AccountArns:
    """ARN prefixes of the account and region the stack deploys into."""

    partition: pulumi.Output[str]
    account: pulumi.Output[str]
    region: str

    @staticmethod
    def lookup(region: str, parent: pulumi.Resource) -> AccountArns:
        invoke = pulumi.InvokeOutputOptions(parent=parent)
        return AccountArns(
            partition=aws.get_partition_output(opts=invoke).partition,
            account=aws.get_caller_identity_output(opts=invoke).account_id,
            region=region,
        )

    def cluster(self, cluster_name: str) -> pulumi.Output[str]:
        return self.of("eks", f"cluster/{cluster_name}")

    def of(self, service: str, resource: str = "") -> pulumi.Output[str]:
        """``arn:<partition>:<service>:<region>:<account>`` (``:<resource>`` if given)."""
        tail = f":{resource}" if resource else ""
        return pulumi.Output.concat(
            "arn:", self.partition, f":{service}:{self.region}:", self.account, tail
        )
