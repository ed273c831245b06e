"""Requirements installed at build time, for the base image's Python and platform.

The append builder cannot run commands in the image, so ``pip`` runs here, on the machine
that builds, as a cross-install: ``pip install --target DIR --only-binary=:all:
--implementation cp --python-version X.Y --abi cpXY --platform manylinux_2_28_<arch>``. The
files land in the code layer under ``/fnjob/site`` (on the image's ``PYTHONPATH``), so a job
starts with nothing to download: it runs with no network at all.

Only wheels are used (nothing is compiled for the wrong machine); binary wheels must be
``manylinux`` ones for glibc 2.28 or older (Debian 10, Ubuntu 20.04, RHEL 8 bases and newer).
pip uses your own configuration (index, proxy, cache), like ``pip install`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fnjob.image.layer import SITE_DIR, Platform, SitePackages, parse_platform
from fnjob.image.package import FileContent, UnshippableFunction

__all__ = [
    "SITE_DIR",
    "RequirementsNotInstallable",
    "SitePackages",
    "pip_install_command",
    "vendor_requirements",
]

# Newest glibc a binary wheel may need; pip also accepts older manylinux tags.
MANYLINUX = "manylinux_2_28"
_ARCHITECTURES = {
    ("amd64", ""): "x86_64",
    ("arm64", ""): "aarch64",
    ("arm64", "v8"): "aarch64",
    ("ppc64le", ""): "ppc64le",
    ("s390x", ""): "s390x",
}
_PIP_TIMEOUT = 1800


class RequirementsNotInstallable(UnshippableFunction):
    """pip could not install the requirements for the base image's Python and platform
    (no wheel for it, a version that does not exist, no index); ``output`` is pip's own."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def _pip_platform(platform: Platform) -> str:
    arch = _ARCHITECTURES.get((platform.architecture, platform.variant)) or _ARCHITECTURES.get(
        (platform.architecture, "")
    )
    if platform.os != "linux" or arch is None:
        raise RequirementsNotInstallable(
            f"requirements: cannot install wheels for platform {platform}; fnjob installs "
            f"requirements for linux on {', '.join(sorted({a for a, _ in _ARCHITECTURES}))}"
        )
    return f"{MANYLINUX}_{arch}"


def pip_install_command(
    requirements_file: Path, target: Path, python: str, platform: str
) -> list[str]:
    """The ``pip install`` cross-install command line (see the module docstring)."""
    major, minor = python.split(".")
    return [
        sys.executable,
        *("-m", "pip", "install", "--quiet", "--no-input", "--disable-pip-version-check"),
        *("--no-compile", "--target", str(target), "--only-binary=:all:"),
        *("--implementation", "cp", "--python-version", python),
        *("--abi", f"cp{major}{minor}", "--abi", "abi3", "--abi", "none"),
        *("--platform", _pip_platform(parse_platform(platform))),
        *("-r", str(requirements_file)),
    ]


def _read_tree(root: Path) -> tuple[dict[str, FileContent], dict[str, str]]:
    """Files (as paths) and symlinks under root, keyed by their path in the image; scripts'
    ``#!`` lines point at the image's python3 instead of this machine's."""
    files: dict[str, FileContent] = {}
    links: dict[str, str] = {}
    for folder, folders, names in os.walk(root):
        folders[:] = sorted(name for name in folders if name != "__pycache__")
        for name in sorted(names + [f for f in folders if (Path(folder) / f).is_symlink()]):
            path = Path(folder) / name
            in_image = f"{SITE_DIR}/{path.relative_to(root).as_posix()}"
            if path.is_symlink():
                links[in_image] = os.readlink(path)
            elif path.suffix != ".pyc":
                with path.open("rb") as handle:
                    first_line = handle.readline(4096)
                if first_line.startswith(b"#!") and b"python" in first_line:
                    # Scripts are small: rewrite the #! line in memory.
                    rest = path.read_bytes()[len(first_line) :]
                    files[in_image] = b"#!/usr/bin/env python3\n" + rest
                else:
                    files[in_image] = path.absolute()
    return files, links


def vendor_requirements(
    requirements: Sequence[str],
    python: str,
    platform: str,
    *,
    workdir: Path,
    env: Mapping[str, str] | None = None,
) -> SitePackages:
    """Install requirements for the image (its ``python`` ``X.Y`` and ``platform``) into
    ``workdir`` (an empty folder the caller keeps until the layer is written) and return
    the installed tree as (files, symlinks) keyed by their path in the image; files are
    paths in ``workdir``, streamed into the layer.

    Raises ``RequirementsNotInstallable`` with pip's output when pip fails.
    """
    requirements_file = workdir / "requirements.txt"
    requirements_file.write_text("\n".join(requirements) + "\n")
    target = workdir / "site"
    command = pip_install_command(requirements_file, target, python, platform)
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=None if env is None else dict(env),
            timeout=_PIP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise RequirementsNotInstallable(
            f"requirements: pip did not finish within {_PIP_TIMEOUT} s"
        ) from error
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip()
        last = "\n".join(
            line for line in output.splitlines()[-8:] if not line.startswith("WARNING:")
        )
        raise RequirementsNotInstallable(
            f"requirements: pip could not install {', '.join(requirements)} for Python "
            f"{python} on {platform} (wheels only): {last}",
            output,
        )
    return _read_tree(target) if target.exists() else ({}, {})
