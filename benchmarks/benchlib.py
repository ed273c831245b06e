"""What the benchmarks share: a scratch registry holding the test base (and a private podman
beside it), a timer, and the figure lines they print.

Each ``bench_*.py`` runs as a script, so this folder is on ``sys.path`` and ``import benchlib``
works; importing it puts the repository and fnjob on ``sys.path`` too, as the test suite has
them. The base is the cached Debian Python image of the test fixtures (built with mmdebstrap on
first use), so the benchmarks measure the same image the tests run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "fnjob"), str(REPO_ROOT)]

from tests.fnjob.conftest import (  # noqa: E402
    BASE_REPOSITORY,
    PodmanConfig,
    RegistryServer,
    cached_base_layout,
    copy_base_into,
    make_podman_config,
    release_podman_storage,
    running_registry,
)

__all__ = [
    "BASE_REPOSITORY",
    "REPO_ROOT",
    "Scratch",
    "print_summary",
    "scratch_registry",
    "timed",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Scratch:
    """A benchmark's temporary folder, its registry on 127.0.0.1 and the base pushed there."""

    workdir: Path
    registry: RegistryServer
    # The test base in ``registry``: ``<host>/<BASE_REPOSITORY>:<tag>``.
    base: str
    # A private podman configuration trusting ``registry`` (``podman=True`` only).
    podman: PodmanConfig | None


@contextmanager
def scratch_registry(prefix: str, *, podman: bool = False) -> Iterator[Scratch]:
    """A temporary folder, a ``docker-registry`` holding the test base and, with ``podman``,
    a private podman storage; all removed (the registry stopped by its pid) on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as temporary:
        workdir = Path(temporary)
        with running_registry(workdir / "registry") as registry:
            base = copy_base_into(cached_base_layout(), registry.host, BASE_REPOSITORY)
            config = make_podman_config(workdir / "podman", [registry.host]) if podman else None
            try:
                yield Scratch(workdir, registry, base, config)
            finally:
                if config is not None:
                    release_podman_storage(config)


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``action`` took (wall clock), and its value."""
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def print_summary(label: str, seconds: list[float], *, width: int = 46) -> None:
    """One figure line: median, min and max of ``seconds``, in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    print(
        f"{label:<{width}} median {statistics.median(ms):7.0f} ms"
        f"   min {ms[0]:7.0f} ms   max {ms[-1]:7.0f} ms   (n={len(ms)})"
    )
