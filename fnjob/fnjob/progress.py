"""Progress events builders emit; the CLI renders them (rich), libraries never print."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["STAGES", "ProgressCallback", "ProgressEvent"]

# resolve-base: read the base manifest/config; check-python: find the base's Python;
# build-layer: make the code layer/config/manifest; mount: cross-repository mount of a base
# layer; upload: blob bytes sent; skip: blob already in the target repository;
# manifest: manifest pushed; done: the digest-pinned reference is known.
STAGES = (
    "resolve-base",
    "check-python",
    "build-layer",
    "mount",
    "upload",
    "skip",
    "manifest",
    "done",
)


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a build: ``stage`` (one of ``STAGES``), what it is about (``detail``, e.g.
    a blob digest or a reference) and byte counts when the step moves bytes."""

    stage: str
    detail: str = ""
    bytes_done: int = 0
    bytes_total: int | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        if self.bytes_done < 0:
            raise ValueError(f"bytes_done: {self.bytes_done} must be >= 0")


ProgressCallback = Callable[[ProgressEvent], None]
