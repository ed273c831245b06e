"""Function-to-result time with the local deployer (podman), on a cached image.

Prints figures, asserts nothing. Starts its own ``docker-registry`` on 127.0.0.1, a private
podman configuration, and uses the cached Debian Python base from the test fixtures (built
with mmdebstrap on first use).

    .venv/bin/python benchmarks/bench_local_run.py [--repeats N]

Figures:
- first call: package + append + push + podman pull + run (cold podman storage);
- ``Job.run`` again, same code: the image is cached everywhere (blobs skipped in the
  registry, image in podman's storage) -- the figure a user iterating locally sees;
- against it, interleaved round by round: a bare ``podman run --rm`` of the same image with
  the same call mounted (the container does the same work; nothing is built or checked);
- the build step alone, and ``run_image`` alone (container start -> outcome parsed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "fnjob"), str(REPO_ROOT)]

from fnjob import Build, Job  # noqa: E402
from fnjob.options import RUN_DIR  # noqa: E402
from fnjob.run.local import run_directory  # noqa: E402
from fnjob.run.protocol import encode_call, new_run_key  # noqa: E402
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
        f"{label:<46} median {statistics.median(ms):7.0f} ms"
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
                job = Job(
                    base_image=base,
                    registry=f"{registry.host}/bench",
                    image_name="local-run",
                    deployer="local",
                    engine="podman",
                    engine_env=podman.env,
                    building=Build(cache_dir=workdir / "cache"),
                    on_log=lambda line: None,
                )
                first, value = _timed(lambda: job.run(run_payloads.add, 2, 40))
                assert value == 42, value
                image = job.build(run_payloads.add).ref
                call = encode_call((2, 40))
                engine_env = {**os.environ, **podman.env}
                runs, bare, builds, deploys = [], [], [], []
                with run_directory(call, new_run_key()) as run_dir:
                    bare_command = ["podman", "run", "--rm", "--volume", f"{run_dir}:{RUN_DIR}:ro"]
                    bare_command.append(image)

                    def bare_run() -> None:
                        subprocess.run(
                            bare_command, env=engine_env, capture_output=True, check=True
                        )

                    for _ in range(repeats):
                        runs.append(_timed(lambda: job.run(run_payloads.add, 2, 40))[0])
                        bare.append(_timed(bare_run)[0])
                        builds.append(_timed(lambda: job.build(run_payloads.add))[0])
                        deploys.append(
                            _timed(lambda: job.run_image(image, call, function_name="add"))[0]
                        )
            finally:
                release_podman_storage(podman)
    print(f"python {sys.version.split()[0]}, podman local deployer, base {BASE_REPOSITORY}")
    print(f"{'first call (cold: push, pull, run)':<46} {first * 1000:7.0f} ms")
    _summary("function-to-result, cached image (Job.run)", runs)
    _summary("bare podman run --rm, same image and call", bare)
    print(
        f"{'ratio Job.run / bare podman run (medians)':<46} "
        f"{statistics.median(runs) / statistics.median(bare):7.2f}x"
    )
    _summary("  build alone (all blobs already there)", builds)
    _summary("  run_image alone (podman run -> outcome)", deploys)


if __name__ == "__main__":
    main()
