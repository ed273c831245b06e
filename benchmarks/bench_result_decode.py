"""Decoding a function's result from its container log, at 16 and 64 MiB.

Prints figures, asserts nothing. The log is what the caller receives from the kubelet: the
runner's outcome (``fnjob.run.runner.outcome_lines``, signed with a fresh key) with a timestamp
before each line (``timestamps=true``), in reads of ``LOG_READ_BYTES``. It is decoded the
way ``JobFollower`` does (line splitting, timestamp dedup, signature check, unpickling).

The previous decoder (one outcome line, its bytes gathered with ``pending += chunk`` from
8 KiB reads) is measured on the same result sizes in the same run, interleaved with the
current one; at 64 MiB only when ``--old-64`` is given (it is quadratic: minutes).

End to end, the result also goes through a Job on the fake API server
(``tests/fnjob/fake_kube_api.py``): the real runner prints it in a subprocess, the real
``kubernetes`` client streams the log over HTTP, ``JobDeployer`` returns the value (the pod
size limit lifted with ``FNJOB_MAX_RESULT_BYTES``, as a 64 MiB result is over it).

    .venv/bin/python benchmarks/bench_result_decode.py [--repeats N] [--old-64]

Wall time and CPU time of this process are both printed: on a shared machine the CPU time
is the steadier of the two.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import pickle
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "fnjob"), str(REPO_ROOT)]

from fnjob.options import Lifecycle  # noqa: E402
from fnjob.run.cluster import LOG_READ_BYTES  # noqa: E402
from fnjob.run.follow import _LineSplitter, _LogPosition  # noqa: E402
from fnjob.run.job import JobDeployer  # noqa: E402
from fnjob.run.manifest import JobOptions  # noqa: E402
from fnjob.run.protocol import OutcomeReader, encode_call, new_run_key  # noqa: E402
from fnjob.run.runner import outcome_lines  # noqa: E402
from tests.fnjob.fake_kube_api import FakeKubeApi, JobScenario  # noqa: E402
from tests.fnjob.run_fixtures import api_client_for  # noqa: E402
from tests.fnjob.run_payloads import random_bytes  # noqa: E402

MIB = 1024 * 1024
STAMP = "2026-12-03T08:00:00.000000000Z "


def current_log(value: bytes, key: bytes) -> list[bytes]:
    data = b"".join(
        STAMP.encode() + line for line in outcome_lines({"ok": True}, pickle.dumps(value), key)
    )
    return [data[i : i + LOG_READ_BYTES] for i in range(0, len(data), LOG_READ_BYTES)]


def decode_current(chunks: list[bytes], key: bytes) -> Any:
    reader, position, splitter = OutcomeReader(key), _LogPosition(), _LineSplitter()
    position.start_pass()
    for line in splitter.lines(chunks):
        text = position.accept(line)
        if text is not None:
            reader.feed(text)
    return reader.result().unwrap()


# -- the previous format and decoder (fnjob before issue 17), kept here to compare ----------

OLD_PREFIX = "FNJOB-OUTCOME/2 "
OLD_SIGNED = re.compile(re.escape(OLD_PREFIX) + r"([A-Za-z0-9+/]*={0,2}) ([0-9a-f]{64})")


def old_log(value: bytes, key: bytes) -> list[bytes]:
    record = {"ok": True, "value": base64.b64encode(pickle.dumps(value)).decode()}
    text = OLD_PREFIX + base64.b64encode(json.dumps(record).encode()).decode()
    signature = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    data = f"{text} {signature}\n".encode()
    return [data[i : i + 8192] for i in range(0, len(data), 8192)]


def old_lines(chunks: list[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace").rstrip("\r")


def decode_old(chunks: list[bytes], key: bytes) -> Any:
    for line in old_lines(chunks):
        for match in OLD_SIGNED.finditer(line):
            signed = OLD_PREFIX + match.group(1)
            expected = hmac.new(key, signed.encode(), hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, match.group(2)):
                record = json.loads(base64.b64decode(match.group(1)))
                return pickle.loads(base64.b64decode(record["value"]))
    raise AssertionError("no outcome")


def measured(decode: Callable[[list[bytes], bytes], Any], chunks: list[bytes], key: bytes) -> Any:
    wall, cpu = time.perf_counter(), time.process_time()
    value = decode(chunks, key)
    return value, time.perf_counter() - wall, time.process_time() - cpu


def end_to_end(size: int) -> float:
    """Seconds from ``JobDeployer.run`` to the value, through the fake API."""
    options = JobOptions(
        namespace="bench",
        lifecycle=Lifecycle(poll_interval=0.05),
        env={"FNJOB_MAX_RESULT_BYTES": str(2 * size)},
    )
    with FakeKubeApi(JobScenario(entry="module:tests.fnjob.run_payloads:big_result")) as fake:
        deployer = JobDeployer(options, api_client=api_client_for(fake))
        start = time.perf_counter()
        value = deployer.run(
            "bench/image", encode_call((size,)), function_name="big_result", on_log=lambda _: None
        )
        seconds = time.perf_counter() - start
    assert value == random_bytes(size)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-64", action="store_true")
    arguments = parser.parse_args()
    key = new_run_key()
    sizes = (16 * MIB, 64 * MIB)
    values = {size: random_bytes(size) for size in sizes}
    logs = {("current", size): current_log(values[size], key) for size in sizes} | {
        ("previous", size): old_log(values[size], key) for size in sizes
    }
    decoders = {"current": decode_current, "previous": decode_old}
    plan = [
        (name, size)
        for size in sizes
        for name in decoders
        if name == "current" or size == 16 * MIB or arguments.old_64
    ]
    figures: dict[tuple[str, int], list[tuple[float, float]]] = {step: [] for step in plan}
    for round_number in range(arguments.repeats):
        for name, size in plan:
            if name == "previous" and round_number > 0:
                continue  # once is enough to see it
            value, wall, cpu = measured(decoders[name], logs[(name, size)], key)
            assert value == values[size]
            figures[(name, size)].append((wall, cpu))
    for (name, size), runs in figures.items():
        log_bytes = sum(map(len, logs[(name, size)]))
        walls = [w for w, _ in runs]
        cpus = [c for _, c in runs]
        print(
            f"{name:<8} decoder, {size // MIB:>2} MiB result ({log_bytes / MIB:5.1f} MiB of log): "
            f"wall median {statistics.median(walls):6.2f} s (min {min(walls):6.2f}), "
            f"CPU median {statistics.median(cpus):6.2f} s   (n={len(runs)})"
        )
    for size in sizes:
        if ("previous", size) in figures:
            old = statistics.median(c for _, c in figures[("previous", size)])
            new = statistics.median(c for _, c in figures[("current", size)])
            print(f"{size // MIB} MiB: the previous decoder took {old / new:.1f}x the CPU time")
    if not arguments.old_64:
        print("previous decoder at 64 MiB not run (quadratic; --old-64 runs it)")
    for size in sizes:
        seconds = [end_to_end(size) for _ in range(arguments.repeats)]
        print(
            f"end to end through the fake API, {size // MIB:>2} MiB result: "
            f"median {statistics.median(seconds):6.2f} s (min {min(seconds):6.2f})"
            f"   (n={len(seconds)})"
        )


if __name__ == "__main__":
    main()
