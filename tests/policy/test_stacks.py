"""The policy pack over the real program: every resource registered under mocks for each stack
file in stacks/, checked by every rule, once directly (where secretness is visible) and once
through the running pack, as `pulumi preview --policy-pack policy` would check it."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from platform_policy.rules import RULES, ResourceInputs, rule_named, violations
from tests.policy.conftest import RunningPack
from tests.pulumi_mocks import STACKS, StackRun, is_secret, run_program, stack_file_config

STACK_NAMES = sorted(p.name.split(".")[1] for p in STACKS.glob("Pulumi.*.yaml"))

# Known defects being fixed in the program, not in the pack: each xfail is strict, so it turns
# into a failure the day the program keeps the promise and the mark must go.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}


@cache
def _run(stack: str) -> StackRun:
    return run_program(stack_file_config(stack), stack=stack)


def _reveal(value: Any) -> Any:
    """Inputs with every secret marker (at any depth) replaced by its value."""
    if is_secret(value):
        return _reveal(value["value"])
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    return value


@cache
def recorded(stack: str) -> tuple[ResourceInputs, ...]:
    return tuple(
        ResourceInputs(
            type=r.typ,
            name=r.name,
            stack=stack,
            props=_reveal(r.inputs),
            secret_props=frozenset(k for k, v in r.inputs.items() if is_secret(v)),
        )
        for r in _run(stack).mocks.resources
    )


def _cases() -> list[Any]:
    cases = []
    for stack in STACK_NAMES:
        for rule in RULES:
            reason = KNOWN_DEFECTS.get((stack, rule.name))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(stack, rule.name, marks=marks, id=f"{stack}-{rule.name}"))
    return cases


def test_every_stack_file_is_covered() -> None:
    assert any(
        r.type in rule_named("load-balancers-guarded").resource_types for r in recorded("prod")
    )
    assert {"dev", "prod", "onprem"} <= set(STACK_NAMES)


@pytest.mark.parametrize(("stack", "rule_name"), _cases())
def test_stack_keeps_the_promise(stack: str, rule_name: str) -> None:
    rule = rule_named(rule_name)
    resources = recorded(stack)
    found = [m for name, m in violations(resources) if name == rule_name]
    assert found == []
    # The rule really looked at something in the EKS stacks (a vacuous pass proves nothing).
    # (ECR repositories and the ALB come with some EKS stacks only.)
    if stack != "onprem" and rule_name not in {"ecr-scan-on-push", "load-balancers-guarded"}:
        assert any(r.type in rule.resource_types for r in resources)


def test_the_running_pack_reports_what_the_rules_report(policy_pack: RunningPack) -> None:
    for stack in STACK_NAMES:
        expected = sorted(
            violations(ResourceInputs(r.type, r.name, r.stack, r.props) for r in recorded(stack))
        )
        reported = []
        for resource in _run(stack).mocks.resources:
            response = policy_pack.analyze(
                resource.typ, resource.name, resource.inputs, stack=stack
            )
            reported.extend(
                (d.policyName, d.message.split("\n", 1)[1]) for d in response.diagnostics
            )
        assert sorted(reported) == expected, stack
        known = {rule for (s, rule) in KNOWN_DEFECTS if s == stack}
        assert {name for name, _ in reported} <= known, stack


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_the_secret_rule_sees_kubeflow_secrets_arrive_as_pulumi_secrets(stack: str) -> None:
    groups = [
        r
        for r in recorded(stack)
        if r.type == "kubernetes:yaml/v2:ConfigGroup"
        and any(o.get("kind") == "Secret" for o in r.props.get("objs", []))
    ]
    assert groups, "Kubeflow applies Secrets in every example stack"
    rule = rule_named("kubernetes-secrets-not-plaintext")
    for group in groups:
        assert group.secret_props == {"objs"}
        # The same group with its secretness dropped is what the rule exists to catch.
        exposed = ResourceInputs(group.type, group.name, stack, group.props, frozenset())
        assert any("holds Kubernetes Secrets in plain text" in m for m in rule.check(exposed))


def _prod_with(**changes: Any) -> dict[str, Any]:
    """prod's stack config with some keys (without the namespace) replaced."""
    return stack_file_config("prod", **{f"kubeflow-eks:{k}": v for k, v in changes.items()})


def _prod_gpu_groups(**changes: Any) -> list[dict[str, Any]]:
    config = stack_file_config("prod")
    return [{**group, **changes} for group in config["kubeflow-eks:gpuNodeGroups"]]


def _prod_kubeflow(**load_balancer: Any) -> dict[str, Any]:
    kubeflow = stack_file_config("prod")["kubeflow-eks:kubeflow"]
    return {**kubeflow, "loadBalancer": {**kubeflow["loadBalancer"], **load_balancer}}


# What the pack exists to refuse, each written as a stack file the model accepts.
REFUSED = {
    "the endpoint open to 0.0.0.0/0 in two halves": (
        {"endpoint": {"publicAccess": True, "publicAccessCidrs": ["0.0.0.0/1", "128.0.0.0/1"]}},
        "eks-public-endpoint-restricted",
    ),
    "a GPU group of up to 1000 nodes": (
        {"gpuNodeGroups": _prod_gpu_groups(maxSize=1000)},
        "gpu-node-groups-bounded",
    ),
    "Kubeflow's ALB open to the internet": (
        {"kubeflow": _prod_kubeflow(allowedCidrs=["0.0.0.0/0"])},
        "security-groups-not-open-to-world",
    ),
    "prod without control-plane logs": ({"controlPlaneLogs": []}, "eks-control-plane-logs"),
}


@pytest.mark.parametrize(("change", "rule_name"), REFUSED.values(), ids=list(REFUSED))
def test_the_pack_refuses_a_stack_the_model_accepts(change: dict[str, Any], rule_name: str) -> None:
    run = run_program(_prod_with(**change), stack="prod")
    resources = [
        ResourceInputs(r.typ, r.name, "prod", _reveal(r.inputs)) for r in run.mocks.resources
    ]
    assert rule_name in {name for name, _ in violations(resources)}


def test_untainted_gpu_groups_pass_the_model_and_the_pack() -> None:
    """The model documents `taints: []` as "no taint on purpose"; the pack agrees."""
    run = run_program(_prod_with(gpuNodeGroups=_prod_gpu_groups(taints=[])), stack="prod")
    resources = [
        ResourceInputs(r.typ, r.name, "prod", _reveal(r.inputs)) for r in run.mocks.resources
    ]
    groups = [r for r in resources if r.type == "aws:eks/nodeGroup:NodeGroup" and "gpu" in r.name]
    assert groups and all(r.props["taints"] == [] for r in groups)
    assert violations(resources) == []
