"""Helpers for the build tests: import the sample code, run an image with podman."""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fnjob.progress import ProgressEvent
from fnjob.run.protocol import RUN_DIR, OutcomeReader, encode_call, new_run_key
from tests.fnjob.conftest import PodmanConfig
from tests.fnjob.run_functions import write_run_dir

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_code"


def import_sample(name: str) -> ModuleType:
    """Import a module from sample_code/ as a top-level module (as a user's script would)."""
    if str(SAMPLE_DIR) not in sys.path:
        sys.path.insert(0, str(SAMPLE_DIR))
    return importlib.import_module(name)


@dataclass(frozen=True)
class ContainerRun:
    exit_code: int
    lines: list[str]
    stderr: str
    key: bytes

    @property
    def user_lines(self) -> list[str]:
        reader = OutcomeReader(self.key)
        return [shown for line in self.lines if (shown := reader.feed(line)) is not None]

    def unwrap(self) -> Any:
        reader = OutcomeReader(self.key)
        for line in self.lines:
            reader.feed(line)
        return reader.result().unwrap()


def run_image(
    podman: PodmanConfig,
    ref: str,
    *args: Any,
    podman_args: Sequence[str] = (),
    **kwargs: Any,
) -> ContainerRun:
    """``podman run`` the image with the run directory mounted, as a deployer would;
    ``podman_args`` go before the image (e.g. ``--network none``)."""
    key = new_run_key()
    with tempfile.TemporaryDirectory(prefix="fnjob-test-run-") as parent:
        run_dir = write_run_dir(Path(parent), encode_call(args, kwargs), key)
        completed = podman.run(
            *("run", "--rm", "--tls-verify=false", "-v", f"{run_dir}:{RUN_DIR}:ro"),
            *podman_args,
            ref,
        )
    return ContainerRun(completed.returncode, completed.stdout.splitlines(), completed.stderr, key)


class EventLog:
    """A progress callback that records events."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def stages(self, stage: str) -> list[ProgressEvent]:
        return [event for event in self.events if event.stage == stage]
