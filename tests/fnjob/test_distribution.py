"""What ``pip install ./fnjob`` installs: every module of the package, subpackages included
(the development install is editable and would not notice a missing one). The wheel is built
as pip builds it for a user: from a clean copy of the project (the development install leaves
an ``fnjob.egg-info`` whose file list setuptools would reuse), in an isolated environment with
the build backend the project asks for (from PyPI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

FNJOB_PROJECT = Path(__file__).resolve().parents[2] / "fnjob"


def test_the_wheel_holds_every_module_of_the_package(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(
        FNJOB_PROJECT, project, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build")
    )
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            str(project),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("fnjob-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("fnjob/")}
    sources = {
        path.relative_to(FNJOB_PROJECT).as_posix()
        for path in (FNJOB_PROJECT / "fnjob").rglob("*")
        if path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    }
    assert "fnjob/fairing/kubernetes/utils.py" in sources
    assert sorted(sources - shipped) == []
