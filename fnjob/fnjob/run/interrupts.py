"""Clean up what a run started when the process is told to stop, not only on Ctrl-C.

Ctrl-C raises ``KeyboardInterrupt``, so ``finally`` blocks delete the Job. SIGTERM (a
notebook kernel restart, a CI job cancelled, ``kill``) and SIGHUP (the terminal closed)
kill the process outright by default, and interpreter exit ends daemon threads without
running their ``finally`` blocks. Two tools close those gaps:

- ``signals_raise()``: while a run is in progress (main thread only), SIGTERM and SIGHUP
  raise ``Terminated`` instead; once the ``finally`` blocks ran, the previous handler gets
  the signal (by default the process then dies of it, as it would have).
- ``on_exit(callback)``: ``callback`` runs at interpreter exit unless the run finished.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["Terminated", "on_exit", "signals_raise"]

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a run was in progress; what it started is cleaned up.

    A ``BaseException``, like ``KeyboardInterrupt``: ``except Exception`` does not stop it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into ``Terminated`` inside the block (see the module docstring).

    Outside the main thread (where Python cannot set handlers) and for signals set to be
    ignored (``nohup``), nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    for number in HANDLED_SIGNALS:
        handler = signal.getsignal(number)
        if handler is signal.SIG_IGN or handler is None:
            continue
        previous[number] = handler
        signal.signal(number, _raise_terminated)

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)
        previous.clear()

    try:
        yield
    except Terminated as stopped:
        restore()
        # Clean-up is done: let the signal do what it would have done without us.
        signal.raise_signal(stopped.signum)
        raise
    finally:
        restore()


@contextlib.contextmanager
def on_exit(callback: Callable[[], None]) -> Iterator[None]:
    """Run ``callback`` at interpreter exit if the block is still running then (e.g. the run
    is in a daemon thread and the main thread ends)."""

    def at_exit() -> None:
        with contextlib.suppress(Exception):
            callback()

    atexit.register(at_exit)
    try:
        yield
    finally:
        atexit.unregister(at_exit)
