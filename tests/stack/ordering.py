"""Check what every registered resource waits for against the table of preconditions
(tests/stack/preconditions.yaml): the order a live first `pulumi up` needs."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.pulumi_mocks import Node, RecordingMocks, reveal

PRECONDITIONS = Path(__file__).with_name("preconditions.yaml")


@dataclass(frozen=True)
class Selector:
    """Picks registered resources (see the table's header for the fields)."""

    type: str
    name: str | None = None
    inputs: Mapping[str, Any] | None = None
    objects: Sequence[Mapping[str, str]] = ()
    optional: bool = False

    @staticmethod
    def of(data: Mapping[str, Any]) -> Selector:
        unknown = set(data) - {"type", "name", "inputs", "objects", "optional"}
        if unknown or "type" not in data:
            raise ValueError(f"bad selector {dict(data)}: unknown {sorted(unknown)} or no type")
        return Selector(
            type=data["type"],
            name=data.get("name"),
            inputs=data.get("inputs"),
            objects=tuple(data.get("objects") or ()),
            optional=bool(data.get("optional", False)),
        )

    def __str__(self) -> str:
        parts = [self.type]
        if self.name:
            parts.append(f"name~{self.name}")
        if self.inputs:
            parts.append(f"inputs {dict(self.inputs)}")
        if self.objects:
            parts.append(f"objects {list(map(dict, self.objects))}")
        return " ".join(parts)


@dataclass(frozen=True)
class Rule:
    name: str
    why: str
    resource: Selector
    waits_for: tuple[Selector, ...]
    when: Selector | None = None


def load_rules(path: Path = PRECONDITIONS) -> tuple[Rule, ...]:
    document = yaml.safe_load(path.read_text())
    return tuple(
        Rule(
            name=rule["name"],
            why=rule["why"],
            resource=Selector.of(rule["resource"]),
            waits_for=tuple(Selector.of(s) for s in rule["waits_for"]),
            when=Selector.of(rule["when"]) if "when" in rule else None,
        )
        for rule in document["rules"]
    )


def _matches(wanted: Any, actual: Any) -> bool:
    actual = reveal(actual)
    if wanted is None:  # `~`: present, any value
        return actual is not None
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(
            _matches(v, actual.get(k)) for k, v in wanted.items()
        )
    if isinstance(wanted, list):  # one of these values
        return any(_matches(w, actual) for w in wanted)
    return bool(wanted == actual)


def _has_object(objects: Any, wanted: Mapping[str, str]) -> bool:
    for obj in reveal(objects) or ():
        obj = reveal(obj)
        if not isinstance(obj, Mapping) or obj.get("kind") != wanted["kind"]:
            continue
        metadata = obj.get("metadata") or {}
        if all(metadata.get(k) == wanted[k] for k in ("name", "namespace") if k in wanted):
            return True
    return False


@dataclass(frozen=True)
class MissingWait:
    rule: str
    resource: str
    waits_for: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.resource} does not wait for {self.waits_for}"


@dataclass(frozen=True)
class OrderReport:
    missing: tuple[MissingWait, ...]
    # (rule, selector) pairs checked at least once: a resource matched and so did the
    # selector; guards the table against rules that never fire.
    exercised: frozenset[tuple[str, str]]


class RegisteredGraph:
    """The resources a program registered under the mocks, with their inputs."""

    def __init__(self, mocks: RecordingMocks) -> None:
        self.mocks = mocks
        inputs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for resource in mocks.resources:
            inputs.setdefault((resource.typ, resource.name), []).append(resource.inputs)
        self._inputs = inputs

    def inputs_of(self, node: Node) -> dict[str, Any]:
        found = self._inputs.get((node.typ, node.name), [])
        if len(found) > 1:
            raise ValueError(f"{len(found)} resources of type {node.typ} named {node.name}")
        return found[0] if found else {}  # a local component: no inputs recorded

    def select(self, selector: Selector) -> list[Node]:
        picked = []
        for node in self.mocks.graph.values():
            if not fnmatch.fnmatchcase(node.typ, selector.type):
                continue
            if selector.name and not re.search(selector.name, node.name):
                continue
            inputs = self.inputs_of(node)
            if selector.inputs and not _matches(dict(selector.inputs), inputs):
                continue
            if selector.objects and not any(
                _has_object(inputs.get("objs"), o) for o in selector.objects
            ):
                continue
            picked.append(node)
        return picked


def check_order(mocks: RecordingMocks, rules: Iterable[Rule] | None = None) -> OrderReport:
    """Every resource a rule picks must wait, directly, through an input or through its
    parent, for every resource its preconditions pick."""
    graph = RegisteredGraph(mocks)
    missing: list[MissingWait] = []
    exercised: set[tuple[str, str]] = set()
    for rule in rules if rules is not None else load_rules():
        if rule.when is not None and not graph.select(rule.when):
            continue
        subjects = graph.select(rule.resource)
        for selector in rule.waits_for:
            targets = graph.select(selector)
            if subjects and not targets and not selector.optional:
                missing.append(MissingWait(rule.name, "(any resource)", f"{selector}: none"))
            if subjects and targets:
                exercised.add((rule.name, str(selector)))
            for subject in subjects:
                waits = mocks.waits_for(subject.urn)
                missing += [
                    MissingWait(rule.name, f"{subject.typ} {subject.name}", target.name)
                    for target in targets
                    if target.urn not in waits and target.urn != subject.urn
                ]
    return OrderReport(tuple(missing), frozenset(exercised))
