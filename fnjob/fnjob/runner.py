"""The program that runs inside the image: call the shipped function, report its outcome.

This file is copied verbatim into every image as ``/fnjob/runner.py`` and started by the
image's entrypoint with the base image's ``python3``. It therefore imports only the standard
library (cloudpickle is imported lazily from ``/fnjob/vendor`` when a pickle needs it) and
keeps to syntax Python 3.7 accepts.

What it reads:

- ``FNJOB_ENTRY`` (env): what to run, one of ``module:<module>:<qualname>`` (import and
  call), ``pickle:<path>`` (unpickle a function and call it) or ``script:<path>`` (run a file
  as ``__main__``; the outcome is ``None``). Relative paths are relative to ``/fnjob/app``.
- The run directory, ``/var/run/fnjob`` (``FNJOB_RUN_DIR`` overrides it), which the
  deployer fills for this run only (a Kubernetes Secret volume, or a private directory
  mounted read-only by the local deployer): ``call``, a pickle of ``(args, kwargs)``, and
  ``key``, the per-run key that signs the outcome. Both are read before the function runs.

Nothing is installed at start: requirements were installed into ``/fnjob/site`` when the
image was built, and the image's ``PYTHONPATH`` already puts it before the base's packages.

The function's own stdout/stderr pass through untouched. After it returns or raises, ONE
line is written to stdout::

    FNJOB-OUTCOME/2 <base64 of a JSON record> <hex HMAC-SHA256 of the text before it>

The record is ``{"ok": true, "value": <base64 pickle>}`` or ``{"ok": false, "type": ...,
"message": ..., "traceback": ..., "exception": <base64 pickle or null>}``. The HMAC uses the
run's key, so the caller accepts only the line this runner wrote: lines the function prints
that look like an outcome are just output. The exit code is 0 on success and 1 when the
function raised.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pickle
import runpy
import sys
import traceback
from typing import Any, TextIO

OUTCOME_PREFIX = "FNJOB-OUTCOME/2 "
APP_DIR = "/fnjob/app"
RUN_DIR = "/var/run/fnjob"
CALL_FILE = "call"
KEY_FILE = "key"
# Written instead of a signature when the run directory has no key (an image started by
# hand): such an outcome is shown, never trusted.
UNSIGNED = "unsigned"
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


def _run_file(name: str) -> bytes | None:
    path = os.path.join(os.environ.get("FNJOB_RUN_DIR", RUN_DIR), name)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _load_call(data: bytes | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not data:
        return (), {}
    args, kwargs = pickle.loads(data)
    return tuple(args), dict(kwargs)


def outcome_line(record: dict[str, Any], key: bytes | None) -> str:
    """The outcome line for ``record``, signed with ``key``."""
    text = OUTCOME_PREFIX + _b64(json.dumps(record).encode("utf-8"))
    if not key:
        return text + " " + UNSIGNED
    return text + " " + hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest()


def _run_entry(entry: str, call: bytes | None) -> Any:
    kind, _, rest = entry.partition(":")
    if kind == "module":
        module_name, _, qualname = rest.partition(":")
        import importlib

        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
        args, kwargs = _load_call(call)
        return target(*args, **kwargs)
    if kind == "pickle":
        with open(_app_path(rest), "rb") as handle:
            function = pickle.load(handle)
        args, kwargs = _load_call(call)
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
    key = None
    try:
        # Read the run's files before any user code runs.
        key = _run_file(KEY_FILE)
        call = _run_file(CALL_FILE)
        value = _run_entry(os.environ.get("FNJOB_ENTRY", ""), call)
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
    tracker.write(outcome_line(record, key) + "\n")
    tracker.flush()
    sys.stdout = tracker._stream
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
