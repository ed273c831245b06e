"""images/notebook: versions written once, and the recipe's own promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from model import versions

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE = REPO_ROOT / "images" / "notebook"


def test_kubectls_version_is_written_only_in_stack_versions() -> None:
    dockerfile = (RECIPE / "Dockerfile").read_text()
    # No default the stack or a hand build could silently fall back to.
    assert re.search(r"^ARG KUBECTL_IMAGE$", dockerfile, re.MULTILINE)
    docs = sorted((REPO_ROOT / "docs").glob("*.md"))
    for path in (RECIPE / "Dockerfile", RECIPE / "README.md", REPO_ROOT / "README.md", *docs):
        assert not re.search(r"kubectl:v\d", path.read_text()), path
    # What the READMEs tell a hand build to pass is what the stack passes.
    for minor in versions.SUPPORTED_KUBERNETES_VERSIONS:
        shown = subprocess.run(
            [sys.executable, "-m", "stack.versions", "kubectl-image", minor],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert shown == f"registry.k8s.io/kubectl:{versions.pins(minor).kubectl}"


def test_an_unpinned_kubernetes_version_is_refused_by_name() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "stack.versions", "kubectl-image", "1.99"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "Kubernetes '1.99' is not pinned" in refused.stderr


def test_the_recipe_declares_its_python_where_fnjob_reads_it() -> None:
    dockerfile = (RECIPE / "Dockerfile").read_text()
    assert "ENV PYTHON_VERSION=${PYTHON_VERSION}" in dockerfile
    assert "LABEL io.kubeflow-eks.python-version=${PYTHON_VERSION}" in dockerfile
    [declared] = re.findall(r"^ARG PYTHON_VERSION=(\d+\.\d+\.\d+)$", dockerfile, re.MULTILINE)
    assert declared
