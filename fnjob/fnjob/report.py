"""How progress is shown: the one reporter, rich, for the CLI and for notebooks.

- On a terminal: a live progress bar for the push and a spinner while the function runs.
- In a Jupyter notebook: the same, as a notebook widget (rich's Jupyter support, through
  ipywidgets); without ipywidgets, plain lines. ``Job`` uses it there by default
  (``notebook_reporter``); ``Job(progress=False)`` or ``FNJOB_PROGRESS=off`` turn it off.
- Anywhere else (CI logs, pipes): plain lines, never wrapped or cut: one per build stage,
  and upload progress at most every ``PLAIN_UPLOAD_INTERVAL`` seconds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.status import Status

from fnjob.progress import ProgressEvent

__all__ = [
    "PLAIN_UPLOAD_INTERVAL",
    "PROGRESS_ENV",
    "RichReporter",
    "in_notebook",
    "notebook_reporter",
    "plain_console",
]

# Seconds between two upload lines when progress is plain text.
PLAIN_UPLOAD_INTERVAL = 5.0
# "off" (or "0", "false", "no") turns the notebook's default progress off.
PROGRESS_ENV = "FNJOB_PROGRESS"
_BUILD_STAGES = ("resolve-base", "check-python", "install-requirements", "build-layer")


def plain_console(*, stderr: bool = True) -> Console:
    """A console for stderr (or stdout) whose lines are never wrapped when it is not a
    terminal (a pipe, a CI log): a reference or an error stays on one line for grep."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.soft_wrap = True
    return console


def in_notebook() -> bool:
    """True inside a Jupyter kernel (the ``ipykernel`` shell is the one running)."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get_ipython = getattr(shell, "get_ipython", None)
    running = get_ipython() if get_ipython is not None else None
    return type(running).__name__ == "ZMQInteractiveShell"


def progress_switched_off() -> bool:
    return os.environ.get(PROGRESS_ENV, "").strip().lower() in ("off", "0", "false", "no")


def notebook_reporter() -> RichReporter | None:
    """The default reporter in a notebook (None elsewhere, or when switched off)."""
    if not in_notebook() or progress_switched_off():
        return None
    return RichReporter(Console(), sys.stdout, sys.stderr)


class RichReporter:
    """Build/push progress and run status on ``console``; the function's output lines as it
    wrote them: stdout lines to ``out``, stderr lines to ``err``.

    On a terminal (or in a notebook with ipywidgets) the push is a live progress bar;
    otherwise each step is one plain line that is never wrapped or cut, so references stay
    whole for logs and scripts. Pushed bytes are the ones the registry acknowledged; mounted
    and already-present blobs are counted apart. When both stdout and stderr are terminals, a
    spinner shows the run's state and the log lines are printed above it (through the same
    console, so they do not garble it).
    """

    def __init__(
        self,
        console: Console,
        out: TextIO,
        err: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.out = out
        self.err = err
        self._clock = clock
        widgets = importlib.util.find_spec("ipywidgets") is not None
        self.live = console.is_terminal or (console.is_jupyter and widgets)
        if not self.live:
            console.soft_wrap = True
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._build: TaskID | None = None
        self._push: TaskID | None = None
        self._uploads: dict[str, tuple[int, int]] = {}
        self._mounted: set[str] = set()
        self._present: set[str] = set()
        self._started = clock()
        self._spinner: Status | None = None
        self._stages_shown: set[str] = set()
        self._next_upload_line = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """While the function runs: a spinner with the latest status, on terminals only."""
        if not (self.console.is_terminal and self.out.isatty()):
            yield
            return
        with self.console.status("run: starting", spinner="dots") as spinner:
            self._spinner = spinner
            try:
                yield
            finally:
                self._spinner = None

    def log(self, line: str) -> None:
        """One line the function wrote to stdout."""
        if self._spinner is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=self.out, flush=True)

    def log_stderr(self, line: str) -> None:
        """One line the function wrote to stderr."""
        if self._spinner is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=self.err, flush=True)

    def _line(self, text: str) -> None:
        if self.live:
            self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> RichReporter:
        if self.live:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self._progress.stop()

    def _summary(self) -> str:
        done = sum(d for d, _t in self._uploads.values())
        return (
            f"push: {len(self._uploads)} uploaded ({done / 1e6:.1f} MB acknowledged), "
            f"{len(self._mounted)} mounted, {len(self._present)} already there"
        )

    def _build_label(self, event: ProgressEvent) -> str:
        if event.stage == "check-python" and event.bytes_total:
            return (
                f"build: read {event.bytes_done / 1e6:.1f} of {event.bytes_total / 1e6:.1f} "
                "MB of base layers to find its Python"
            )
        return {
            "resolve-base": f"build: reading base image {event.detail}",
            "check-python": "build: finding the base image's Python",
            "install-requirements": f"build: pip install {event.detail}",
            "build-layer": f"build: code layer for {event.detail}",
        }[event.stage]

    def progress(self, event: ProgressEvent) -> None:
        stage = event.stage
        if stage in _BUILD_STAGES:
            label = self._build_label(event)
            if not self.live:
                # One line per stage; the bytes read for the Python as the upload's pace.
                first = stage not in self._stages_shown
                self._stages_shown.add(stage)
                if first:
                    self._next_upload_line = self._clock() + PLAIN_UPLOAD_INTERVAL
                    self._line(label)
                elif stage == "check-python" and self._upload_line_due():
                    self._line(label)
            elif self._build is None:
                self._build = self._progress.add_task(label, total=None)
            else:
                self._progress.update(self._build, description=label)
            return
        if stage == "mount":
            self._mounted.add(event.detail)
        elif stage == "skip":
            self._present.add(event.detail)
        elif stage == "upload":
            self._uploads[event.detail] = (event.bytes_done, event.bytes_total or 0)
        if not self.live:
            self._plain_push_line(event)
            return
        if self._build is not None:
            self._progress.update(self._build, description="build: done", total=1, completed=1)
        done = sum(d for d, _t in self._uploads.values())
        total = sum(t for _d, t in self._uploads.values())
        if self._push is None:
            self._push = self._progress.add_task(self._summary(), total=total or None)
        self._progress.update(
            self._push, description=self._summary(), completed=done, total=total or None
        )
        if stage == "done":
            self._line(f"pushed {event.detail}")

    def _upload_line_due(self) -> bool:
        now = self._clock()
        if now < self._next_upload_line:
            return False
        self._next_upload_line = now + PLAIN_UPLOAD_INTERVAL
        return True

    def _plain_push_line(self, event: ProgressEvent) -> None:
        stage = event.stage
        if stage == "done":
            self._line(self._summary())
            self._line(f"pushed {event.detail}")
            return
        if stage == "manifest":
            self._line("push: manifest")
            return
        first = "push" not in self._stages_shown
        self._stages_shown.add("push")
        if first:
            self._upload_line_due()  # the next upload line comes an interval later
            self._line("push: sending blobs")
        elif stage == "upload" and self._upload_line_due():
            done = sum(d for d, _t in self._uploads.values())
            total = sum(t for _d, t in self._uploads.values())
            self._line(f"push: {done / 1e6:.1f} of {total / 1e6:.1f} MB acknowledged")

    def status(self, text: str) -> None:
        elapsed = self._clock() - self._started
        if self._spinner is not None:
            self.console.print(f"[dim]{elapsed:6.1f}s[/dim] run: {escape(text)}", highlight=False)
            self._spinner.update(f"run: {escape(text)}")
        else:
            self._line(f"{elapsed:6.1f}s run: {text}")
