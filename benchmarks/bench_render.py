"""Render + transform + phases against plain `kubectl kustomize`, and a cached re-render.

    .venv/bin/python benchmarks/bench_render.py [PATH-TO-kubeflow/manifests-CHECKOUT]

Without a path it measures upstream Kubeflow 26.03 from the project's test data (found as the
tests find it: `../shared/upstream`, `KUBEFLOW_UPSTREAM_DATA` or `KUBEFLOW_UPSTREAM_DIR`),
or our small fixture when that data is absent. Targets (from issue 7): render overhead over
plain kustomize <= 15 %, cached re-render <= 0.5 s. Prints figures; asserts nothing.
The machine may be shared: wall-clock medians and minimums are printed, with the CPU time
(user + system, children included) of plain kustomize and of our uncached render. Our
kubectl runs with a less eager Go garbage collector (see `kubectl_environment`); plain
kustomize is measured both as a user runs it and with the same settings.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.kubeflow.component import build_phases, placeholder_credentials  # noqa: E402
from components.kubeflow.manifests import (  # noqa: E402
    build_overlay,
    kubectl_binary,
    kubectl_environment,
    kustomize_json,
    render_manifests,
)
from stack.render import write_phases  # noqa: E402
from tests.kubeflow.conftest import FIXTURE_SOURCE, find_upstream_release, make_args  # noqa: E402


def measure(action: Callable[[], object], runs: int) -> tuple[float, float, float]:
    """(median wall s, min wall s, median CPU s of this process and its children)."""
    walls, cpus = [], []
    for _ in range(runs):
        before = os.times()
        start = time.perf_counter()
        action()
        walls.append(time.perf_counter() - start)
        after = os.times()
        cpus.append(
            sum(after[i] - before[i] for i in (0, 1, 2, 3))  # user, system, children's
        )
    return statistics.median(walls), min(walls), statistics.median(cpus)


def choose_source(scratch: Path) -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1]).resolve()
    found = find_upstream_release(scratch)
    if isinstance(found, str):
        print(f"({found}; measuring the test fixture instead)")
        return FIXTURE_SOURCE
    return found.source


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="bench-render-"))
    source = choose_source(scratch / "upstream")
    runs = 7 if source == FIXTURE_SOURCE else 5
    kubectl = kubectl_binary()
    args = make_args(source=str(source), registry_access="none")
    credentials = placeholder_credentials()

    def plain() -> None:
        subprocess.run(
            [str(kubectl), "kustomize", str(source / "example")], check=True, capture_output=True
        )

    def plain_same_gc() -> None:
        subprocess.run(
            [str(kubectl), "kustomize", str(source / "example")],
            check=True,
            capture_output=True,
            env=kubectl_environment(),
        )

    overlay_dir = scratch / "overlay"
    overlay_dir.mkdir()
    (overlay_dir / "kustomization.yaml").write_text(
        json.dumps(build_overlay(source, overlay_dir, None))
    )

    def kubectl_to_json() -> None:
        kustomize_json(overlay_dir, kubectl)

    def ours_uncached() -> None:
        with tempfile.TemporaryDirectory() as cache:
            rendered = render_manifests(str(source), cache_dir=Path(cache))
            assert not rendered.from_cache
            build_phases(rendered.objects, args, credentials)

    warm_cache = scratch / "cache"
    first = render_manifests(str(source), cache_dir=warm_cache)
    size = len(json.dumps(list(first.objects)))

    def ours_cached() -> None:
        rendered = render_manifests(str(source), cache_dir=warm_cache)
        assert rendered.from_cache
        build_phases(rendered.objects, args, credentials)

    def cached_render_only() -> None:
        render_manifests(str(source), cache_dir=warm_cache)

    def render_command_cached() -> None:
        rendered = render_manifests(str(source), cache_dir=warm_cache)
        phases = build_phases(rendered.objects, args, credentials)
        write_phases(phases, scratch / "out", str(source))

    plain()  # warm the page cache and the kubectl binary
    # Alternate plain and ours so that load from other processes hits both alike.
    plain_runs, same_gc_runs, ours_runs, json_runs = [], [], [], []
    for _ in range(runs):
        plain_runs.append(measure(plain, 1))
        ours_runs.append(measure(ours_uncached, 1))
        same_gc_runs.append(measure(plain_same_gc, 1))
        json_runs.append(measure(kubectl_to_json, 1))
    t_plain = statistics.median(r[0] for r in plain_runs)
    t_ours = statistics.median(r[0] for r in ours_runs)
    min_plain, min_ours = min(r[1] for r in plain_runs), min(r[1] for r in ours_runs)
    cpu_plain = statistics.median(r[2] for r in plain_runs)
    cpu_ours = statistics.median(r[2] for r in ours_runs)
    t_same_gc = statistics.median(r[0] for r in same_gc_runs)
    cpu_same_gc = statistics.median(r[2] for r in same_gc_runs)
    t_json = statistics.median(r[0] for r in json_runs)
    cpu_json = statistics.median(r[2] for r in json_runs)
    t_cached, min_cached, _ = measure(ours_cached, runs)
    t_cached_render, _, _ = measure(cached_render_only, runs)
    t_command, _, _ = measure(render_command_cached, 3)

    def pct(ours: float, plain: float) -> str:
        return f"{(ours - plain) / plain * 100:+7.1f} %"

    print(f"source: {source}")
    print(f"objects: {len(first.objects)}  (~{size / 1e6:.1f} MB as JSON); {runs} runs each")
    print(f"plain kubectl kustomize:              {t_plain:7.3f} s  (min {min_plain:.3f})")
    print(f"our render + transform + phases:      {t_ours:7.3f} s  (min {min_ours:.3f})")
    print(f"overhead over plain kustomize:        {pct(t_ours, t_plain)}   (target <= +15 %)")
    print(f"  by minimum wall time:               {pct(min_ours, min_plain)}")
    print(f"  by CPU time ({cpu_plain:.2f} s vs {cpu_ours:.2f} s):      {pct(cpu_ours, cpu_plain)}")
    print(
        f"plain kustomize with our Go GC settings: {t_same_gc:6.3f} s; our overhead over it "
        f"{pct(t_ours, t_same_gc)} wall, {pct(cpu_ours, cpu_same_gc)} CPU"
    )
    print(
        f"  of which kubectl's kustomize + JSON: {t_json:7.3f} s  ({pct(t_json, t_same_gc)} wall, "
        f"{pct(cpu_json, cpu_same_gc)} CPU over the same GC); the rest is Python"
    )
    print(
        f"cached re-render + transform + phases:{t_cached:7.3f} s  (min {min_cached:.3f}; "
        "target <= 0.5 s)"
    )
    print(f"cached re-render alone:               {t_cached_render:7.3f} s")
    print(f"render command (cached, files written):{t_command:6.3f} s")


if __name__ == "__main__":
    main()
