"""Render + transform cost against plain `kubectl kustomize`, and a cached re-render.

    .venv/bin/python benchmarks/bench_render.py [PATH-TO-kubeflow/manifests-CHECKOUT]

Without a path it measures our own fixture (tests/fixtures/kubeflow-manifests). Targets:
render+transform overhead over plain kustomize <= 15 %, cached re-render <= 0.5 s.
Prints figures; asserts nothing (timings are not tests).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.gpu.scheduling import GpuScheduling  # noqa: E402
from components.kubeflow.component import build_phases, placeholder_credentials  # noqa: E402
from components.kubeflow.manifests import kubectl_binary, render_manifests  # noqa: E402
from components.kubeflow.transform import KubeflowArgs  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "kubeflow-manifests"


def median_seconds(action: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    source = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else FIXTURE
    runs = 5 if source == FIXTURE else 3
    kubectl = kubectl_binary()
    args = KubeflowArgs(
        admin_email="bench@example.org",
        source=str(source),
        http_mode=True,
        gpu_groups=(GpuScheduling("gpu-a"), GpuScheduling("gpu-b", bundles_device_plugin=True)),
        notebook_images=("registry.example.org/nb:1",),
        registry_access="none",
    )
    credentials = placeholder_credentials()

    def plain() -> None:
        subprocess.run(
            [str(kubectl), "kustomize", str(source / "example")],
            check=True,
            capture_output=True,
        )

    def ours_uncached() -> None:
        with tempfile.TemporaryDirectory() as cache:
            rendered = render_manifests(str(source), cache_dir=Path(cache))
            assert not rendered.from_cache
            build_phases(rendered.objects, args, credentials)

    warm_cache = Path(tempfile.mkdtemp(prefix="bench-render-cache-"))
    first = render_manifests(str(source), cache_dir=warm_cache)
    size = len(json.dumps(list(first.objects)))

    def ours_cached() -> None:
        rendered = render_manifests(str(source), cache_dir=warm_cache)
        assert rendered.from_cache
        build_phases(rendered.objects, args, credentials)

    def cached_render_only() -> None:
        render_manifests(str(source), cache_dir=warm_cache)

    plain()  # warm the page cache and kubectl binary
    t_plain = median_seconds(plain, runs)
    t_ours = median_seconds(ours_uncached, runs)
    t_cached = median_seconds(ours_cached, runs)
    t_cached_render = median_seconds(cached_render_only, runs)
    overhead = (t_ours - t_plain) / t_plain * 100
    print(f"source: {source}")
    print(f"objects: {len(first.objects)}  (~{size / 1e6:.1f} MB as JSON)")
    print(f"plain kubectl kustomize:          {t_plain:8.3f} s  (median of {runs})")
    print(f"our render + transform, no cache: {t_ours:8.3f} s")
    print(f"overhead over plain kustomize:    {overhead:7.1f} %   (target <= 15 %)")
    print(f"cached re-render + transform:     {t_cached:8.3f} s  (target <= 0.5 s)")
    print(f"cached re-render alone:           {t_cached_render:8.3f} s")


if __name__ == "__main__":
    main()
