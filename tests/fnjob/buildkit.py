"""Helpers for the build tests: import the sample code, run an image with podman."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fnjob.progress import ProgressEvent
from fnjob.protocol import encode_call, is_protocol_line, parse_outcome
from tests.fnjob.conftest import PodmanConfig

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

    @property
    def user_lines(self) -> list[str]:
        return [line for line in self.lines if not is_protocol_line(line)]

    def unwrap(self) -> Any:
        return parse_outcome(self.lines).unwrap()


def run_image(podman: PodmanConfig, ref: str, *args: Any, **kwargs: Any) -> ContainerRun:
    """``podman run`` the image with FNJOB_CALL set, as a deployer would."""
    completed = podman.run(
        "run", "--rm", "--tls-verify=false", "-e", f"FNJOB_CALL={encode_call(args, kwargs)}", ref
    )
    return ContainerRun(completed.returncode, completed.stdout.splitlines(), completed.stderr)


class EventLog:
    """A progress callback that records events."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def stages(self, stage: str) -> list[ProgressEvent]:
        return [event for event in self.events if event.stage == stage]
