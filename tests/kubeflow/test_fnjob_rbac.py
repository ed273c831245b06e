"""A profile's notebooks may make every request fnjob sends, on the real render of 26.03.

Notebooks and fnjob's jobs run as the profile's ``default-editor`` ServiceAccount, which the
profile controller binds to the ClusterRole ``kubeflow-edit`` (RoleBinding ``default-editor``
in the profile namespace). That role grants nothing itself: it aggregates every ClusterRole
labelled ``rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit``, some of which
aggregate others in turn. Evaluated as the API server's RBAC does, over the objects each
example stack applies, it must allow each of ``fnjob.run.cluster.API_CALLS`` (the table the
fake API server holds fnjob's real requests to); TrainJob calls only where Trainer is
rendered, since elsewhere fnjob never creates one and treats a refused listing as none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from components.kubeflow.objects import labels_of, name_of, selector_matches
from fnjob.run.cluster import API_CALLS, TRAIN_JOBS
from stack.render import stack_plan
from tests.kubeflow.conftest import REPO_ROOT, UpstreamRelease

STACKS = {name: REPO_ROOT / "stacks" / f"Pulumi.{name}.yaml" for name in ("dev", "prod", "onprem")}
EDIT_ROLE = "kubeflow-edit"


def aggregated_rules(objects: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """The rules ClusterRole ``name`` grants once the aggregation controller has filled it:
    its own and, through its ``aggregationRule``, those of every role it selects, in turn."""
    roles = {name_of(o): o for o in objects if o.get("kind") == "ClusterRole"}
    rules: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen or current not in roles:
            continue
        seen.add(current)
        role = roles[current]
        rules += role.get("rules") or []
        for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []:
            pending += [n for n, r in roles.items() if selector_matches(selector, labels_of(r))]
    return rules


def allows(rules: Sequence[Mapping[str, Any]], verb: str, group: str, resource: str) -> bool:
    """RBAC's rule match for a namespaced request without a resource name."""
    return any(
        {"*", group} & set(rule.get("apiGroups") or [])
        and {"*", resource} & set(rule.get("resources") or [])
        and {"*", verb} & set(rule.get("verbs") or [])
        and not rule.get("resourceNames")
        for rule in rules
    )


@pytest.fixture(scope="module")
def applied(upstream: UpstreamRelease, upstream_cache: Path) -> dict[str, list[Mapping[str, Any]]]:
    out = {}
    for name, path in STACKS.items():
        _, plan = stack_plan(path, source=str(upstream.source), cache_dir=upstream_cache)
        out[name] = [o for phase in plan.phases for o in phase.objects]
    return out


def test_the_rule_evaluation_follows_nested_aggregation_and_refuses_what_is_not_granted() -> None:
    objects = [
        {
            "kind": "ClusterRole",
            "metadata": {"name": "top"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-top": "true"}}]},
        },
        {
            "kind": "ClusterRole",
            "metadata": {"name": "middle", "labels": {"to-top": "true"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"to-mid": "true"}}]},
        },
        {
            "kind": "ClusterRole",
            "metadata": {"name": "leaf", "labels": {"to-mid": "true"}},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
        },
        {
            "kind": "ClusterRole",
            "metadata": {"name": "named"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["*"],
                    "resourceNames": ["one"],
                }
            ],
        },
    ]
    top = aggregated_rules(objects, "top")
    assert allows(top, "create", "batch", "jobs")
    assert not allows(top, "delete", "batch", "jobs")
    assert not allows(top, "create", "", "jobs")
    assert not allows(aggregated_rules(objects, "named"), "list", "", "secrets")


@pytest.mark.parametrize("stack", list(STACKS))
def test_default_editor_may_make_every_request_fnjob_sends(
    applied: dict[str, list[Mapping[str, Any]]], stack: str
) -> None:
    objects = applied[stack]
    rules = aggregated_rules(objects, EDIT_ROLE)
    assert rules, f"{stack} renders no {EDIT_ROLE} with rules"
    trainer = any(
        o.get("kind") == "CustomResourceDefinition"
        and name_of(o) == f"{TRAIN_JOBS[2]}.{TRAIN_JOBS[0]}"
        for o in objects
    )
    needed = sorted(call for call in API_CALLS if trainer or call[1] != TRAIN_JOBS[0])
    refused = [call for call in needed if not allows(rules, *call)]
    assert refused == [], f"{stack}: {EDIT_ROLE} does not grant {refused}"
