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

from benchlib import BASE_REPOSITORY, print_summary, scratch_registry, timed

from fnjob import Build, Job
from fnjob.options import RUN_DIR
from fnjob.run.local import run_directory
from fnjob.run.protocol import encode_call, new_run_key
from tests.fnjob import run_payloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    with scratch_registry("fnjob-bench-", podman=True) as scratch:
        assert scratch.podman is not None
        job = Job(
            base_image=scratch.base,
            registry=f"{scratch.registry.host}/bench",
            image_name="local-run",
            deployer="local",
            engine="podman",
            engine_env=scratch.podman.env,
            building=Build(cache_dir=scratch.workdir / "cache"),
            on_log=lambda line: None,
        )
        first, value = timed(lambda: job.run(run_payloads.add, 2, 40))
        assert value == 42, value
        image = job.build(run_payloads.add).ref
        call = encode_call((2, 40))
        engine_env = {**os.environ, **scratch.podman.env}
        runs, bare, builds, deploys = [], [], [], []
        with run_directory(call, new_run_key()) as run_dir:
            bare_command = ["podman", "run", "--rm", "--volume", f"{run_dir}:{RUN_DIR}:ro", image]

            def bare_run() -> None:
                subprocess.run(bare_command, env=engine_env, capture_output=True, check=True)

            for _ in range(repeats):
                runs.append(timed(lambda: job.run(run_payloads.add, 2, 40))[0])
                bare.append(timed(bare_run)[0])
                builds.append(timed(lambda: job.build(run_payloads.add))[0])
                deploys.append(timed(lambda: job.run_image(image, call, function_name="add"))[0])
    print(f"python {sys.version.split()[0]}, podman local deployer, base {BASE_REPOSITORY}")
    print(f"{'first call (cold: push, pull, run)':<46} {first * 1000:7.0f} ms")
    print_summary("function-to-result, cached image (Job.run)", runs)
    print_summary("bare podman run --rm, same image and call", bare)
    print(
        f"{'ratio Job.run / bare podman run (medians)':<46} "
        f"{statistics.median(runs) / statistics.median(bare):7.2f}x"
    )
    print_summary("  build alone (all blobs already there)", builds)
    print_summary("  run_image alone (podman run -> outcome)", deploys)


if __name__ == "__main__":
    main()
