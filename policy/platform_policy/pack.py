"""The rules as Pulumi policies: what `pulumi preview/up --policy-pack policy` runs.

Each rule becomes one mandatory `ResourceValidationPolicy`. The SDK hands a policy proxies that
raise on values unknown during a preview; they are turned into plain values with ``UNKNOWN``
first, so a rule decides itself what an unknown means (usually: checked again at `up`, when
every input is known).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from platform_policy.rules import (
    DEFAULT_NON_PRODUCTION_STACKS,
    RULES,
    UNKNOWN,
    PolicySettings,
    ResourceInputs,
    Rule,
)

PACK_NAME = "kubeflow-eks-platform"

PRODUCTION_CONFIG = PolicyConfigSchema(
    properties={
        "nonProductionStacks": {
            "type": "array",
            "items": {"type": "string"},
            "default": list(DEFAULT_NON_PRODUCTION_STACKS),
            "description": "Stacks the production rules skip; every other stack is production.",
        }
    }
)


def plain(value: Any) -> Any:
    """The SDK's unknown-checking proxies as plain dicts and lists, unknowns as ``UNKNOWN``."""
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key in value:  # iterating never raises; reading an unknown does
            try:
                result[key] = plain(value[key])
            except UnknownValueError:
                result[key] = UNKNOWN
        return result
    if isinstance(value, Sequence) and not isinstance(value, str):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def stack_of(urn: str) -> str:
    """`urn:pulumi:<stack>::<project>::<type>::<name>` -> stack."""
    head = urn.split("::", 1)[0]
    parts = head.split(":")
    if len(parts) != 3 or parts[:2] != ["urn", "pulumi"] or not parts[2]:
        raise ValueError(f"not a Pulumi resource URN: {urn!r}")
    return parts[2]


def resource_inputs(args: ResourceValidationArgs) -> ResourceInputs:
    return ResourceInputs(
        type=args.resource_type,
        name=args.name,
        stack=stack_of(args.urn),
        props=plain(args.props),
    )


def _validate(rule: Rule) -> Any:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in rule.resource_types:
            return
        resource = resource_inputs(args)
        if rule.production_only:
            settings = PolicySettings.from_config(args.get_config())
            if not settings.is_production(resource.stack):
                args.not_applicable(f"stack {resource.stack} is listed in nonProductionStacks")
        for message in rule.check(resource):
            report_violation(message, None)

    return validate


def policies() -> list[Policy]:
    return [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_validate(rule),
            enforcement_level=EnforcementLevel.MANDATORY,
            config_schema=PRODUCTION_CONFIG if rule.production_only else None,
        )
        for rule in RULES
    ]
