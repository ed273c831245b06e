"""What GitHub Actions needs to deploy kubeflow-eks, created once per AWS account.

- a state bucket (versioned, KMS-encrypted, public access blocked, TLS only) for the S3 backend;
- a KMS key for the stacks' secrets (`awskms://` secrets provider) and the bucket;
- GitHub's OIDC provider, so workflows get short-lived credentials and no key is stored;
- a deploy role that only the deploy branch and the named environments may assume, which
  changes IAM roles only under the stacks' path and permissions boundary;
- the permissions boundary every role a stack creates carries;
- a read-only preview role for the deploy branch (no change to AWS or to stack state).

The policy documents are pure functions of ARNs, so tests read them as data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from ci_bootstrap.config import BootstrapConfig

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"
READ_ONLY_POLICY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
# Roles the stacks create live under this path, bounded by this policy (components/aws/iam.py
# keeps the same path; stack files name the boundary in permissionsBoundary).
ROLE_PATH = "/kubeflow-eks/"
BOUNDARY_NAME = "kubeflow-eks-workload-boundary"
# Fixed names, so stack files can name the preview role (viewerRoleArns) before it exists.
DEPLOY_ROLE_NAME = "kubeflow-eks-ci-deploy"
PREVIEW_ROLE_NAME = "kubeflow-eks-ci-preview"
# What the stacks' own roles call: nodes (EC2, ECR, SSM, the VPC CNI), EBS volumes (KMS),
# the cluster autoscaler, the load balancer controller (ELB, ACM, WAF, Shield, Cognito),
# Pod Identity, profile registries (ECR) and data buckets (S3), control-plane logs, and the
# CloudWatch agent's metrics, logs and traces (CloudWatch, X-Ray).
WORKLOAD_SERVICES = (
    "acm:*",
    "autoscaling:*",
    "cloudwatch:*",
    "cognito-idp:DescribeUserPoolClient",
    "ec2:*",
    "ec2messages:*",
    "ecr:*",
    "eks:*",
    "eks-auth:AssumeRoleForPodIdentity",
    "elasticloadbalancing:*",
    "kms:*",
    "logs:*",
    "s3:*",
    "shield:*",
    "ssm:*",
    "ssmmessages:*",
    "tag:GetResources",
    "waf-regional:*",
    "wafv2:*",
    # The CloudWatch agent (GPU metrics add-on) forwards Application Signals traces to X-Ray.
    "xray:GetSamplingRules",
    "xray:GetSamplingStatisticSummaries",
    "xray:GetSamplingTargets",
    "xray:PutTelemetryRecords",
    "xray:PutTraceSegments",
)
# Service-linked roles a first deploy into a fresh account makes AWS create.
SERVICE_LINKED_ROLES = (
    "autoscaling.amazonaws.com",
    "eks.amazonaws.com",
    "eks-nodegroup.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
    "spot.amazonaws.com",
)

Policy = dict[str, Any]


def deploy_subjects(cfg: BootstrapConfig) -> list[str]:
    """The OIDC `sub` claims that may deploy: the branch, and jobs in the named environments."""
    repo = f"repo:{cfg.github_repository}"
    return [f"{repo}:ref:refs/heads/{cfg.deploy_branch}"] + [
        f"{repo}:environment:{name}" for name in cfg.deploy_environments
    ]


def preview_subjects(cfg: BootstrapConfig) -> list[str]:
    """Only the deploy branch: a preview decrypts the stack's secrets, and code on a pull
    request's branch is not yet reviewed."""
    return [f"repo:{cfg.github_repository}:ref:refs/heads/{cfg.deploy_branch}"]


def github_trust_policy(provider_arn: str, subjects: Sequence[str]) -> Policy:
    """Only tokens GitHub issued for this repository's listed subjects, meant for STS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    # StringEquals, never StringLike: no wildcard can widen the subjects.
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                        f"{GITHUB_OIDC_HOST}:sub": list(subjects),
                    }
                },
            }
        ],
    }


def state_bucket_policy(bucket_arn: str) -> Policy:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


def _state_access(bucket_arn: str, writable: str) -> list[Policy]:
    return [
        {
            "Sid": "StateBucket",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketVersioning"],
            "Resource": bucket_arn,
        },
        {
            "Sid": "StateRead",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{bucket_arn}/*",
        },
        {
            "Sid": "StateWrite",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": f"{bucket_arn}/{writable}",
        },
    ]


def preview_permissions(bucket_arn: str, key_arn: str) -> Policy:
    """On top of ReadOnlyAccess: read state, take the stack lock, decrypt the stack's secrets
    (the role's trust admits the deploy branch only, so no pull request gets this)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            *_state_access(bucket_arn, ".pulumi/locks/*"),
            {
                "Sid": "SecretsKey",
                "Effect": "Allow",
                # GenerateDataKey: lock files are written encrypted with the bucket's key.
                "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"],
                "Resource": key_arn,
            },
        ],
    }


