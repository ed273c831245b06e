"""The Fairing snippet of the project's tutorial (its "fairing.config" section), verbatim in
tests/fixtures/tutorial_fairing.txt, and the line changes a user makes to run it on fnjob."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ORIGINAL = (Path(__file__).parent / "fixtures" / "tutorial_fairing.txt").read_text()
IMPORTS = {
    "from kubeflow import fairing": "from fnjob import fairing",
    "from kubeflow.fairing.kubernetes.utils import get_resource_mutator": (
        "from fnjob.fairing.kubernetes.utils import get_resource_mutator"
    ),
}
REGISTRY_LINE = "DOCKER_REGISTRY = 'ghcr.io/ddung1203'"
BASE_IMAGE_LINE = "    base_image='tensorflow/tensorflow:1.14.0-py3',"
DEPLOYER_LINE = (
    "fairing.config.set_deployer('job', pod_spec_mutators=[get_resource_mutator(cpu=0.5, "
    "memory=0.5)])"
)


def changed(changes: Mapping[str, str]) -> str:
    """The tutorial with whole lines replaced; each line to change must be there once."""
    text = ORIGINAL
    for old, new in changes.items():
        assert ORIGINAL.count(old + "\n") == 1, old
        text = text.replace(old + "\n", new + "\n")
    return text


def migrated(
    *, registry: str | None = None, base_image: str | None = None, deployer: str | None = None
) -> str:
    """The tutorial with only its imports changed, and, where this machine needs it, the
    registry, the base image (literals) and the deployer."""
    changes = dict(IMPORTS)
    if registry is not None:
        changes[REGISTRY_LINE] = f"DOCKER_REGISTRY = '{registry}'"
    if base_image is not None:
        changes[BASE_IMAGE_LINE] = f"    base_image='{base_image}',"
    if deployer is not None:
        changes[DEPLOYER_LINE] = DEPLOYER_LINE.replace("'job'", f"'{deployer}'")
    return changed(changes)
