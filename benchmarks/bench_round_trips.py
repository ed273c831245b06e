"""Round trips and time of a cold and a warm append build, this checkout against an older one.

Prints figures, asserts nothing. Starts its own ``docker-registry`` on 127.0.0.1 with the
cached Debian Python base of the test fixtures. Each side runs in its own process (its own
``fnjob`` on ``PYTHONPATH``), rounds interleaved, and counts every HTTP request its registry
client sends (``requests.Session.request``) with the time it waited for the answer:

- cold: a small function into a NEW repository of the base's registry (the base's Python
  already cached, as for every build but the first against a base);
- warm: the same code pushed again to that repository.

    .venv/bin/python benchmarks/bench_round_trips.py [--against a547773] [--rounds 5]

``--against`` is a git revision of this repository (default: the build side before the
streaming / round-trip work), exported with ``git archive``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchlib import REPO_ROOT, scratch_registry

_WORKER = """
import json, sys, time
import requests
sys.path[:0] = [sys.argv[1]]
seen = []
original = requests.Session.request

def counted(self, method, url, *args, **kwargs):
    started = time.perf_counter()
    try:
        return original(self, method, url, *args, **kwargs)
    finally:
        path = url.split("?")[0].rstrip("/")
        kind = "uploads" if "/blobs/uploads" in path else path.rsplit("/", 2)[-2]
        seen.append((f"{method} {kind}", time.perf_counter() - started))

requests.Session.request = counted
try:  # fnjob grouped by the path a call takes (image/), or the flat package before it
    from fnjob.image.builders import AppendBuilder
    from fnjob.image.package import package_function
except ImportError:
    from fnjob.build import AppendBuilder
    from fnjob.package import package_function
import bench_small_job

from pathlib import Path
base, target, cache = sys.argv[2], sys.argv[3], Path(sys.argv[4])
AppendBuilder(base, cache_dir=cache).resolve_base()
package = package_function(bench_small_job.train)
result = {}
for phase in ("cold", "warm"):
    seen.clear()
    started = time.perf_counter()
    AppendBuilder(base, cache_dir=cache).build(package, target)
    result[phase] = {"seconds": time.perf_counter() - started, "requests": list(seen)}
print(json.dumps(result))
"""


def _export(revision: str, folder: Path) -> Path:
    folder.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision, "fnjob"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "fnjob"


def _run(tree: Path, module: Path, base: str, target: str, cache: Path) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", _WORKER, str(module), base, target, str(cache)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-3000:])
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def _summary(runs: list[dict[str, object]], phase: str) -> tuple[float, float, int, str]:
    seconds = statistics.median(float(run[phase]["seconds"]) for run in runs)  # type: ignore[index]
    # What is not spent waiting for the registry: packaging, the layer, fnjob's own code.
    local = statistics.median(
        float(run[phase]["seconds"]) - sum(e for _, e in run[phase]["requests"])  # type: ignore[index]
        for run in runs
    )
    requests = runs[-1][phase]["requests"]  # type: ignore[index]
    waited: dict[str, list[float]] = {}
    for run in runs:
        for kind, elapsed in run[phase]["requests"]:  # type: ignore[index]
            waited.setdefault(kind, []).append(elapsed)
    counts = Counter(kind for kind, _ in requests)
    detail = ", ".join(
        f"{count}x {kind} ({statistics.median(waited[kind]) * 1000:.1f} ms)"
        for kind, count in sorted(counts.items())
    )
    return seconds, local, len(requests), detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="a547773")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    with scratch_registry("fnjob-bench-rounds-") as scratch:
        work, registry, base = scratch.workdir, scratch.registry, scratch.base
        module = work / "code"
        module.mkdir()
        (module / "bench_small_job.py").write_text(
            "def train(lr=0.1, epochs=3):\n    loss = 1.0\n    for _ in range(epochs):\n"
            "        loss *= 1 - lr\n    return loss\n"
        )
        trees = {
            f"before ({options.against})": _export(options.against, work / "before"),
            "now": REPO_ROOT / "fnjob",
        }
        runs: dict[str, list[dict[str, object]]] = {name: [] for name in trees}
        for round_ in range(options.rounds):
            for index, (name, tree) in enumerate(trees.items()):
                target = f"{registry.host}/bench/side{index}-round{round_}"
                runs[name].append(_run(tree, module, base, target, work / f"cache{index}"))
        print(f"rounds: {options.rounds}, sides interleaved (medians)")
        for phase in ("cold", "warm"):
            for name in trees:
                seconds, local, count, detail = _summary(runs[name], phase)
                print(
                    f"{phase} {name:20}: {seconds * 1000:6.1f} ms ({local * 1000:5.1f} ms not "
                    f"waiting for the registry), {count:2d} requests: {detail}"
                )


if __name__ == "__main__":
    main()
