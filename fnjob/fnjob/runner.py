"""The program that runs inside the image: call the shipped function, report its outcome.

This file is copied verbatim into every image as ``/fnjob/runner.py`` and started by the
image's entrypoint with the base image's ``python3``. It therefore imports only the standard
library (cloudpickle is imported lazily from ``/fnjob/vendor`` when a pickle needs it) and
keeps to syntax Python 3.7 accepts.

Environment it reads:

- ``FNJOB_ENTRY``: what to run, one of ``module:<module>:<qualname>`` (import and call),
  ``pickle:<path>`` (unpickle a function and call it) or ``script:<path>`` (run a file as
  ``__main__``; the outcome is ``None``). Relative paths are relative to ``/fnjob/app``.
- ``FNJOB_CALL``: optional, base64 of a pickle of ``(args, kwargs)``.

The function's own stdout/stderr pass through untouched. After it returns or raises, ONE
line starting with ``OUTCOME_PREFIX`` is written to stdout: base64 of a JSON object with
either ``{"ok": true, "value": <base64 pickle>}`` or ``{"ok": false, "type": ..., "message":
..., "traceback": ..., "exception": <base64 pickle or null>}``. The exit code is 0 on success
and 1 when the function raised.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import runpy
import sys
import traceback
from typing import Any, TextIO

OUTCOME_PREFIX = "FNJOB-OUTCOME/1 "
APP_DIR = "/fnjob/app"
# Protocol 4 is understood by every Python >= 3.4, so both sides can read it.
PICKLE_PROTOCOL = 4


class _LastCharTracker:
    """Wraps a text stream and remembers whether its output ended with a newline."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _dumps(value: object) -> bytes:
    try:
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except Exception:
        import cloudpickle  # type: ignore[import-not-found,unused-ignore]

        data: bytes = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
        return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _app_path(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(APP_DIR, path)


def _load_call() -> tuple[tuple[Any, ...], dict[str, Any]]:
    encoded = os.environ.get("FNJOB_CALL", "")
    if not encoded:
        return (), {}
    args, kwargs = pickle.loads(base64.b64decode(encoded))
    return tuple(args), dict(kwargs)


def _run_entry(entry: str) -> Any:
    kind, _, rest = entry.partition(":")
    if kind == "module":
        module_name, _, qualname = rest.partition(":")
        import importlib

        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
        args, kwargs = _load_call()
        return target(*args, **kwargs)
    if kind == "pickle":
        with open(_app_path(rest), "rb") as handle:
            function = pickle.load(handle)
        args, kwargs = _load_call()
        return function(*args, **kwargs)
    if kind == "script":
        runpy.run_path(_app_path(rest), run_name="__main__")
        return None
    raise ValueError(f"FNJOB_ENTRY {entry!r} is not module:..., pickle:... or script:...")


def _failure_record(error: BaseException) -> dict[str, Any]:
    kind = type(error)
    try:
        pickled = _b64(_dumps(error))
    except Exception:
        pickled = None
    return {
        "ok": False,
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(error),
        "traceback": "".join(traceback.format_exception(kind, error, error.__traceback__)),
        "exception": pickled,
    }


def main() -> int:
    tracker = _LastCharTracker(sys.stdout)
    sys.stdout = tracker
    exit_code = 0
    try:
        value = _run_entry(os.environ.get("FNJOB_ENTRY", ""))
        try:
            record: dict[str, Any] = {"ok": True, "value": _b64(_dumps(value))}
        except Exception as error:
            record = _failure_record(
                TypeError(f"the function returned a value that cannot be pickled: {error}")
            )
            exit_code = 1
    except BaseException as error:  # report everything, even SystemExit, to the caller
        record = _failure_record(error)
        exit_code = 1
    sys.stderr.flush()
    if not tracker.at_line_start:
        tracker.write("\n")
    payload = _b64(json.dumps(record).encode("utf-8"))
    tracker.write(OUTCOME_PREFIX + payload + "\n")
    tracker.flush()
    sys.stdout = tracker._stream
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
