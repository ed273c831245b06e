"""Where each profile's jobs live in ECR, and the identity its notebooks push with.

Blob mounting is switched on for the account (``BLOB_MOUNTING``), so a base layer pushed once
is mounted into every profile's repository instead of stored again.

Per profile:
- an ECR prefix ``<cluster>/<profile>/``: the repository fnjob pushes to by default
  (``<prefix>fnjob``: scan on push, a lifecycle that keeps the last N untagged images) and a
  creation template, so a push to any other name under the prefix creates its repository with
  the same lifecycle;
- an IAM role for the profile's ``default-editor`` ServiceAccount, through EKS Pod Identity,
  that may push and pull only under the prefix, and pull the stack's notebook image (the
  default base of jobs).

Why Pod Identity and not IRSA: the profile controller creates and owns ``default-editor``;
IRSA would need a role annotation on it (a patch racing the controller), and a trust policy
per role tied to the cluster's OIDC issuer. A Pod Identity association is an AWS resource
naming the namespace and ServiceAccount; nothing on the cluster changes. The role's trust
also requires the session tags of exactly that namespace, ServiceAccount and cluster, so
associating it elsewhere gives nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.aws.iam import (
    AccountArns,
    PodIdentityCluster,
    pod_identity_association,
    pod_identity_trust,
    policy_document,
    workload_role,
)

JOB_REPOSITORY = "fnjob"
PROFILE_SERVICE_ACCOUNT = "default-editor"
PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:DescribeImages",
    "ecr:DescribeRepositories",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
    # A push to a new name under the prefix creates the repository (creation template).
    "ecr:CreateRepository",
)
PULL_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
)


def keep_untagged_policy(count: int) -> str:
    """ECR lifecycle: expire untagged images beyond the newest ``count``. fnjob pushes by
    digest, so every build is an untagged image."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"keep the newest {count} untagged images",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "imageCountMoreThan",
                        "countNumber": count,
                    },
                    "action": {"type": "expire"},
                }
            ]
        },
        sort_keys=True,
    )


def profile_push_policy(arn_base: str, prefix: str, pullable: Sequence[str]) -> str:
    """Push and pull under ``prefix`` only; pull the listed repositories (base images).

    ``arn_base`` is ``arn:<partition>:ecr:<region>:<account>``.
    """
    repositories = f"{arn_base}:repository/{prefix}*"
    statements: list[Mapping[str, Any]] = [
        {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
        {"Effect": "Allow", "Action": list(PUSH_ACTIONS), "Resource": repositories},
    ]
    if pullable:
        statements.append(
            {
                "Effect": "Allow",
                "Action": list(PULL_ACTIONS),
                "Resource": [f"{arn_base}:repository/{name}" for name in pullable],
            }
        )
    return policy_document(statements)


def role_name_prefix(cluster_name: str, profile: str) -> str:
    """``<cluster>-<profile>-``, shortened with a digest to IAM's 38 characters."""
    prefix = f"{cluster_name}-{profile}-"
    if len(prefix) <= 38:
        return prefix
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:8]
    return f"{prefix[:29]}{digest}-"


def _trust_of_editor(namespace: str, cluster_arn: str) -> str:
    return pod_identity_trust(cluster_arn, namespace, PROFILE_SERVICE_ACCOUNT)


def _push_policy_from(prefix: str, values: list[str]) -> str:
    return profile_push_policy(values[0], prefix, values[1:])


def scanned_repository(
    name: str,
    repository_name: str,
    *,
    keep_untagged: int,
    tags: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> aws.ecr.Repository:
    """A stack-owned ECR repository: scanned on push, encrypted, untagged images trimmed.
    Its images are rebuilt from code, so the stack's destroy takes them along."""
    repository = aws.ecr.Repository(
        name,
        name=repository_name,
        image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
            scan_on_push=True
        ),
        image_tag_mutability="MUTABLE",
        encryption_configurations=[
            aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")
        ],
        force_delete=True,
        tags=dict(tags),
        opts=opts,
    )
    aws.ecr.LifecyclePolicy(
        name, repository=repository.name, policy=keep_untagged_policy(keep_untagged), opts=opts
    )
    return repository


