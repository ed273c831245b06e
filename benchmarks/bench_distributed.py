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
from typing import Any

from benchlib import BASE_REPOSITORY, print_summary, scratch_registry, timed

from fnjob import Build, Job
from tests.fnjob import run_payloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    with scratch_registry("fnjob-bench-", podman=True) as scratch:
        assert scratch.podman is not None
        settings: dict[str, Any] = {
            "base_image": scratch.base,
            "registry": f"{scratch.registry.host}/bench",
            "image_name": "distributed",
            "deployer": "local",
            "engine": "podman",
            "engine_env": scratch.podman.env,
            "building": Build(cache_dir=scratch.workdir / "cache"),
            "on_log": lambda line: None,
            "progress": False,
        }
        one, two = Job(**settings), Job(nodes=2, **settings)
        # Build, push and pull once: both sides then run a cached image.
        assert one.run(run_payloads.add, 2, 40) == 42
        assert two.run(run_payloads.add, 2, 40) == 42
        singles, pairs = [], []
        for _ in range(repeats):
            singles.append(timed(lambda: one.run(run_payloads.add, 2, 40))[0])
            pairs.append(timed(lambda: two.run(run_payloads.add, 2, 40))[0])
    print(f"python {sys.version.split()[0]}, podman local deployer, base {BASE_REPOSITORY}")
    print_summary("1 rank (one container)", singles, width=40)
    print_summary("2 ranks (network, two containers)", pairs, width=40)
    single, pair = statistics.median(singles), statistics.median(pairs)
    print(f"{'overhead of 2 ranks over 1 (medians)':<40} {(pair - single) * 1000:+7.0f} ms")
    print(f"{'ratio 2 ranks / 1 rank (medians)':<40} {pair / single:7.2f}x")


if __name__ == "__main__":
    main()
