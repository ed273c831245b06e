"""bootstrap/: what CI needs, under mocks; a bad config creates nothing and names the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_bootstrap.config import BootstrapConfigError, parse_bootstrap_config
from tests.bootstrap.harness import (
    ACCOUNT,
    GOOD,
    NS,
    BootstrapMocks,
    BootstrapRun,
    run_bootstrap,
)
from tests.pulumi_mocks import ROOT, Registered


@pytest.fixture(scope="module")
def run() -> BootstrapRun:
    return run_bootstrap(GOOD)


def test_state_bucket_is_versioned_encrypted_private_and_tls_only(run: BootstrapRun) -> None:
    bucket = run.one("aws:s3/bucket:Bucket")
    assert bucket.inputs["bucketPrefix"] == "kubeflow-eks-state-"
    assert "forceDestroy" not in bucket.inputs
    name = run.outputs["stateBucket"]
    versioning = run.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning == {"bucket": name, "versioningConfiguration": {"status": "Enabled"}}
    [rule] = run.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms",
        "kmsMasterKeyId": f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/k-1",
    }
    block = run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(
        block[k] is True
        for k in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    )
    ownership = run.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    [tls] = json.loads(run.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])["Statement"]
    assert tls["Effect"] == "Deny" and tls["Principal"] == "*" and tls["Action"] == "s3:*"
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert tls["Resource"] == [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]


def test_secrets_key_rotates_and_has_the_alias_the_secrets_provider_names(
    run: BootstrapRun,
) -> None:
    key = run.one("aws:kms/key:Key").inputs
    assert key["enableKeyRotation"] is True and key["deletionWindowInDays"] == 30
    alias = run.one("aws:kms/alias:Alias").inputs
    assert alias == {"name": "alias/kubeflow-eks-pulumi-secrets", "targetKeyId": "k-1"}
    variables = run.outputs["githubVariables"]
    assert variables["PULUMI_SECRETS_PROVIDER"] == (
        "awskms://alias/kubeflow-eks-pulumi-secrets?region=eu-central-1"
    )
    assert variables["PULUMI_BACKEND_URL"] == (
        f"s3://{run.outputs['stateBucket']}?region=eu-central-1"
    )


def test_github_oidc_provider_is_for_sts(run: BootstrapRun) -> None:
    provider = run.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert provider["url"] == "https://token.actions.githubusercontent.com"
    assert provider["clientIdLists"] == ["sts.amazonaws.com"]


def _trust(role: Registered) -> dict[str, Any]:
    [statement] = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    return statement


def test_only_main_and_the_prod_environment_may_assume_the_deploy_role(run: BootstrapRun) -> None:
    statement = _trust(run.role("deploy"))
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    }
    # Exact matches only: a StringLike with wildcards would let other refs or repos in.
    assert statement["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": [
                "repo:example-org/kubeflow-eks:ref:refs/heads/main",
                "repo:example-org/kubeflow-eks:environment:prod",
            ],
        }
    }
    assert run.role("deploy").inputs["maxSessionDuration"] == 3600
    assert run.outputs["githubVariables"]["AWS_DEPLOY_ROLE_ARN"] == run.outputs["deployRoleArn"]


def test_only_the_deploy_branch_gets_the_read_only_preview_role(run: BootstrapRun) -> None:
    """A preview decrypts the stack's secrets: no pull request may assume this role."""
    statement = _trust(run.role("preview"))
    assert statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == [
        "repo:example-org/kubeflow-eks:ref:refs/heads/main"
    ]
    attachment = run.mocks.named("kubeflow-eks-ci-preview-read-only").inputs
    assert attachment["policyArn"] == "arn:aws:iam::aws:policy/ReadOnlyAccess"
    statements = run.policy("kubeflow-eks-ci-preview-permissions")["Statement"]
    writes = [s for s in statements if "s3:PutObject" in s.get("Action", [])]
    assert [w["Resource"] for w in writes] == [
        f"arn:aws:s3:::{run.outputs['stateBucket']}/.pulumi/locks/*"
    ]
    assert not any(s["Effect"] == "Allow" and "kms:Encrypt" in s["Action"] for s in statements)


def test_deploy_role_can_deploy_but_not_undo_the_bootstrap(run: BootstrapRun) -> None:
    policy = run.policy("kubeflow-eks-ci-deploy-permissions")
    statements = {s["Sid"]: s for s in policy["Statement"]}
    bucket = f"arn:aws:s3:::{run.outputs['stateBucket']}"
    assert statements["StateWrite"]["Resource"] == f"{bucket}/*"
    assert {"ec2:*", "eks:*", "autoscaling:*"} <= set(statements["PlatformServices"]["Action"])
    assert statements["NoLongLivedCredentials"]["Effect"] == "Deny"
    assert "iam:CreateAccessKey" in statements["NoLongLivedCredentials"]["Action"]
    protected = statements["LeaveTheBootstrapAlone"]
    assert protected["Effect"] == "Deny"
    assert set(protected["Resource"]) == {
        run.outputs["deployRoleArn"],
        run.outputs["previewRoleArn"],
        run.outputs["oidcProviderArn"],
        run.outputs["boundaryArn"],
    }
    assert "s3:PutBucketPolicy" in statements["KeepStateSafe"]["Action"]
    assert statements["KeepSecretsKey"]["Resource"].endswith(":key/k-1")


