"""Function-to-result time of 2 local ranks against 1, same function, same cached image.

Prints figures, asserts nothing. Starts its own ``docker-registry`` on 127.0.0.1, a private
podman configuration, and uses the cached Debian Python base from the test fixtures (built
with mmdebstrap on first use).

    .venv/bin/python benchmarks/bench_distributed.py [--repeats N]

Figures, from ``Job.run`` to the value, image already built and pulled, interleaved round by
round so both sides see the same machine load:
- 1 rank: ``Job(deployer="local")``, one container;
- 2 ranks: ``Job(deployer="local", nodes=2)``: a podman network, two containers, the
  launcher's signed join of node 1 to node 0, a process per rank, both outcomes read;
- the overhead of 2 ranks over 1 (difference and ratio of the medians).
The function is ``add(2, 40)`` (no torch), so the figures are fnjob's and podman's cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "fnjob"), str(REPO_ROOT)]

from fnjob import Build, Job  # noqa: E402
from tests.fnjob import run_payloads  # noqa: E402
from tests.fnjob.conftest import (  # noqa: E402
    BASE_REPOSITORY,
    cached_base_layout,
    copy_base_into,
    make_podman_config,
    release_podman_storage,
    running_registry,
)


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def _summary(label: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    print(
        f"{label:<40} median {statistics.median(ms):7.0f} ms"
        f"   min {ms[0]:7.0f} ms   max {ms[-1]:7.0f} ms   (n={len(ms)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    layout = cached_base_layout()
    with tempfile.TemporaryDirectory(prefix="fnjob-bench-") as tmp:
        workdir = Path(tmp)
        with running_registry(workdir / "registry") as registry:
            base = copy_base_into(layout, registry.host, BASE_REPOSITORY)
            podman = make_podman_config(workdir / "podman", [registry.host])
            try:
                settings: dict[str, Any] = {
                    "base_image": base,
                    "registry": f"{registry.host}/bench",
                    "image_name": "distributed",
                    "deployer": "local",
                    "engine": "podman",
                    "engine_env": podman.env,
                    "building": Build(cache_dir=workdir / "cache"),
                    "on_log": lambda line: None,
                    "progress": False,
                }
                one, two = Job(**settings), Job(nodes=2, **settings)
                # Build, push and pull once: both sides then run a cached image.
                assert one.run(run_payloads.add, 2, 40) == 42
                assert two.run(run_payloads.add, 2, 40) == 42
                singles, pairs = [], []
                for _ in range(repeats):
                    singles.append(_timed(lambda: one.run(run_payloads.add, 2, 40))[0])
                    pairs.append(_timed(lambda: two.run(run_payloads.add, 2, 40))[0])
            finally:
                release_podman_storage(podman)
    print(f"python {sys.version.split()[0]}, podman local deployer, base {BASE_REPOSITORY}")
    _summary("1 rank (one container)", singles)
    _summary("2 ranks (network, two containers)", pairs)
    single, pair = statistics.median(singles), statistics.median(pairs)
    print(f"{'overhead of 2 ranks over 1 (medians)':<40} {(pair - single) * 1000:+7.0f} ms")
    print(f"{'ratio 2 ranks / 1 rank (medians)':<40} {pair / single:7.2f}x")


if __name__ == "__main__":
    main()
