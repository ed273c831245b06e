"""The real runner's output for the functions in ``run_payloads``.

``runner_log_lines`` runs fnjob's own runner (the program inside every image) in a local
subprocess, so the fake cluster serves exactly what a real pod would print.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fnjob.protocol import encode_call

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = REPO_ROOT / "fnjob" / "fnjob" / "runner.py"


def runner_log_lines(function_name: str, *args: Any, **kwargs: Any) -> list[str]:
    """What fnjob's runner prints when it calls ``run_payloads.<function_name>``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "FNJOB_ENTRY": f"module:tests.fnjob.run_payloads:{function_name}",
        "FNJOB_CALL": encode_call(args, kwargs),
    }
    completed = subprocess.run(
        [sys.executable, str(RUNNER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=60,
    )
    return completed.stdout.splitlines()
