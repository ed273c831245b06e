"""Every built-in object the stack applies validates strictly against the Kubernetes schema
of every version the project supports.

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
from components.kubeflow.objects import is_builtin
from components.kubeflow.transform import KubeflowCredentials
from model.versions import SUPPORTED_KUBERNETES_VERSIONS
from tests.kubeflow.conftest import UpstreamRelease, make_args, make_upstream_args


def validate_all(
    objects: Sequence[Mapping[str, Any]], version: str
) -> tuple[int, list[str], list[str]]:
    """(number valid, errors, objects not checked) against Kubernetes `version` (x.y)."""
    valid = 0
    errors: list[str] = []
    unchecked: list[str] = []
    for obj in objects:
        label = _label(obj)
        try:
            kubernetes_validate.validate(dict(obj), f"{version}.0", strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.append(label)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{label}: {err.message}")
        else:
            valid += 1
    return valid, errors, unchecked


def _label(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']} {obj['metadata'].get('namespace', '-')}/{obj['metadata']['name']}"


def _assert_valid(
    objects: Sequence[Mapping[str, Any]], version: str, capsys: pytest.CaptureFixture[str]
) -> list[Mapping[str, Any]]:
    valid, errors, unchecked = validate_all(objects, version)
    assert errors == []
    builtin = [o for o in objects if is_builtin(o)]
    custom = [o for o in objects if not is_builtin(o)]
    # Every built-in object was really checked, and only those counted as valid.
    assert valid == len(builtin)
    assert sorted(unchecked) == sorted(_label(o) for o in custom)
    with capsys.disabled():
        print(
            f"\n[schema {version} strict] {valid} built-in objects valid, {len(unchecked)} "
            "custom resources NOT checked"
        )
    return custom


@pytest.mark.parametrize("http_mode", [True, False])
def test_every_builtin_fixture_object_validates_strictly(
    rendered: RenderedManifests,
    credentials: KubeflowCredentials,
    http_mode: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    phases = build_phases(
        rendered.objects, make_args(protocol="http" if http_mode else "https"), credentials
    )
    objects = [o for phase in phases for o in phase.objects]
    custom = _assert_valid(objects, "1.34", capsys)
    assert {o["kind"] for o in custom} == {
        "PodDefault",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "Certificate",
        "ClusterIssuer",
        "Gateway",
        "Profile",
        "VirtualService",
    }


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES_VERSIONS)
def test_every_builtin_upstream_object_validates_strictly(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
    version: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = make_upstream_args(upstream.source)
    phases = build_phases(upstream_rendered.objects, args, credentials)
    objects = [o for phase in phases for o in phase.objects]
    custom = _assert_valid(objects, version, capsys)
    # The stack's own additions (profiles, pull secrets) are among the checked objects.
    assert any(
        o["kind"] == "Secret" and o["metadata"]["namespace"] == "team-vision" for o in objects
    )
    assert {"Certificate", "VirtualService", "ClusterTrainingRuntime"} <= {
        o["kind"] for o in custom
    }


def test_strict_validation_really_rejects_unknown_fields() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "x", "namespace": "y"},
        "imagePullSecret": [{"name": "typo"}],
    }
    valid, errors, unchecked = validate_all([bad], "1.34")
    assert valid == 0 and unchecked == []
    assert len(errors) == 1 and "imagePullSecret" in errors[0]
