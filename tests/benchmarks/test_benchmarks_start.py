"""Every benchmark starts: its imports (benchlib, fnjob, the test fixtures it borrows) resolve
and it reads its options. The figures themselves are never checked here (they depend on the
machine); a benchmark that no longer imports would only be found when someone next needs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_benchmark_answers_help(script: Path) -> None:
    # Run from elsewhere, as a user would: the script finds its own helpers.
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=script.anchor,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:500]
