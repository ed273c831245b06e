"""Each profile's data location on EKS, under mocks: the bucket (created or given), a grant per
profile that names only its own prefix, attached to the role its Pod Identity association
gives ``default-editor``, and the location its notebooks are told (``FNJOB_DATA_URL``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stack.problems import StackConfigError
from tests.pulumi_mocks import StackRun, reveal, run_program, stack_file_config

# The stack file's profiles, and upstream's example profile, which the stack gives the admin.
PROD_PROFILES = ("research", "production-models", "kubeflow-user-example-com")
PROD_CLUSTER = "ml-platform-prod"


def _prod(**data: Any) -> StackRun:
    config = stack_file_config("prod")
    kubeflow = {**config["kubeflow-eks:kubeflow"], "data": data}
    return run_program({**config, "kubeflow-eks:kubeflow": kubeflow}, stack="prod")


def _grants(run: StackRun) -> dict[str, dict[str, Any]]:
    """profile -> the data policy on the role of its Pod Identity association."""
    role_of = {
        a.inputs["namespace"]: a.inputs["roleArn"].rsplit("/", 1)[1]
        for a in run.mocks.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    }
    found = {}
    for policy in run.mocks.of_type("aws:iam/rolePolicy:RolePolicy"):
        if "-data-" not in policy.name:
            continue
        [profile] = [p for p, role in role_of.items() if role == policy.inputs["role"]]
        found[profile] = json.loads(policy.inputs["policy"])
    return found


def _data_url(run: StackRun, profile: str) -> str | None:
    for group in run.mocks.of_type("kubernetes:yaml/v2:ConfigGroup"):
        for obj in reveal(group.inputs["objs"]):
            if obj["kind"] == "PodDefault" and obj["metadata"]["namespace"] == profile:
                env = {e["name"]: e["value"] for e in obj["spec"]["env"]}
                return env.get("FNJOB_DATA_URL")
    raise AssertionError(f"no PodDefault in {profile}")


def _resources(policy: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        resources = statement["Resource"]
        found |= {resources} if isinstance(resources, str) else set(resources)
    return found


def test_a_created_bucket_is_private_encrypted_and_kept() -> None:
    run = _prod(create=True)
    [bucket] = run.mocks.of_type("aws:s3/bucket:Bucket")
    assert bucket.inputs["bucketPrefix"].startswith(f"{PROD_CLUSTER}-data-")
    assert not bucket.inputs.get("forceDestroy")
    [block] = run.mocks.of_type("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(
        block.inputs[k]
        for k in (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
    )
    assert run.mocks.of_type(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    [versioning] = run.mocks.of_type("aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"


def test_each_profile_may_use_only_its_own_prefix_with_the_identity_its_pods_get() -> None:
    run = _prod(create=True)
    bucket = f"{PROD_CLUSTER}-data-0123abcd"
    grants = _grants(run)
    assert set(grants) == set(PROD_PROFILES)
    for profile, policy in grants.items():
        arn = f"arn:aws:s3:::{bucket}"
        assert _resources(policy) == {arn, f"{arn}/{profile}/*"}, profile
        actions = {a for s in policy["Statement"] for a in s["Action"]}
        assert all(a.startswith("s3:") and "*" not in a for a in actions), actions
        assert not actions & {"s3:PutBucketPolicy", "s3:DeleteBucket", "s3:PutBucketAcl"}
        [listing] = [s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"]]
        assert listing["Condition"] == {
            "StringLike": {"s3:prefix": [f"{profile}/", f"{profile}/*"]}
        }
        assert _data_url(run, profile) == f"s3://{bucket}/{profile}/"
    assert run.outputs["profileData"] == {p: f"s3://{bucket}/{p}/" for p in PROD_PROFILES}


def test_a_given_bucket_and_prefix_are_used_and_nothing_is_created() -> None:
    run = _prod(bucket="corp-ml-data", prefix="kubeflow/prod/")
    assert run.mocks.of_type("aws:s3/bucket:Bucket") == []
    for profile, policy in _grants(run).items():
        arn = "arn:aws:s3:::corp-ml-data"
        assert _resources(policy) == {arn, f"{arn}/kubeflow/prod/{profile}/*"}
        assert _data_url(run, profile) == f"s3://corp-ml-data/kubeflow/prod/{profile}/"


def test_without_a_data_location_notebooks_are_told_none() -> None:
    run = _prod()
    assert _grants(run) == {}
    assert _data_url(run, "research") is None


def test_a_data_location_needs_the_profiles_pod_identity() -> None:
    config = stack_file_config("onprem")
    kubeflow = {**config["kubeflow-eks:kubeflow"], "data": {"bucket": "lab-data"}}
    with pytest.raises(StackConfigError, match="data"):
        run_program({**config, "kubeflow-eks:kubeflow": kubeflow}, stack="onprem")
