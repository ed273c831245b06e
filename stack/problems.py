"""Turn pydantic's validation errors into problems a user can act on.

Each problem names the key path as the user wrote it (``gpuNodeGroups[0].taints[1]``), shows
the value (never a secret's, never an unknown key's, which may be a pasted password) and
says what to write instead.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from model import EksStack, OnpremStack, StackBase

# Keys whose values are never shown.
SECRET_KEYS = StackBase.secret_keys
_SECRET_LOOKING = re.compile(r"pass(word)?|secret|token|credential|kubeconfig|auth", re.I)


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is, what it was, what to write instead."""

    path: str
    shown: str | None
    fix: str

    def __str__(self) -> str:
        return (
            f"{self.path}: got {self.shown}; {self.fix}"
            if self.shown
            else f"{self.path}: {self.fix}"
        )


class StackConfigError(ValueError):
    """The stack configuration is invalid; ``problems`` lists every bad value."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"invalid stack configuration ({count} {noun}):\n{lines}")


def show(value: Any) -> str:
    if repr(value) == "(missing)":
        return "(missing)"
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def key_path(parts: Sequence[str | int]) -> str:
    """A key path as a stack file's reader sees it: ``gpuNodeGroups[0].taints[1]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|aws:region", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _unwrap(annotation: Any) -> list[Any]:
    """The model classes an annotation can hold (through Annotated, Optional, tuples, maps)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[Any] = []
    if origin in (typing.Union, types.UnionType, tuple, list) or (
        origin is not None and isinstance(origin, type) and issubclass(origin, Mapping)
    ):
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis:
                found += _unwrap(arg)
    return found


def _walk(
    model: type[BaseModel], loc: Sequence[str | int]
) -> tuple[list[str | int], type[BaseModel] | None]:
    """The path as the user writes it (aliases, not field names) and the model it ends in."""
    parts: list[str | int] = []
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            parts.append(part)
            continue
        found = next(
            ((name, f) for name, f in current.model_fields.items() if part in (name, f.alias)),
            None,
        )
        if found is None:
            parts.append(part)
            current = None
            continue
        name, field = found
        parts.append(field.alias or name)
        models = _unwrap(field.annotation)
        current = models[0] if models else None
    return parts, current


def _keys(model: type[BaseModel]) -> list[str]:
    return [
        f.alias or name
        for name, f in model.model_fields.items()
        if not f.exclude and (f.alias or name) not in ("stack", "mode")
    ]


def _description(model: type[BaseModel] | None, key: str) -> str | None:
    if model is None:
        return None
    for name, field in model.model_fields.items():
        if (field.alias or name) == key:
            return field.description
    return None


def _expected(kind: str) -> str:
    return {
        "string_type": "text",
        "int_type": "a whole number",
        "int_parsing": "a whole number",
        "int_from_float": "a whole number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "list_type": "a list",
        "tuple_type": "a list",
        "dict_type": "an object",
        "mapping_type": "an object",
        "model_type": "an object",
        "model_attributes_type": "an object",
    }.get(kind, "another value")


def _type_fix(kind: str, value: Any, model: type[BaseModel] | None) -> str:
    want = _expected(kind)
    if kind == "string_type" and isinstance(value, bool):
        word = "true" if value else "false"
        return f'quote it: "{word}" (YAML reads an unquoted {word} as a boolean)'
    if kind == "string_type" and isinstance(value, int | float):
        return f'quote it: "{value}" (YAML reads an unquoted {value} as a number)'
    if want == "an object" and model is not None:
        return f"expected an object with keys {', '.join(_keys(model))}"
    return f"expected {want}"


def problems_from(error: ValidationError, *, variant: str) -> list[Problem]:
    """Problems of a failed validation of the stack model (``variant``: eks or onprem)."""
    root: type[BaseModel] = EksStack if variant == "eks" else OnpremStack
    other: type[BaseModel] = OnpremStack if variant == "eks" else EksStack
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if loc and loc[0] in ("eks", "onprem"):
            loc = loc[1:]
        kind = item["type"]
        if kind == "default_factory_not_called":
            continue  # a default computed from a key that is itself reported
        if kind == "rules_broken":
            problems += _broken_rules(root, loc, item["ctx"]["problems"])
        elif kind == "mode":
            value = item.get("input")
            given = value.get("mode") if isinstance(value, Mapping) else value
            problems.append(Problem("mode", show(given), str(item["msg"])))
        else:
            problems.append(_field_problem(item, loc, root, other))
    return problems


def _broken_rules(
    root: type[BaseModel], loc: Sequence[str | int], broken: Sequence[tuple[str, Any, str]]
) -> list[Problem]:
    """The rules one object broke (``Rules``), each at its key below the object's."""
    base_loc, _ = _walk(root, loc)
    is_secret = bool(base_loc) and str(base_loc[0]) in SECRET_KEYS
    return [
        Problem(key_path([*base_loc, *_split_at(at)]), None if is_secret else show(value), fix)
        for at, value, fix in broken
    ]


