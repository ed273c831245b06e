"""Functions the run tests ship into images. Standard library only: this module is imported
again inside the container, where fnjob itself is not installed."""

from __future__ import annotations

import os
import sys


def add(a: int, b: int) -> int:
    print(f"adding {a} and {b}")
    return a + b


def train(lr: float = 0.1, epochs: int = 3) -> dict[str, float]:
    for epoch in range(epochs):
        print(f"epoch {epoch} lr={lr}")
    return {"loss": round(1.0 / (1 + epochs * lr), 4), "lr": lr}


def explode(message: str) -> None:
    print("about to fail")
    raise ValueError(message)


def report_environment(name: str) -> dict[str, str | None]:
    print(f"stderr works too: {name}", file=sys.stderr)
    return {"value": os.environ.get(name), "cwd": os.getcwd()}


def die_hard() -> None:
    print("going down without a word")
    sys.stdout.flush()
    os._exit(3)


def count_slowly(n: int, delay: float) -> int:
    import time

    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(delay)
    return n


# -- functions whose output imitates the runner's outcome line (issue 10) -------------------
# ``records`` stand for data from an untrusted file that the function prints or logs.


def echo_records(records: list[str]) -> str:
    for record in records:
        print(record)
    return "the real result"


def partial_line_then_return(records: list[str]) -> str:
    import subprocess

    for record in records:
        print(record, flush=True)
    # A subprocess leaves a partial line on the shared stdout: the runner's outcome line is
    # glued to it.
    subprocess.run([sys.executable, "-c", "import sys; sys.stdout.write('50% done')"], check=True)
    return "the real result"


def log_records_flushed_at_exit(records: list[str]) -> str:
    import logging
    import logging.handlers

    # A buffering handler: its records reach stdout when logging shuts down at exit, after
    # the runner has written the outcome.
    target = logging.StreamHandler(sys.stdout)
    buffered = logging.handlers.MemoryHandler(capacity=1000, target=target, flushLevel=100)
    logger = logging.getLogger("fnjob-test-records")
    logger.addHandler(buffered)
    logger.setLevel(logging.INFO)
    for record in records:
        logger.info(record)
    return "the real result"


def crash_after_logging(records: list[str]) -> str:
    import ctypes

    for record in records:
        print(record, flush=True)
    ctypes.string_at(0)  # a native crash (SIGSEGV) before any outcome is written
    return "never"


def value_of_an_image_only_type(reading: float) -> object:
    # fnjob_image_only ships with the image (extra_files); the caller does not have it.
    import fnjob_image_only  # type: ignore[import-not-found]

    return fnjob_image_only.Measurement(reading)


def shm_bytes() -> int:
    stats = os.statvfs("/dev/shm")
    return stats.f_blocks * stats.f_frsize


# -- results at real sizes (issue 17) ------------------------------------------------------


def random_bytes(size: int, seed: int = 17) -> bytes:
    """The same ``size`` bytes on both sides (a result to compare byte for byte)."""
    import random

    return random.Random(seed).randbytes(size)


def big_result(size: int, log_bytes: int = 0) -> bytes:
    line = "x" * 1023
    for _ in range(log_bytes // 1024):
        print(line)
    print(f"returning {size} bytes")
    return random_bytes(size)


def big_result_with_stderr_noise(size: int) -> bytes:
    import threading
    import time

    def noise() -> None:
        # Writes to stderr until the process ends, also while the runner prints the
        # outcome, as a chatty library's thread does.
        index = 0
        while True:
            sys.stderr.write(f"noise {index} " + "n" * 200 + "\n")
            sys.stderr.flush()
            index += 1
            time.sleep(0.0005)

    threading.Thread(target=noise, daemon=True).start()
    print("warming up", file=sys.stderr)
    return random_bytes(size)
