"""What the journey test's notebook image costs to build, and what the real requirements add.

Prints figures, asserts nothing. Starts its own ``docker-registry`` on 127.0.0.1 and a private
podman/buildah configuration; the Debian test base (python3, a venv owned by jovyan) comes
from the test cache (built with mmdebstrap on first use, or afresh with ``--fresh-base``).
Needs PyPI.

    .venv/bin/python benchmarks/bench_notebook_image.py [--fresh-base]

Figures:
- the test base (mmdebstrap; 0 when cached);
- ``buildah bud`` of images/notebook with its requirements (kfp, the Kubeflow SDK) and fnjob:
  the image the journey test uses; and of the same recipe with an empty requirements file, to
  show what kfp and the SDK cost;
- saving the image as an OCI layout (what the test cache keeps), copying that layout into the
  registry and pulling it with podman (what a cached test run pays);
- image sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchlib import REPO_ROOT, timed

from tests.fnjob.conftest import (
    build_debian_layout,
    cached_debian_layout,
    make_podman_config,
    release_podman_storage,
    running_registry,
)
from tests.journey.images import (
    NOTEBOOK_BASE,
    NOTEBOOK_BASE_LAYOUT,
    RECIPE,
    Registry,
    build_notebook_image,
    copy_image,
    save_layout,
)


def _size_mb(podman_env: dict[str, str], tag: str) -> float:
    shown = subprocess.run(
        ["podman", "image", "inspect", tag],
        env=podman_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(shown.stdout)[0]["Size"]) / 1e6


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh-base", action="store_true", help="mmdebstrap the base again")
    fresh_base = parser.parse_args().fresh_base
    with tempfile.TemporaryDirectory(prefix="journey-bench-") as tmp:
        work = Path(tmp)
        if fresh_base:
            base_layout = work / "base"
            base_seconds, _ = timed(lambda: build_debian_layout(base_layout, NOTEBOOK_BASE))
        else:
            base_seconds, base_layout = timed(
                lambda: cached_debian_layout(NOTEBOOK_BASE_LAYOUT, NOTEBOOK_BASE)
            )
        bare_recipe = work / "recipe-without-requirements"
        shutil.copytree(RECIPE, bare_recipe)
        (bare_recipe / "requirements.txt").write_text("")
        with running_registry(work / "registry") as server:
            auth = work / "auth.json"
            auth.write_text("{}")
            registry = Registry(server.host, auth)
            podman = make_podman_config(work / "podman", [server.host])
            try:
                (work / "full").mkdir()
                full_seconds, full = timed(
                    lambda: build_notebook_image(podman, registry, base_layout, work / "full")
                )
                (work / "bare").mkdir()
                bare_seconds, bare = timed(
                    lambda: build_notebook_image(
                        podman, registry, base_layout, work / "bare", recipe=bare_recipe
                    )
                )
                full_mb, bare_mb = _size_mb(podman.env, full), _size_mb(podman.env, bare)
                layout = work / "layout"
                save_seconds, _ = timed(lambda: save_layout(podman, full, layout))
                reference = f"{server.host}/platform/notebook:bench"
                copy_seconds, digest = timed(
                    lambda: copy_image(f"oci:{layout}:notebook", reference, auth)
                )
                subprocess.run(
                    ["podman", "rmi", "--force", full, bare],
                    env=podman.env,
                    capture_output=True,
                    check=True,
                )
                pull_seconds, _ = timed(
                    lambda: subprocess.run(
                        ["podman", "pull", "--quiet", f"{server.host}/platform/notebook@{digest}"],
                        env=podman.env,
                        capture_output=True,
                        check=True,
                    )
                )
                layout_mb = _folder_mb(layout)
            finally:
                release_podman_storage(podman)
    print(f"notebook image from {RECIPE.relative_to(REPO_ROOT)} on {NOTEBOOK_BASE.tag}")
    label = "test base (mmdebstrap)" + ("" if fresh_base else ", from the cache")
    print(f"{label:<52} {base_seconds:6.1f} s")
    print(
        f"{'build with the recipe requirements (kfp, kubeflow)':<52} {full_seconds:6.1f} s"
        f"   image {full_mb:6.0f} MB"
    )
    print(
        f"{'build with an empty requirements file':<52} {bare_seconds:6.1f} s"
        f"   image {bare_mb:6.0f} MB"
    )
    print(
        f"{'save as OCI layout (the test cache)':<52} {save_seconds:6.1f} s"
        f"   layout {layout_mb:5.0f} MB"
    )
    print(f"{'cached run: copy the layout into the registry':<52} {copy_seconds:6.1f} s")
    print(f"{'cached run: podman pull':<52} {pull_seconds:6.1f} s")


if __name__ == "__main__":
    main()
