"""Build memory and upload time of the append builder with a large payload, on a real registry.

Prints figures, asserts nothing. Starts its own ``docker-registry`` on 127.0.0.1 and uses the
cached Debian Python base from the test fixtures.

    .venv/bin/python benchmarks/bench_build_memory.py [--sizes-mb 512 2048] [--levels 1 6]

For each payload size (extra files: half random bytes, as weights or images, half CSV text):
- fnjob: a build in its own process (``Job(extra_files=[payload])``'s build): its peak RSS
  growth over the process's baseline (``ru_maxrss`` before packaging vs after the push) and
  its time;
- the same bytes by hand, measured the same way and interleaved: ``tar -c | gzip -1`` into a
  file, then a plain upload of that file (its sha256, which the upload must name, then one
  POST and one PUT); the ratio of fnjob's time to theirs. ``--repeats`` rounds, both sides
  interleaved, medians. Wall time moves with whatever else runs on the machine; CPU
  seconds (fnjob's process; tar, gzip and the upload's hashing and sending) do not.

And, on a 256 MiB slice of the payload, gzip levels side by side: seconds, compressed size,
and the time with the upload of the compressed bytes at the plain upload's measured speed
(how the layer's compression level was chosen).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
from benchlib import REPO_ROOT, scratch_registry

from tests.fnjob.conftest import RegistryServer

MiB = 1 << 20
SHARD = 64 * MiB

_BUILD = """
import json, re, sys, time
sys.path[:0] = [sys.argv[1]]
from fnjob.image.builders import AppendBuilder
from fnjob.image.package import package_function
import bench_payload_job

def peak():
    # VmHWM, not getrusage's ru_maxrss: that one starts from the parent's peak (Linux
    # carries it across fork and exec), which would hide this process's own.
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) * 1024

with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # the peak starts again from here: the baseline after imports
before = peak()
started = time.perf_counter()
cpu = time.process_time()
package = package_function(bench_payload_job.train, extra_files=[sys.argv[2]])
built = AppendBuilder(sys.argv[3], base_python="3.11", cache_dir=sys.argv[5]).build(
    package, sys.argv[4]
)
print(json.dumps({"seconds": time.perf_counter() - started, "before": before,
                  "cpu": time.process_time() - cpu,
                  "after": peak(), "uploaded": built.bytes_uploaded}))
"""


def _text_block(size: int) -> bytes:
    rows, total = [], 0
    generator = random.Random(7)
    while total < size:
        row = ",".join(f"{generator.random():.6f}" for _ in range(8)) + "\n"
        rows.append(row)
        total += len(row)
    return "".join(rows).encode()[:size]


def make_payload(folder: Path, size: int) -> None:
    """size bytes in 64 MiB shards, alternating random bytes and CSV text."""
    folder.mkdir(parents=True)
    text = _text_block(8 * MiB)
    for index in range(max(1, size // SHARD)):
        with (folder / f"shard-{index:03d}.{'bin' if index % 2 == 0 else 'csv'}").open("wb") as f:
            for _ in range(SHARD // (8 * MiB)):
                f.write(os.urandom(8 * MiB) if index % 2 == 0 else text)


def _plain_upload(registry: RegistryServer, repository: str, path: Path) -> float:
    """Seconds to upload the file as one blob: its digest (the upload needs it), one POST and
    one PUT streaming the file."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(MiB), b""):
            digest.update(chunk)
    with requests.Session() as session:
        answer = session.post(f"{registry.url}/v2/{repository}/blobs/uploads/", timeout=60)
        location = answer.headers["Location"]
        separator = "&" if "?" in location else "?"
        with path.open("rb") as body:
            done = session.put(
                f"{location}{separator}digest=sha256:{digest.hexdigest()}",
                data=body,
                headers={"Content-Type": "application/octet-stream"},
                timeout=600,
            )
    seconds = time.perf_counter() - started
    if done.status_code != 201:
        raise RuntimeError(f"plain upload answered {done.status_code}: {done.text[:200]}")
    return seconds


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def by_hand(
    registry: RegistryServer, payload: Path, work: Path, run: str
) -> tuple[float, float, int, float]:
    """(tar | gzip -1 seconds, plain upload seconds, bytes uploaded, CPU seconds of both)."""
    archive = work / f"by-hand-{run}.tar.gz"
    children = _children_cpu()
    started = time.perf_counter()
    subprocess.run(
        f"tar -C {payload.parent} --sort=name -cf - {payload.name} | gzip -1 > {archive}",
        shell=True,
        check=True,
    )
    compress = time.perf_counter() - started
    cpu = _children_cpu() - children
    own = time.process_time()
    upload = _plain_upload(registry, f"bench/by-hand-{run}", archive)
    cpu += time.process_time() - own
    size = archive.stat().st_size
    archive.unlink()
    return compress, upload, size, cpu


