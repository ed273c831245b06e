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
    assert {"dev", "prod", "onprem"} <= set(STACK_NAMES)


@pytest.mark.parametrize(("stack", "rule_name"), _cases())
def test_stack_keeps_the_promise(stack: str, rule_name: str) -> None:
    rule = rule_named(rule_name)
    resources = recorded(stack)
    found = [m for name, m in violations(resources) if name == rule_name]
    assert found == []
    # The rule really looked at something in the EKS stacks (a vacuous pass proves nothing).
    if stack != "onprem" and rule_name != "ecr-scan-on-push":
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