def test_roles_the_stacks_create_carry_the_boundary_under_their_path(run: BootstrapRun) -> None:
    boundary = run.outputs["boundaryArn"]
    assert boundary == f"arn:aws:iam::{ACCOUNT}:policy/kubeflow-eks/kubeflow-eks-workload-boundary"
    statements = {
        s["Sid"]: s for s in run.policy("kubeflow-eks-ci-deploy-permissions")["Statement"]
    }
    create = statements["RolesUnderTheBoundary"]
    assert "iam:CreateRole" in create["Action"]
    assert create["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/kubeflow-eks/*"
    assert create["Condition"] == {"StringEquals": {"iam:PermissionsBoundary": boundary}}
    assert statements["KeepTheBoundary"]["Effect"] == "Deny"
    # The boundary gives no IAM changes and never the stacks' state or secrets key.
    limits = {s["Sid"]: s for s in run.policy("kubeflow-eks-ci-workload-boundary")["Statement"]}
    allowed = [a for s in limits.values() if s["Effect"] == "Allow" for a in s["Action"]]
    assert not [a for a in allowed if a.startswith("iam:") and "ServiceLinked" not in a and
                not a.startswith(("iam:Get", "iam:List"))]  # fmt: skip
    never = limits["NeverTheStacksStateOrSecrets"]
    assert never["Effect"] == "Deny" and never["Resource"][-1].endswith(":key/k-1")
    # Stack files copy these two values (docs/ci-cd.md: "Deploy from CI").
    assert run.outputs["stackConfig"] == {
        "kubeflow-eks:permissionsBoundary": boundary,
        "kubeflow-eks:viewerRoleArns": [f"arn:aws:iam::{ACCOUNT}:role/kubeflow-eks-ci-preview"],
    }


def test_an_existing_oidc_provider_is_reused() -> None:
    arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    run = run_bootstrap(
        {
            **GOOD,
            f"{NS}:existingOidcProviderArn": arn,
            f"{NS}:deployBranch": "release",
            f"{NS}:deployEnvironments": ["prod", "prod-eu"],
        }
    )
    assert run.mocks.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider") == []
    statement = _trust(run.role("deploy"))
    assert statement["Principal"] == {"Federated": arn}
    assert statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == [
        "repo:example-org/kubeflow-eks:ref:refs/heads/release",
        "repo:example-org/kubeflow-eks:environment:prod",
        "repo:example-org/kubeflow-eks:environment:prod-eu",
    ]
    assert _trust(run.role("preview"))["Condition"]["StringEquals"][
        "token.actions.githubusercontent.com:sub"
    ] == ["repo:example-org/kubeflow-eks:ref:refs/heads/release"]


BAD_CONFIGS = [
    ({f"{NS}:githubRepository": None}, f"{NS}:githubRepository: required; write OWNER/REPO"),
    ({f"{NS}:githubRepository": "kubeflow-eks"}, f"{NS}:githubRepository: got 'kubeflow-eks'"),
    ({f"{NS}:githubRepository": "org/*"}, f"{NS}:githubRepository: got 'org/*'"),
    ({f"{NS}:deployBranch": "release/*"}, f"{NS}:deployBranch: got 'release/*'"),
    ({f"{NS}:deployBranch": "refs/heads/main"}, f"{NS}:deployBranch: got 'refs/heads/main'"),
    ({f"{NS}:deployEnvironments": ["prod", "prod"]}, "names an environment twice"),
    ({f"{NS}:deployEnvironments": ["prod*"]}, "'prod*' is not a GitHub environment name"),
    ({f"{NS}:deployEnvironments": "prod"}, f"{NS}:deployEnvironments: got 'prod'"),
    ({f"{NS}:kmsAlias": "alias/aws/s3"}, f"{NS}:kmsAlias: got 'alias/aws/s3'"),
    ({f"{NS}:stateBucketPrefix": "State_Bucket"}, f"{NS}:stateBucketPrefix: got 'State_Bucket'"),
    (
        {f"{NS}:existingOidcProviderArn": "arn:aws:iam::1:oidc-provider/x"},
        "existingOidcProviderArn",
    ),
    ({f"{NS}:tags": {"aws:owner": "me"}}, "reserved aws: prefix"),
    ({f"{NS}:stateBucket": "my-bucket"}, f"{NS}:stateBucket: unknown key; known keys:"),
    ({"aws:region": None}, "aws:region: required; set aws:region"),
    ({"aws:region": "Frankfurt"}, "aws:region: got 'Frankfurt'"),
]


@pytest.mark.parametrize(("change", "expected"), BAD_CONFIGS, ids=[e for _, e in BAD_CONFIGS])
def test_bad_config_names_the_key_and_creates_nothing(
    change: dict[str, Any], expected: str
) -> None:
    config = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    mocks = BootstrapMocks()
    with pytest.raises(BootstrapConfigError) as raised:
        run_bootstrap(config, mocks)
    assert expected in str(raised.value)
    assert mocks.resources == []


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(BootstrapConfigError) as raised:
        run_bootstrap({f"{NS}:githubRepository": "nope", f"{NS}:kmsAlias": "x", f"{NS}:extra": "1"})
    assert [p.split(":")[0] + ":" + p.split(":")[1] for p in raised.value.problems] == [
        "aws:region",
        f"{NS}:githubRepository",
        f"{NS}:kmsAlias",
        f"{NS}:extra",
    ]


def test_the_example_stack_file_is_valid() -> None:
    config = yaml.safe_load(Path(ROOT / "bootstrap" / "Pulumi.example.yaml").read_text())["config"]
    raw = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith(f"{NS}:")}
    parsed = parse_bootstrap_config(raw, region=config["aws:region"])
    assert parsed.deploy_environments == ("prod",)
