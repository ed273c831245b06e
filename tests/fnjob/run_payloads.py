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
