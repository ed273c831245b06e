"""Every render refuses placeholders Kustomize left unresolved, before anything is applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.kubeflow.manifests import (
    UnresolvedPlaceholderError,
    render_manifests,
    unresolved_placeholders,
)
from tests.kubeflow.conftest import UpstreamRelease, load_example_output


def test_a_placeholder_in_a_name_or_a_whole_value_is_found() -> None:
    profile = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": "$(profile-name)"},
        "spec": {"owner": {"kind": "User", "name": "$(user)"}},
    }
    found = unresolved_placeholders([profile])
    assert found == [
        "Profile $(profile-name): metadata.name = '$(profile-name)'",
        "Profile $(profile-name): spec.owner.name = '$(user)'",
    ]


def test_kubernetes_own_expansion_and_prose_are_left_alone() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "profiles", "namespace": "kubeflow"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "manager",
                            "command": ["/manager", "$(ADMIN)"],
                            "args": ["--header=$(USERID_HEADER)"],
                            "env": [{"name": "X", "value": "$(Y)"}],
                        }
                    ]
                }
            }
        },
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"config": "uses $(VAR) inside a longer text"},
    }
    assert unresolved_placeholders([deployment, config]) == []


def test_both_upstream_renders_as_released_are_clean(
    upstream: UpstreamRelease, previous_upstream: UpstreamRelease
) -> None:
    for release in (upstream, previous_upstream):
        assert release.example_output is not None
        assert unresolved_placeholders(load_example_output(release.example_output)) == []


def test_the_previous_release_rendered_with_the_pinned_kustomize_is_refused(
    previous_upstream: UpstreamRelease, tmp_path: Path
) -> None:
    # Kustomize 5.8 reads replacement selectors as regular expressions, so v1.10.2's
    # common/user-namespace comes out with its Profile named '$(profile-name)'.
    with pytest.raises(UnresolvedPlaceholderError) as refused:
        render_manifests(str(previous_upstream.source), cache_dir=tmp_path)
    message = str(refused.value)
    assert "Profile $(profile-name): metadata.name = '$(profile-name)'" in message
    assert "spec.owner.name = '$(user)'" in message
    # Nothing refused is kept in the cache for a later run to pick up.
    assert not list((tmp_path / "renders").glob("*.json"))
