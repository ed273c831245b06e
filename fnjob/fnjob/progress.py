"""Progress events builders emit; the CLI renders them (rich), libraries never print."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["STAGES", "ProgressCallback", "ProgressEvent"]

# resolve-base: read the base manifest/config; check-python: find the base's Python
# (bytes_done: base layer bytes downloaded so far for it, of bytes_total in all layers);
# install-requirements: pip installs the requirements for the base (detail: what);
# build-layer: make the code layer/config/manifest; mount: cross-repository mount of a base
# layer and skip: blob already in the target repository (both move no bytes: bytes_done 0,
# bytes_total the blob's size); upload: bytes_done is what the registry has acknowledged of
# the blob (it reaches bytes_total only once the registry holds every byte; a retried chunk
# is not counted twice); manifest: manifest pushed; done: the digest-pinned reference is known.
STAGES = (
    "resolve-base",
    "check-python",
    "install-requirements",
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