def _field_problem(
    item: Any, loc: list[str | int], root: type[BaseModel], other: type[BaseModel]
) -> Problem:
    """The problem of one value pydantic refused."""
    kind: str = item["type"]
    value = item.get("input")
    # A dict key's own error ends with "[key]"; report it at the key.
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
        value = loc[-1]
    user_loc, model = _walk(root, loc)
    if kind == "extra_forbidden":  # the key as written, even a field's Python name
        user_loc = [*_walk(root, loc[:-1])[0], loc[-1]]
    secret = bool(user_loc) and str(user_loc[0]) in SECRET_KEYS
    path = key_path(user_loc)
    _, parent = _walk(root, loc[:-1]) if loc else ([], root)
    key = str(user_loc[-1]) if user_loc else ""
    if kind == "extra_forbidden":
        return Problem(path, None, _unknown_key_fix(key, parent, loc, other))
    if kind == "missing":
        hint = _description(parent, key)
        return Problem(path, "(missing)", f"required: {hint}" if hint else "required")
    shown = None if secret else show(value)
    if value is None and kind in ("required", "secret_missing"):
        shown = "(missing)"
    return Problem(path, shown, _value_fix(kind, item.get("ctx") or {}, value, model, item["msg"]))


def _value_fix(
    kind: str, ctx: Mapping[str, Any], value: Any, model: type[BaseModel] | None, message: str
) -> str:
    """What to write instead of a refused value."""
    if kind == "literal_error":
        return f"use one of {ctx.get('expected', '').replace(' or ', ', ')}"
    if "fix" in ctx:
        return str(ctx["fix"])
    if kind.endswith(("_type", "_parsing", "_from_float")):
        return _type_fix(kind, value, model)
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return _bound_fix(kind, ctx)
    if kind in ("too_short", "too_long"):
        return _length_fix(kind, ctx)
    return message


def _split_at(at: str) -> list[str | int]:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", at):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return parts


def _bound_fix(kind: str, ctx: Mapping[str, Any]) -> str:
    words = {
        "greater_than_equal": ("at least", "ge"),
        "less_than_equal": ("at most", "le"),
        "greater_than": ("more than", "gt"),
        "less_than": ("less than", "lt"),
    }[kind]
    return f"use a number {words[0]} {ctx.get(words[1])}"


def _length_fix(kind: str, ctx: Mapping[str, Any]) -> str:
    if kind == "too_short":
        return f"list at least {ctx.get('min_length')} entries"
    return f"list at most {ctx.get('max_length')} entries"


def _unknown_key_fix(
    key: str, parent: type[BaseModel] | None, loc: Sequence[Any], other: type[BaseModel]
) -> str:
    if len(loc) == 1:
        other_mode = "onprem" if other is OnpremStack else "eks"
        if key in _keys(other) and key not in ((parent and _keys(parent)) or []):
            return f"remove it: only for mode: {other_mode}"
    spelled = accepted_spelling(key, parent) if parent is not None else None
    if spelled is not None:
        camel = " (stack files spell keys in camelCase)" if "_" in key else ""
        return f"unknown key; did you mean {spelled}?{camel}"
    allowed = ", ".join(_keys(parent)) if parent is not None else "see docs/stack-reference.md"
    fix = f"unknown key; allowed: {allowed}"
    if _SECRET_LOOKING.search(key):
        fix += (
            ". Secrets are not written in the stack's objects: pulumi config set --secret "
            "kubeflowAdminPassword (see docs/operator-guide.md)"
        )
    return fix


def accepted_spelling(key: str, model: type[BaseModel]) -> str | None:
    """The key a stack file must write for ``key`` when ``key`` is another spelling of it:
    a field's Python name (``gpu_node_groups``, ``region``) or a snake_case alias."""
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if key != alias and (key == name or to_camel(key) == alias):
            return alias
    return None