def _account_arn(any_iam_arn: str) -> str:
    """``arn:<partition>:iam::<account>`` of an IAM ARN."""
    return any_iam_arn.split(":policy/", 1)[0].split(":role/", 1)[0]


def workload_boundary(bucket_arn: str, key_arn: str) -> Policy:
    """The most any role a stack creates may do: the AWS services its nodes, add-ons and
    controllers call (their own policies narrow it further), never IAM changes, never the
    stacks' state or secrets."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PlatformWorkloads",
                "Effect": "Allow",
                "Action": list(WORKLOAD_SERVICES),
                "Resource": "*",
            },
            {
                # The load balancer controller reads certificates and creates ELB's
                # service-linked role; EKS creates its own.
                "Sid": "IamReadsAndServiceLinkedRoles",
                "Effect": "Allow",
                "Action": [
                    "iam:CreateServiceLinkedRole",
                    "iam:GetServerCertificate",
                    "iam:ListServerCertificates",
                ],
                "Resource": "*",
            },
            {
                "Sid": "NeverTheStacksStateOrSecrets",
                "Effect": "Deny",
                "Action": ["s3:*", "kms:*"],
                "Resource": [bucket_arn, f"{bucket_arn}/*", key_arn],
            },
        ],
    }


def deploy_permissions(
    bucket_arn: str, key_arn: str, boundary_arn: str, protected_iam_arns: Sequence[str]
) -> Policy:
    """What `pulumi up` of kubeflow-eks needs, and nothing that could undo this bootstrap.

    IAM is the dangerous part: the role creates and changes roles only under ``ROLE_PATH``
    and only with ``boundary_arn`` as their permissions boundary, so no role a stack makes can
    do more than the boundary allows (in particular, no IAM changes and no stack secrets).
    """
    account = _account_arn(boundary_arn)
    own_roles = f"{account}:role{ROLE_PATH}*"
    bounded = {"StringEquals": {"iam:PermissionsBoundary": boundary_arn}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            *_state_access(bucket_arn, "*"),
            {
                "Sid": "SecretsKey",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"],
                "Resource": key_arn,
            },
            {
                "Sid": "PlatformServices",
                "Effect": "Allow",
                "Action": [
                    "acm:*",
                    "autoscaling:*",
                    "ec2:*",
                    "ecr:*",
                    "eks:*",
                    "elasticloadbalancing:*",
                    "logs:Describe*",
                    "logs:List*",
                ],
                "Resource": "*",
            },
            {
                # Profiles' data buckets (kubeflow.data); the state bucket is denied below.
                "Sid": "DataBuckets",
                "Effect": "Allow",
                "Action": [
                    "s3:CreateBucket",
                    "s3:DeleteBucket",
                    "s3:ListBucket",
                    "s3:GetBucket*",
                    "s3:PutBucketTagging",
                    "s3:PutBucketVersioning",
                    "s3:PutBucketPublicAccessBlock",
                    "s3:GetAccelerateConfiguration",
                    "s3:GetLifecycleConfiguration",
                    "s3:GetReplicationConfiguration",
                    "s3:GetEncryptionConfiguration",
                    "s3:PutEncryptionConfiguration",
                ],
                "Resource": "*",
            },
            {
                # Records for Kubeflow and its certificate; private DNS of the VPC endpoints.
                "Sid": "Dns",
                "Effect": "Allow",
                "Action": [
                    "route53:AssociateVPCWithHostedZone",
                    "route53:ChangeResourceRecordSets",
                    "route53:GetChange",
                    "route53:GetHostedZone",
                    "route53:ListResourceRecordSets",
                    "route53:ListTagsForResource",
                ],
                "Resource": "*",
            },
            {
                "Sid": "EksAmisAndIdentity",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter", "ssm:GetParameters", "sts:GetCallerIdentity"],
                "Resource": "*",
            },
            {
                "Sid": "ClusterKeys",
                "Effect": "Allow",
                "Action": [
                    "kms:CreateKey",
                    "kms:CreateAlias",
                    "kms:CreateGrant",
                    "kms:DeleteAlias",
                    "kms:DescribeKey",
                    "kms:DisableKeyRotation",
                    "kms:EnableKeyRotation",
                    "kms:GetKeyPolicy",
                    "kms:GetKeyRotationStatus",
                    "kms:ListAliases",
                    "kms:ListResourceTags",
                    "kms:PutKeyPolicy",
                    "kms:ScheduleKeyDeletion",
                    "kms:TagResource",
                    "kms:UntagResource",
                    "kms:UpdateKeyDescription",
                ],
                "Resource": "*",
            },
            {
                "Sid": "ReadIam",
                "Effect": "Allow",
                "Action": ["iam:Get*", "iam:List*"],
                "Resource": "*",
            },
            {
                # Every action here that IAM can condition on the role's boundary is.
                "Sid": "RolesUnderTheBoundary",
                "Effect": "Allow",
                "Action": [
                    "iam:AttachRolePolicy",
                    "iam:CreateRole",
                    "iam:DeleteRole",
                    "iam:DeleteRolePolicy",
                    "iam:DetachRolePolicy",
                    "iam:PutRolePermissionsBoundary",
                    "iam:PutRolePolicy",
                    "iam:UpdateAssumeRolePolicy",
                ],
                "Resource": own_roles,
                "Condition": bounded,
            },
            {
                "Sid": "OwnRolesDescriptions",
                "Effect": "Allow",
                "Action": [
                    "iam:PassRole",
                    "iam:TagRole",
                    "iam:UntagRole",
                    "iam:UpdateRole",
                    "iam:UpdateRoleDescription",
                ],
                "Resource": own_roles,
            },
            {
                "Sid": "ServiceLinkedRoles",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": f"{account}:role/aws-service-role/*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": list(SERVICE_LINKED_ROLES)}},
            },
            {
                "Sid": "ClusterOidcProviders",
                "Effect": "Allow",
                "Action": [
                    "iam:CreateOpenIDConnectProvider",
                    "iam:DeleteOpenIDConnectProvider",
                    "iam:TagOpenIDConnectProvider",
                    "iam:UntagOpenIDConnectProvider",
                    "iam:UpdateOpenIDConnectProviderThumbprint",
                ],
                "Resource": f"{account}:oidc-provider/oidc.eks.*",
            },
            {
                "Sid": "KeepTheBoundary",
                "Effect": "Deny",
                "Action": "iam:DeleteRolePermissionsBoundary",
                "Resource": "*",
            },
            {
                "Sid": "NoLongLivedCredentials",
                "Effect": "Deny",
                "Action": [
                    "iam:CreateUser",
                    "iam:CreateAccessKey",
                    "iam:CreateLoginProfile",
                    "iam:UpdateLoginProfile",
                    "organizations:*",
                    "account:*",
                ],
                "Resource": "*",
            },
            {
                "Sid": "LeaveTheBootstrapAlone",
                "Effect": "Deny",
                "NotAction": ["iam:Get*", "iam:List*", "iam:PassRole"],
                "Resource": [*protected_iam_arns, boundary_arn],
            },
            {
                "Sid": "KeepStateSafe",
                "Effect": "Deny",
                "Action": [
                    "s3:DeleteBucket",
                    "s3:DeleteBucketPolicy",
                    "s3:PutBucketPolicy",
                    "s3:PutBucketVersioning",
                    "s3:PutEncryptionConfiguration",
                    "s3:PutBucketPublicAccessBlock",
                    "s3:DeleteObjectVersion",
                ],
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
            },
            {
                "Sid": "KeepSecretsKey",
                "Effect": "Deny",
                "Action": [
                    "kms:DisableKey",
                    "kms:PutKeyPolicy",
                    "kms:ScheduleKeyDeletion",
                    "kms:CreateGrant",
                ],
                "Resource": key_arn,
            },
        ],
    }


def _json(builder: Any, *args: pulumi.Input[Any]) -> pulumi.Output[str]:
    return pulumi.Output.all(*args).apply(lambda values: json.dumps(builder(*values), indent=2))


class CiFoundation(pulumi.ComponentResource):
    """State bucket, secrets key, GitHub OIDC provider, deploy and preview roles."""

    def __init__(
        self, name: str, cfg: BootstrapConfig, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubeflow-eks-bootstrap:ci:CiFoundation", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Losing the key or the bucket loses every stack's secrets and state.
        kept = pulumi.ResourceOptions(parent=self, protect=True)
        tags = {"kubeflow-eks:purpose": "ci", **cfg.tags}

        key = aws.kms.Key(
            f"{name}-secrets",
            description="kubeflow-eks: Pulumi stack secrets and state encryption",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            tags=tags,
            opts=kept,
        )
        aws.kms.Alias(f"{name}-secrets", name=cfg.kms_alias, target_key_id=key.key_id, opts=child)

        bucket = aws.s3.Bucket(
            f"{name}-state", bucket_prefix=cfg.state_bucket_prefix, tags=tags, opts=kept
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-state",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-state",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketVersioning(
            f"{name}-state",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status="Enabled"
            ),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-state",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=key.arn
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-state-tls-only",
            bucket=bucket.id,
            policy=_json(state_bucket_policy, bucket.arn),
            opts=child,
        )

        if cfg.existing_oidc_provider_arn:
            provider_arn: pulumi.Output[str] = pulumi.Output.from_input(
                cfg.existing_oidc_provider_arn
            )
        else:
            provider = aws.iam.OpenIdConnectProvider(
                f"{name}-github",
                url=f"https://{GITHUB_OIDC_HOST}",
                client_id_lists=[STS_AUDIENCE],
                tags=tags,
                opts=child,
            )
            provider_arn = provider.arn

        boundary = aws.iam.Policy(
            f"{name}-workload-boundary",
            name=BOUNDARY_NAME,
            path=ROLE_PATH,
            description="The most any role a kubeflow-eks stack creates may do",
            policy=_json(workload_boundary, bucket.arn, key.arn),
            tags=tags,
            opts=kept,
        )
        deploy_role = aws.iam.Role(
            f"{name}-deploy",
            name=DEPLOY_ROLE_NAME,
            description=f"Deploys kubeflow-eks from {cfg.github_repository} (GitHub Actions)",
            assume_role_policy=_json(
                lambda arn: github_trust_policy(arn, deploy_subjects(cfg)), provider_arn
            ),
            max_session_duration=3600,
            tags=tags,
            opts=child,
        )
        preview_role = aws.iam.Role(
            f"{name}-preview",
            name=PREVIEW_ROLE_NAME,
            description=f"Previews kubeflow-eks on {cfg.deploy_branch} of {cfg.github_repository}",
            assume_role_policy=_json(
                lambda arn: github_trust_policy(arn, preview_subjects(cfg)), provider_arn
            ),
            max_session_duration=3600,
            tags=tags,
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-preview-read-only",
            role=preview_role.name,
            policy_arn=READ_ONLY_POLICY,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-preview-permissions",
            role=preview_role.id,
            policy=_json(preview_permissions, bucket.arn, key.arn),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-deploy-permissions",
            role=deploy_role.id,
            policy=_json(
                lambda bucket_arn, key_arn, boundary_arn, *arns: deploy_permissions(
                    bucket_arn, key_arn, boundary_arn, arns
                ),
                bucket.arn,
                key.arn,
                boundary.arn,
                deploy_role.arn,
                preview_role.arn,
                provider_arn,
            ),
            opts=child,
        )

        self.state_bucket = bucket.bucket
        self.backend_url = pulumi.Output.concat("s3://", bucket.bucket, "?region=", cfg.region)
        self.secrets_provider = f"awskms://{cfg.kms_alias}?region={cfg.region}"
        self.deploy_role_arn = deploy_role.arn
        self.preview_role_arn = preview_role.arn
        self.boundary_arn = boundary.arn
        self.oidc_provider_arn = provider_arn
        self.register_outputs(
            {
                "state_bucket": self.state_bucket,
                "backend_url": self.backend_url,
                "secrets_provider": self.secrets_provider,
                "deploy_role_arn": self.deploy_role_arn,
                "preview_role_arn": self.preview_role_arn,
                "boundary_arn": self.boundary_arn,
            }
        )


def github_variables(
    cfg: BootstrapConfig, foundation: CiFoundation
) -> Mapping[str, pulumi.Input[str]]:
    """The repository variables the workflows (.github/workflows/) read, by name."""
    values: dict[str, pulumi.Input[str]] = {
        "AWS_REGION": cfg.region,
        "AWS_DEPLOY_ROLE_ARN": foundation.deploy_role_arn,
        "AWS_PREVIEW_ROLE_ARN": foundation.preview_role_arn,
        "PULUMI_BACKEND_URL": foundation.backend_url,
        "PULUMI_SECRETS_PROVIDER": foundation.secrets_provider,
    }
    return values


def build_bootstrap(cfg: BootstrapConfig) -> dict[str, Any]:
    """Register the bootstrap's resources; returns the stack outputs."""
    foundation = CiFoundation("kubeflow-eks-ci", cfg)
    return {
        "stateBucket": foundation.state_bucket,
        "deployRoleArn": foundation.deploy_role_arn,
        "previewRoleArn": foundation.preview_role_arn,
        "oidcProviderArn": foundation.oidc_provider_arn,
        "boundaryArn": foundation.boundary_arn,
        "githubVariables": dict(github_variables(cfg, foundation)),
        # What every stack CI deploys writes in its stack file (docs/ci-cd.md: "Deploy from CI").
        "stackConfig": {
            "kubeflow-eks:permissionsBoundary": foundation.boundary_arn,
            "kubeflow-eks:viewerRoleArns": [foundation.preview_role_arn],
        },
    }