@dataclass(frozen=True)
class ProfileRegistriesArgs:
    cluster_name: str
    pod_identity: PodIdentityCluster
    region: str
    profiles: Sequence[str]
    keep_untagged_images: int
    # Repositories every profile may pull from (the stack's notebook image).
    base_repositories: Sequence[pulumi.Input[str]] = ()
    permissions_boundary: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    # `Profile/<name>` entries of kubeflow.allowDeletion: those profiles' repositories go
    # with them; every other profile's repository (its images) outlives its removal.
    allow_deletion: Collection[str] = ()


class ProfileRegistries(pulumi.ComponentResource):
    """ECR prefixes and Pod Identity push roles, one per profile."""

    # profile -> where fnjob pushes (the registry host and prefix, without the image name)
    registries: dict[str, pulumi.Output[str]]
    role_arns: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: ProfileRegistriesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubeflow-eks:registry:ProfileRegistries", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        arns = AccountArns.lookup(args.region, self)
        cluster_arn = arns.cluster(args.cluster_name)
        arn_base = arns.of("ecr")
        lifecycle = keep_untagged_policy(args.keep_untagged_images)
        # ECR mounts a layer across repositories (fnjob's base layers: one CUDA base stored
        # once, not once per profile) only with this account setting on, and between
        # repositories of the same encryption (all of the stack's are AES256).
        # The setting is the account's: a stack that goes leaves it on for the others.
        aws.ecr.AccountSetting(
            f"{name}-blob-mounting",
            name="BLOB_MOUNTING",
            value="ENABLED",
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.registries = {}
        self.role_arns = {}
        for profile in args.profiles:
            prefix = f"{args.cluster_name}/{profile}/"
            retain = f"Profile/{profile}" not in args.allow_deletion
            repository = scanned_repository(
                f"{name}-{profile}",
                f"{prefix}{JOB_REPOSITORY}",
                keep_untagged=args.keep_untagged_images,
                tags={**args.tags, "kubeflow-eks:profile": profile},
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=retain),
            )
            aws.ecr.RepositoryCreationTemplate(
                f"{name}-{profile}",
                prefix=prefix.rstrip("/"),
                applied_fors=["CREATE_ON_PUSH"],
                description=f"fnjob images of profile {profile} in {args.cluster_name}",
                image_tag_mutability="MUTABLE",
                lifecycle_policy=lifecycle,
                encryption_configurations=[
                    aws.ecr.RepositoryCreationTemplateEncryptionConfigurationArgs(
                        encryption_type="AES256"
                    )
                ],
                opts=child,
            )
            trust = cluster_arn.apply(functools.partial(_trust_of_editor, profile))
            role = workload_role(
                f"{name}-{profile}",
                # Profile names go up to 63 characters: IAM allows a 38-character prefix.
                name_prefix=role_name_prefix(args.cluster_name, profile),
                assume_role_policy=trust,
                description=f"fnjob pushes of {profile}/{PROFILE_SERVICE_ACCOUNT}",
                permissions_boundary=args.permissions_boundary,
                tags=args.tags,
                opts=child,
            )
            policy = pulumi.Output.all(arn_base, *args.base_repositories).apply(
                functools.partial(_push_policy_from, prefix)
            )
            aws.iam.RolePolicy(f"{name}-{profile}", role=role.id, policy=policy, opts=child)
            pod_identity_association(
                f"{name}-{profile}",
                args.pod_identity,
                namespace=profile,
                service_account=PROFILE_SERVICE_ACCOUNT,
                role_arn=role.arn,
                tags=args.tags,
                parent=self,
            )
            self.registries[profile] = repository.repository_url.apply(
                lambda url: url.rsplit("/", 1)[0]
            )
            self.role_arns[profile] = role.arn
        self.register_outputs({"registries": self.registries})
