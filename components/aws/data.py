"""Where each profile keeps its data on EKS: an S3 prefix per profile, read/write for that
profile's identity only.

The bucket is created by the stack (private, encrypted, versioned; kept when the stack is
destroyed unless empty: it holds data, not code) or given (a bucket the platform already has,
optionally under a prefix). Each profile gets ``s3://<bucket>/<prefix><profile>/``: the
profile's Pod Identity role (the one its ``default-editor`` ServiceAccount already has, see
``components.aws.registry``) may list, read, write and delete there and nowhere else in the
bucket. Notebooks and fnjob jobs both run as ``default-editor``, so both reach it with the
same credentials; notebooks learn the location from the PodDefault (``FNJOB_DATA_URL``).

A ServiceAccount has one Pod Identity association, so the data policy is attached to the
existing role rather than to a second association.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

import model.kubeflow
from components.aws.iam import policy_document

_SseDefault = (
    aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs
)
READ_WRITE_ACTIONS = (
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:ListMultipartUploadParts",
    "s3:PutObject",
)


def profile_prefix(prefix: str, profile: str) -> str:
    """The key prefix of one profile: ``<prefix><profile>/``."""
    return f"{prefix}{profile}/"


def profile_data_policy(partition: str, bucket: str, prefix: str) -> str:
    """Read/write on the objects under ``prefix`` of ``bucket``, and listing only there."""
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    return policy_document(
        [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}},
            },
            {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": bucket_arn},
            {
                "Effect": "Allow",
                "Action": list(READ_WRITE_ACTIONS),
                "Resource": f"{bucket_arn}/{prefix}*",
            },
        ]
    )


def _role_name(role_arn: str) -> str:
    # arn:aws:iam::<account>:role/<path/>name: a RolePolicy names the role by its name.
    return role_arn.rsplit("/", 1)[-1]


def _policy_of(prefix: str, values: list[str]) -> str:
    partition, bucket = values
    return profile_data_policy(partition, bucket, prefix)


@dataclass(frozen=True)
class ProfileDataArgs:
    cluster_name: str
    profiles: Sequence[str]
    # profile -> ARN of its Pod Identity role (components.aws.registry.ProfileRegistries).
    role_arns: Mapping[str, pulumi.Input[str]]
    # The stack's `kubeflow.data` (validated there): the bucket to create or use, the prefix.
    data: model.kubeflow.ProfileData
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [p for p in self.profiles if p not in self.role_arns]
        if missing:
            raise ValueError(f"role_arns: no Pod Identity role for profiles {missing}")
        if not self.data.enabled:
            raise ValueError("data: neither create nor bucket is set, so there is no bucket")


class ProfileData(pulumi.ComponentResource):
    """The data bucket (created or given) and each profile's read/write grant on its prefix."""

    bucket: pulumi.Output[str]
    # profile -> s3://<bucket>/<prefix><profile>/
    urls: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: ProfileDataArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubeflow-eks:data:ProfileData", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        if args.data.bucket is None:
            self.bucket = self._created_bucket(name, args, child)
        else:
            self.bucket = pulumi.Output.from_input(args.data.bucket)
        self.urls = {}
        for profile in args.profiles:
            prefix = profile_prefix(args.data.prefix, profile)
            aws.iam.RolePolicy(
                f"{name}-{profile}",
                role=pulumi.Output.from_input(args.role_arns[profile]).apply(_role_name),
                policy=pulumi.Output.all(partition, self.bucket).apply(
                    functools.partial(_policy_of, prefix)
                ),
                opts=child,
            )
            self.urls[profile] = pulumi.Output.concat("s3://", self.bucket, "/", prefix)
        self.register_outputs({"bucket": self.bucket, "urls": self.urls})

    @staticmethod
    def _created_bucket(
        name: str, args: ProfileDataArgs, child: pulumi.ResourceOptions
    ) -> pulumi.Output[str]:
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            # Bucket names are global: a prefix, and AWS adds a unique suffix.
            bucket_prefix=f"{args.cluster_name[:30]}-data-".lower(),
            force_destroy=False,
            tags=dict(args.tags),
            opts=child,
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-bucket",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-bucket",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=_SseDefault(sse_algorithm="AES256")
                )
            ],
            opts=child,
        )
        aws.s3.BucketVersioning(
            f"{name}-bucket",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                status="Enabled"
            ),
            opts=child,
        )
        created: pulumi.Output[Any] = bucket.bucket
        return created
