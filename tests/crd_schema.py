"""A custom resource against its CRD's openAPIV3Schema, as the API server treats it.

- ``crd_errors``: validation, refusing unknown fields (the API server's strict field
  validation, which ``kubectl apply`` asks for).
- ``pruned``: what the API server stores when the client does not ask for strict validation
  (client libraries such as the Kubeflow SDK's do not): structural pruning drops every field
  the schema does not declare, silently, except under ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonschema


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(item) for item in schema]
    return schema


def _served_schema(obj: Mapping[str, Any], crd: Mapping[str, Any]) -> dict[str, Any]:
    group = crd["spec"]["group"]
    api_group, _, version = str(obj["apiVersion"]).partition("/")
    assert api_group == group and obj["kind"] == crd["spec"]["names"]["kind"]
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def _prune(value: Any, schema: Mapping[str, Any], path: str, dropped: list[str]) -> Any:
    """``value`` with what ``schema`` does not declare removed (pruning's algorithm in
    apiextensions-apiserver: properties, additionalProperties, items, preserve-unknown-fields,
    embedded resources' apiVersion/kind/metadata); ``dropped`` gets the removed paths."""
    if isinstance(value, list):
        items = schema.get("items")
        if not isinstance(items, Mapping):
            return value
        return [_prune(v, items, f"{path}[{i}]", dropped) for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        return value
    properties: Mapping[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    kept: dict[str, Any] = {}
    for key, item in value.items():
        where = f"{path}.{key}"
        if embedded and key in _ALWAYS_KEPT:
            # ObjectMeta is pruned by its own (built-in) schema; the tests send valid metadata.
            kept[key] = item
        elif key in properties:
            kept[key] = _prune(item, properties[key], where, dropped)
        elif isinstance(additional, Mapping):
            kept[key] = _prune(item, additional, where, dropped)
        elif preserve or additional is True:
            kept[key] = item
        else:
            dropped.append(where)
    return kept


# Kept at the root of every object (and of embedded resources) whatever the schema says.
_ALWAYS_KEPT = ("apiVersion", "kind", "metadata")


def pruned(obj: Mapping[str, Any], crd: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``obj`` as the API server stores it under the CRD version it names, and the paths of
    the fields pruning dropped (``.spec.runtimePatches``); [] when nothing was dropped."""
    schema = dict(_served_schema(obj, crd))
    schema["x-kubernetes-embedded-resource"] = True
    dropped: list[str] = []
    result: dict[str, Any] = _prune(obj, schema, "", dropped)
    return result, dropped


def crd_errors(obj: Mapping[str, Any], crd: Mapping[str, Any]) -> list[str]:
    """Problems of ``obj`` under the CRD version it names; [] when it is valid."""
    schema = _strict(copy.deepcopy(_served_schema(obj, crd)))
    # apiVersion, kind and metadata are the API server's to check.
    top = schema.setdefault("properties", {})
    top["metadata"] = {"type": "object"}
    top.setdefault("apiVersion", {"type": "string"})
    top.setdefault("kind", {"type": "string"})
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(dict(obj))]