def with_fnjob(base: str, payload: Path, target: str, work: Path) -> dict[str, float]:
    module = work / "job"
    module.mkdir(exist_ok=True)
    (module / "bench_payload_job.py").write_text("def train():\n    return 1\n")
    completed = subprocess.run(
        [sys.executable, "-c", _BUILD, str(module), str(payload), base, target, str(work / "c")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "fnjob")},
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-3000:])
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def compare_levels(payload: Path, levels: list[int], upload_rate: float) -> None:
    sample = b"".join(path.read_bytes()[: 64 * MiB] for path in sorted(payload.iterdir())[:4])
    print(f"gzip levels on a {len(sample) / MiB:.0f} MiB slice (half random, half CSV):")
    for level in levels:
        started = time.perf_counter()
        size = len(gzip.compress(sample, compresslevel=level, mtime=0))
        seconds = time.perf_counter() - started
        print(
            f"  level {level}: {seconds:6.2f} s, {size / MiB:6.1f} MiB "
            f"({size / len(sample):.1%}); with the upload at {upload_rate / MiB:.0f} MiB/s: "
            f"{seconds + size / upload_rate:6.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args()
    with scratch_registry("fnjob-bench-memory-") as scratch:
        work, registry, base = scratch.workdir, scratch.registry, scratch.base
        for size_mb in options.sizes_mb:
            payload = work / f"payload-{size_mb}" / "dataset"
            make_payload(payload, size_mb * MiB)
            hands, builds = [], []
            for run in range(options.repeats):
                hands.append(by_hand(registry, payload, work, f"{size_mb}-{run}"))
                target = f"{registry.host}/bench/mem-{size_mb}-{run}"
                builds.append(with_fnjob(base, payload, target, work))
            compress = statistics.median(h[0] for h in hands)
            upload = statistics.median(h[1] for h in hands)
            sent = hands[0][2]
            built = {
                key: statistics.median(b[key] for b in builds)
                for key in ("seconds", "before", "after")
            }
            growth = max(b["after"] - b["before"] for b in builds) / MiB
            by_hand_total = statistics.median(h[0] + h[1] for h in hands)
            print(f"payload {size_mb} MB:")
            print(
                f"  fnjob build+push      : {built['seconds']:7.2f} s, peak RSS "
                f"{built['after'] / MiB:6.0f} MiB, largest growth over baseline "
                f"{growth:6.1f} MiB (goal <= 100)"
            )
            print(
                f"  tar | gzip -1 + upload: {by_hand_total:7.2f} s "
                f"({compress:.2f} s + {upload:.2f} s)"
            )
            ratios = [b["seconds"] / (h[0] + h[1]) for b, h in zip(builds, hands, strict=True)]
            cpu_ratios = [b["cpu"] / h[3] for b, h in zip(builds, hands, strict=True)]
            print(
                f"  ratio fnjob / by hand : {statistics.median(ratios):5.2f} "
                f"(goal <= 1.2; each round: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
            # CPU seconds do not depend on what else the machine runs meanwhile.
            fnjob_cpu = statistics.median(b["cpu"] for b in builds)
            hand_cpu = statistics.median(h[3] for h in hands)
            print(
                f"  CPU seconds           : fnjob {fnjob_cpu:.2f}, by hand {hand_cpu:.2f}; "
                "ratio "
                f"{statistics.median(cpu_ratios):.2f} (each round: "
                f"{', '.join(f'{r:.2f}' for r in cpu_ratios)})"
            )
            if size_mb == options.sizes_mb[0]:
                compare_levels(payload, options.levels, sent / upload)
            subprocess.run(["rm", "-rf", str(payload.parent)], check=True)


if __name__ == "__main__":
    main()
