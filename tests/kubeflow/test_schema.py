"""Every built-in object the stack applies validates against the Kubernetes 1.34 schema.

Custom resources have no schema in kubernetes-validate: they are counted and reported as
not checked, never as valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes_validate
import pytest

from components.kubeflow.component import build_phases
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.phases import is_builtin
from components.kubeflow.transform import KubeflowCredentials
from tests.kubeflow.conftest import make_args

KUBERNETES_VERSION = "1.34.0"


def validate_all(objects: Sequence[Mapping[str, Any]]) -> tuple[int, list[str], list[str]]:
    """(number valid, errors, kinds not checked)."""
    valid = 0
    errors: list[str] = []
    unchecked: list[str] = []
    for obj in objects:
        label = f"{obj['kind']} {obj['metadata'].get('namespace', '-')}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.append(label)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{label}: {err.message}")
        else:
            valid += 1
    return valid, errors, unchecked


@pytest.mark.parametrize("http_mode", [True, False])
def test_every_builtin_object_validates_strictly(
    rendered: RenderedManifests,
    credentials: KubeflowCredentials,
    http_mode: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    phases = build_phases(rendered.objects, make_args(http_mode=http_mode), credentials)
    objects = [o for phase in phases for o in phase.objects]
    valid, errors, unchecked = validate_all(objects)
    assert errors == []
    builtin = [o for o in objects if is_builtin(o)]
    custom = [o for o in objects if not is_builtin(o)]
    # Every built-in object was really checked, and only those counted as valid.
    assert valid == len(builtin)
    assert sorted(unchecked) == sorted(
        f"{o['kind']} {o['metadata'].get('namespace', '-')}/{o['metadata']['name']}" for o in custom
    )
    assert {o["kind"] for o in custom} == {"ClusterIssuer", "Profile", "AuthorizationPolicy"}
    with capsys.disabled():
        print(
            f"\n[schema {KUBERNETES_VERSION} strict] {valid} built-in objects valid, "
            f"{len(unchecked)} custom resources NOT checked: {', '.join(sorted(unchecked))}"
        )


def test_strict_validation_really_rejects_unknown_fields() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "x", "namespace": "y"},
        "imagePullSecret": [{"name": "typo"}],
    }
    valid, errors, unchecked = validate_all([bad])
    assert valid == 0 and unchecked == []
    assert len(errors) == 1 and "imagePullSecret" in errors[0]
