"""Run fnjob's runner (the program inside every image) in a local subprocess.

The runner reads its call and its key from a run directory, as it does in a pod (the
run's Secret) or a local container (a private mount); ``write_run_dir`` makes one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cloudpickle

from fnjob.run.protocol import CALL_FILE, KEY_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = REPO_ROOT / "fnjob" / "fnjob" / "run" / "runner.py"


def payload(function_name: str) -> str:
    """The ``FNJOB_ENTRY`` of a function in ``tests/fnjob/run_payloads.py``."""
    return f"module:tests.fnjob.run_payloads:{function_name}"


def write_run_dir(parent: Path, call: bytes | None, key: bytes | None) -> Path:
    """A run directory under ``parent`` holding ``call`` and ``key`` (when given)."""
    run_dir = parent / "run"
    run_dir.mkdir()
    for name, data in ((CALL_FILE, call), (KEY_FILE, key)):
        if data is not None:
            (run_dir / name).write_bytes(data)
    return run_dir


def run_runner(
    entry: str, run_dir: Path, *, pythonpath: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the runner for ``entry`` with ``run_dir``; stdout and stderr kept apart."""
    paths = [
        p for p in (pythonpath, str(REPO_ROOT), str(Path(cloudpickle.__file__).parent.parent)) if p
    ]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FNJOB_")}
    environment.update(
        PYTHONPATH=os.pathsep.join(paths),
        FNJOB_ENTRY=entry,
        FNJOB_RUN_DIR=str(run_dir),
        **env,
    )
    return subprocess.run(
        [sys.executable, str(RUNNER)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
