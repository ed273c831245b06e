"""Our render against plain `kubectl kustomize`, on equal terms; the whole render command;
a cached re-render.

    .venv/bin/python benchmarks/bench_render.py [PATH-TO-kubeflow/manifests-CHECKOUT] [--runs N]

Without a path it measures upstream Kubeflow 26.03 from the project's test data (found as the
tests find it: `../shared/upstream`, `KUBEFLOW_UPSTREAM_DATA` or `KUBEFLOW_UPSTREAM_DIR`),
or our small fixture when that data is absent. Targets (from issue 7): render overhead over
plain kustomize <= 15 %, cached re-render <= 0.5 s. Prints figures; asserts nothing.

Equal terms: every kubectl, plain or ours, runs in the one environment our render uses
(`kubectl_environment()`: Go's GC settings and no kubeconfig), and each side's whole command
is printed. The sides alternate within each round, in an order reversed every other round,
so load from other processes hits them alike. The machine may be shared: medians and
minimums of wall-clock time are printed, with the CPU time (user + system, kubectl
included), which load changes least. Two more sides say where the overhead goes: kubectl
decoding plain kustomize's YAML into JSON (the work the identity patch adds to a build), and
PyYAML's C loader decoding the same YAML (the alternative to it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.kubeflow.component import build_phases, placeholder_credentials  # noqa: E402
from components.kubeflow.manifests import (  # noqa: E402
    build_overlay,
    kubectl_binary,
    kubectl_environment,
    kustomize_json_command,
    render_manifests,
)
from tests.kubeflow.conftest import FIXTURE_SOURCE, find_upstream_release, make_args  # noqa: E402

Sample = tuple[float, float]  # (wall s, CPU s of this process and its children)


def measure(action: Callable[[], object]) -> Sample:
    before = os.times()
    start = time.perf_counter()
    action()
    wall = time.perf_counter() - start
    after = os.times()
    return wall, sum(after[i] - before[i] for i in (0, 1, 2, 3))  # user, system, children's


def choose_source(scratch: Path) -> Path:
    found = find_upstream_release(scratch)
    if isinstance(found, str):
        print(f"({found}; measuring the test fixture instead)")
        return FIXTURE_SOURCE
    return found.source


def shown(command: list[str], env: dict[str, str] | None = None) -> str:
    """A command as a shell would run it, with the environment it changes."""
    settings = [f"{key}={value}" for key, value in (env or {}).items()]
    return shlex.join([*settings, *command])


def kubectl_settings() -> dict[str, str]:
    """What kubectl_environment() sets on top of the caller's environment."""
    env = kubectl_environment()
    return {k: v for k, v in env.items() if os.environ.get(k) != v}


def summary(samples: list[Sample]) -> tuple[float, float, float]:
    """(median wall, min wall, median CPU)."""
    return (
        statistics.median(s[0] for s in samples),
        min(s[0] for s in samples),
        statistics.median(s[1] for s in samples),
    )


def pct(ours: float, plain: float) -> str:
    return f"{(ours - plain) / plain * 100:+6.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, help="a kubeflow/manifests checkout")
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    runs = options.runs
    with tempfile.TemporaryDirectory(prefix="bench-render-") as temporary:
        measure_all(Path(temporary), options.source, runs)


