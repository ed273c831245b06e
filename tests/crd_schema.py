"""Validate a custom resource against its CRD's openAPIV3Schema, refusing unknown fields
(as the API server's strict field validation does)."""

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


def crd_errors(obj: Mapping[str, Any], crd: Mapping[str, Any]) -> list[str]:
    """Problems of ``obj`` under the CRD version it names; [] when it is valid."""
    group = crd["spec"]["group"]
    api_group, _, version = str(obj["apiVersion"]).partition("/")
    assert api_group == group and obj["kind"] == crd["spec"]["names"]["kind"]
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    # apiVersion, kind and metadata are the API server's to check.
    top = schema.setdefault("properties", {})
    top["metadata"] = {"type": "object"}
    top.setdefault("apiVersion", {"type": "string"})
    top.setdefault("kind", {"type": "string"})
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(dict(obj))]
