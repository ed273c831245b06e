"""The release table (model/kubeflow_releases.yaml): every entry complete and true to its tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import model.kubeflow as kubeflow_model
from components.kubeflow.manifests import KUSTOMIZE_VERSION, upstream_components
from model import versions
from model.kubeflow import ReleaseTableError, kubeflow_releases
from tests.kubeflow.conftest import UpstreamRelease, load_example_output


def _images(objects: list[dict[str, Any]]) -> set[str]:
    found = set()
    for obj in objects:
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        found.update(str(c.get("image")) for c in spec.get("containers") or [])
    return found


def test_the_default_release_is_known_and_fits_the_default_kubernetes() -> None:
    release = kubeflow_releases()[versions.kubeflow_release()]
    minimum = tuple(int(p) for p in release.kubernetes.split("."))
    assert tuple(int(p) for p in versions.DEFAULT_KUBERNETES_VERSION.split(".")) >= minimum
    assert release.kustomize == KUSTOMIZE_VERSION


def test_26_03_entry_is_what_the_tree_deploys(upstream: UpstreamRelease) -> None:
    release = kubeflow_releases()["26.03"]
    assert release.components == upstream_components(upstream.source)
    assert upstream.example_output is not None
    images = _images(load_example_output(upstream.example_output))
    assert f"ghcr.io/kubeflow/trainer/trainer-controller-manager:{release.trainer}" in images
    assert f"ghcr.io/kubeflow/kfp-api-server:{release.pipelines}" in images
    runtimes = {
        str(o["metadata"]["name"])  # type: ignore[index]
        for o in load_example_output(upstream.example_output)
        if o.get("kind") == "ClusterTrainingRuntime"
    }
    assert set(release.training_runtimes) == runtimes


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"components": ["../x"]}, "lacks kustomize, kubernetes, trainer, pipelines"),
        (
            {"kustomize": "v5.8.1", "kubernetes": "1.34", "trainer": "v2.1.0", "pipelines": "2"},
            "lacks components",
        ),
        (
            {
                "kustomize": "v5.8.1",
                "kubernetes": "1.34",
                "trainer": "v2.1.0",
                "pipelines": "2.16.0",
                "components": "../x",
                "trainingRuntimes": ["torch-distributed"],
            },
            "components must be a list of strings",
        ),
        (
            {
                "kustomize": "v5.8.1",
                "kubernetes": "1.34",
                "trainer": "v2.1.0",
                "pipelines": "2.16.0",
                "components": ["../x"],
            },
            "lacks trainingRuntimes",
        ),
        (
            {
                "kustomize": "v5.8.1",
                "kubernetes": "1.34",
                "trainer": "v2.1.0",
                "pipelines": "2.16.0",
                "components": ["../x"],
                "trainingRuntimes": "torch-distributed",
            },
            "trainingRuntimes must be a list of strings",
        ),
    ],
)
def test_a_release_without_the_needed_fields_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: dict[str, Any], message: str
) -> None:
    table = tmp_path / "kubeflow_releases.yaml"
    table.write_text(yaml.safe_dump({"releases": {"27.09": entry}}))
    monkeypatch.setattr(kubeflow_model, "_RELEASES_FILE", table)
    kubeflow_releases.cache_clear()
    try:
        with pytest.raises(ReleaseTableError, match=message) as refused:
            kubeflow_releases()
        assert "release '27.09'" in str(refused.value)
    finally:
        kubeflow_releases.cache_clear()