def measure_all(scratch: Path, given: Path | None, runs: int) -> None:
    source = given.resolve() if given is not None else choose_source(scratch / "upstream")
    kubectl = kubectl_binary()
    args = make_args(local_path=str(source), registry_access="none")
    credentials = placeholder_credentials()
    settings = kubectl_settings()

    plain_command = [str(kubectl), "kustomize", str(source / "example")]

    def plain() -> None:
        subprocess.run(plain_command, check=True, capture_output=True, env=kubectl_environment())

    overlay_dir = scratch / "overlay"
    overlay_dir.mkdir()
    (overlay_dir / "kustomization.yaml").write_text(
        json.dumps(build_overlay(source, overlay_dir, None))
    )
    json_command = kustomize_json_command(overlay_dir, kubectl)

    def kubectl_to_json() -> None:
        subprocess.run(json_command, check=True, capture_output=True, env=kubectl_environment())

    # Where the overhead goes, and the alternative: kustomize's own YAML, decoded once by
    # kubectl (what the identity patch adds to a build) and once by PyYAML's C loader.
    plain_yaml = scratch / "plain.yaml"
    plain_yaml.write_bytes(
        subprocess.run(
            plain_command, check=True, capture_output=True, env=kubectl_environment()
        ).stdout
    )
    decode_command = [*json_command[:-2], "-f", str(plain_yaml)]

    def kubectl_decode() -> None:
        subprocess.run(decode_command, check=True, capture_output=True, env=kubectl_environment())

    def pyyaml_decode() -> None:
        list(yaml.load_all(plain_yaml.read_bytes(), Loader=yaml.CSafeLoader))

    def ours_uncached() -> None:
        with tempfile.TemporaryDirectory() as cache:
            rendered = render_manifests(str(source), cache_dir=Path(cache))
            assert not rendered.from_cache
            build_phases(rendered.objects, args, credentials)

    def render_command(cache: Path) -> list[str]:
        return [
            *(sys.executable, "-m", "stack.render", "--stack", "dev"),
            *("--kubeflow-source", str(source), "--out", str(scratch / "out")),
            *("--cache-dir", str(cache)),
        ]

    def command_uncached() -> None:
        with tempfile.TemporaryDirectory() as cache:
            command = render_command(Path(cache))
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT)

    warm_cache = scratch / "cache"
    first = render_manifests(str(source), cache_dir=warm_cache)
    size = len(json.dumps(list(first.objects)))

    def ours_cached() -> None:
        rendered = render_manifests(str(source), cache_dir=warm_cache)
        assert rendered.from_cache
        build_phases(rendered.objects, args, credentials)

    def command_cached() -> None:
        subprocess.run(render_command(warm_cache), check=True, capture_output=True, cwd=ROOT)

    print(f"source: {source}")
    print(f"objects: {len(first.objects)}  (~{size / 1e6:.1f} MB as JSON); {runs} rounds")
    print("commands (every kubectl in the same environment):")
    print(f"  plain:   {shown(plain_command, settings)}")
    print(
        "  ours:    render_manifests + build_phases in this process (an empty cache), which "
        "runs the next command on an overlay of the example"
    )
    print(f"  kubectl to JSON alone: {shown(json_command, settings)}")
    print(f"  command: {shown(render_command(Path('<empty cache>')))}")
    print(f"  decoding alone: {shown(decode_command, settings)}")

    plain()  # warm the page cache and the kubectl binary
    sides: dict[str, Callable[[], None]] = {
        "plain": plain,
        "ours": ours_uncached,
        "command": command_uncached,
        "json": kubectl_to_json,
        "decode": kubectl_decode,
        "pyyaml": pyyaml_decode,
    }
    samples: dict[str, list[Sample]] = {name: [] for name in sides}
    for round_ in range(runs):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for name in order:
            samples[name].append(measure(sides[name]))
    cached = [measure(ours_cached) for _ in range(max(runs, 5))]
    cached_command = [measure(command_cached) for _ in range(3)]

    def line(label: str, figures: tuple[float, float, float]) -> None:
        wall, low, cpu = figures
        print(f"{label:<36}{wall:7.3f} s  (min {low:.3f}, CPU {cpu:.2f} s)")

    plain_figures = summary(samples["plain"])
    ours_figures = summary(samples["ours"])
    command_figures = summary(samples["command"])
    line("plain kubectl kustomize:", plain_figures)
    line("ours, render + transform + phases:", ours_figures)
    overheads = [pct(o, p) for o, p in zip(ours_figures, plain_figures, strict=True)]
    print(
        f"  overhead: {overheads[0]} median wall, {overheads[1]} min wall, {overheads[2]} CPU"
        "  (target <= +15 %)"
    )
    json_figures = summary(samples["json"])
    line("  of which kubectl to JSON:", json_figures)
    extra = [pct(j, p) for j, p in zip(json_figures, plain_figures, strict=True)]
    print(
        f"  kubectl to JSON over plain kustomize: {extra[0]} median wall, {extra[1]} min wall, "
        f"{extra[2]} CPU; the rest is Python"
    )
    decode_figures = summary(samples["decode"])
    line("  kubectl decoding kustomize's YAML:", decode_figures)
    print(f"    ({decode_figures[2] / plain_figures[2] * 100:.1f} % of plain kustomize's CPU)")
    line("  PyYAML's C loader on the same YAML:", summary(samples["pyyaml"]))
    line("whole render command, uncached:", command_figures)
    ratios = [c / p for c, p in zip(command_figures, plain_figures, strict=True)]
    print(
        f"  x{ratios[0]:.2f} of plain kustomize by median wall, x{ratios[1]:.2f} by min wall, "
        f"x{ratios[2]:.2f} by CPU"
    )
    cached_wall, cached_min, _ = summary(cached)
    print(
        f"cached re-render + transform + phases: {cached_wall:.3f} s  (min {cached_min:.3f}; "
        "target <= 0.5 s)"
    )
    print(f"whole render command, cached (files written): {summary(cached_command)[0]:.3f} s")


if __name__ == "__main__":
    main()
