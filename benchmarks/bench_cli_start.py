"""Start-up of the ``fnjob`` command against Python's own start, measured interleaved.

Prints figures, asserts nothing. Each round runs, in turn, in fresh processes:
``python -c pass`` (the floor), ``python -m fnjob --help``, ``python -c "import fnjob.cli"``,
and ``python -c "import kubernetes.client"`` (what the command used to load at start).

    .venv/bin/python benchmarks/bench_cli_start.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "fnjob --help": ["-m", "fnjob", "--help"],
    "import fnjob.cli": ["-c", "import fnjob.cli"],
    "import kubernetes.client (for scale)": ["-c", "import kubernetes.client"],
}


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process; CPU time barely moves on a busy machine."""
    cpu, start = _cpu(), time.perf_counter()
    subprocess.run(
        [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, check=True, timeout=120
    )
    return time.perf_counter() - start, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    repeats = parser.parse_args().repeats
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "fnjob")}
    walls: dict[str, list[float]] = {label: [] for label in COMMANDS}
    cpus: dict[str, list[float]] = {label: [] for label in COMMANDS}
    for args in COMMANDS.values():
        _once(args, env)  # warm the file cache and the .pyc files
    for _ in range(repeats):
        for label, args in COMMANDS.items():
            wall, cpu = _once(args, env)
            walls[label].append(wall)
            cpus[label].append(cpu)
    floor = statistics.median(walls["python -c pass"])
    print(f"python {sys.version.split()[0]}, {repeats} interleaved rounds, fresh processes")
    for label, seconds in walls.items():
        median = statistics.median(seconds)
        print(
            f"{label:<38} wall median {median * 1000:5.0f} ms (min {min(seconds) * 1000:5.0f})"
            f"   CPU median {statistics.median(cpus[label]) * 1000:5.0f} ms"
            f"   {median / floor:4.1f}x python -c pass"
        )


if __name__ == "__main__":
    main()
