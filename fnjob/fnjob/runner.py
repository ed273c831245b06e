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

The function's output passes through as-is. Inside a Kubernetes pod its stderr is sent to
stdout (fd 2 becomes fd 1): the pod's log interleaves the two streams record by record, so
stderr written while the outcome is printed could otherwise land inside it (a local engine
keeps the two apart, and so does the local deployer). After the function returns or raises,
the outcome is written to stdout as whole lines, each with ONE ``write()`` of at most
``PIPE_BUF`` bytes (which a pipe never interleaves with other writers' bytes)::

    FNJOB-OUTCOME/3 <index>/<count> <base64 piece> <hex HMAC-SHA256 of the text before it>

The pieces, joined in index order and base64-decoded, are a JSON header line then raw bytes:
``{"ok": true}`` and the pickled value, or ``{"ok": false, "type": ..., "message": ...,
"traceback": ..., "exception": <bool>}`` and the pickled exception (or nothing). The HMAC uses
the run's key, so the caller accepts only pieces this runner wrote: lines the function
prints that look like an outcome are just output. The exit code is 0 on success and 1 when
the function raised.

Inside a Kubernetes pod (``KUBERNETES_SERVICE_HOST`` is set in every container) the kubelet
rotates the log at ``containerLogMaxSize`` (10 MiB by default), so a result larger than
``MAX_POD_RESULT_BYTES`` pickled (``FNJOB_MAX_RESULT_BYTES`` overrides it) is not printed:
the outcome is a ``fnjob.ResultTooLarge`` failure naming its size and the limit.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import pickle
import runpy
import sys
import traceback
from collections.abc import Iterator
from typing import Any, TextIO

OUTCOME_PREFIX = "FNJOB-OUTCOME/3 "
# One outcome line, newline included, is at most PIPE_BUF bytes (POSIX: at least 512; 4096
# on Linux): written with one write(), a pipe keeps it whole.
FRAME_BYTES = 4096
# Room for the prefix, "<index>/<count> " (up to 99999999/99999999), the signature and "\n".
_FRAME_OVERHEAD = len(OUTCOME_PREFIX) + 18 + 1 + 64 + 1
FRAME_PIECE_CHARS = (FRAME_BYTES - _FRAME_OVERHEAD) // 4 * 4
# The largest pickled result printed inside a Kubernetes pod: its framed outcome (about
# 4/3 of it) stays under the kubelet's default containerLogMaxSize of 10 MiB, so it spans at
# most two log files. Bigger data belongs on a volume or in a bucket.
MAX_POD_RESULT_BYTES = 6 * 1024 * 1024
RESULT_TOO_LARGE = "fnjob.ResultTooLarge"
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


def outcome_lines(header: dict[str, Any], data: bytes, key: bytes | None) -> Iterator[bytes]:
    """The framed outcome (``header`` and ``data``), each line signed with ``key``."""
    payload = _b64(json.dumps(header).encode("utf-8") + b"\n" + data)
    count = max(1, -(-len(payload) // FRAME_PIECE_CHARS))
    for index in range(count):
        piece = payload[index * FRAME_PIECE_CHARS : (index + 1) * FRAME_PIECE_CHARS]
        text = f"{OUTCOME_PREFIX}{index}/{count} {piece}"
        signature = hmac.digest(key, text.encode("ascii"), "sha256").hex() if key else UNSIGNED
        yield (text + " " + signature + "\n").encode("ascii")


def _max_result_bytes() -> int | None:
    configured = os.environ.get("FNJOB_MAX_RESULT_BYTES")
    if configured:
        return int(configured)
    if _in_kubernetes_pod():
        return MAX_POD_RESULT_BYTES
    return None


def _in_kubernetes_pod() -> bool:
    # The kubelet sets it in every container (with or without service links).
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


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


def _failure(error: BaseException) -> tuple[dict[str, Any], bytes]:
    kind = type(error)
    try:
        pickled = _dumps(error)
    except Exception:
        pickled = b""
    header = {
        "ok": False,
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(error),
        "traceback": "".join(traceback.format_exception(kind, error, error.__traceback__)),
        "exception": bool(pickled),
    }
    return header, pickled


def _outcome(value: Any) -> tuple[dict[str, Any], bytes]:
    try:
        data = _dumps(value)
    except Exception as error:
        return _failure(TypeError(f"the function returned a value that cannot be pickled: {error}"))
    limit = _max_result_bytes()
    if limit is not None and len(data) > limit:
        return {
            "ok": False,
            "type": RESULT_TOO_LARGE,
            "message": f"the result takes {len(data)} bytes pickled",
            "traceback": "",
            "exception": False,
            "result_bytes": len(data),
            "limit": limit,
        }, b""
    return {"ok": True}, data


def _write_all(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def main() -> int:
    if _in_kubernetes_pod():
        # What the function writes to stderr goes to stdout, in order (see the docstring).
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(1, 2)
    tracker = _LastCharTracker(sys.stdout)
    sys.stdout = tracker
    key = None
    try:
        # Read the run's files before any user code runs.
        key = _run_file(KEY_FILE)
        call = _run_file(CALL_FILE)
        header, data = _outcome(_run_entry(os.environ.get("FNJOB_ENTRY", ""), call))
    except BaseException as error:  # report everything, even SystemExit, to the caller
        header, data = _failure(error)
    sys.stderr.flush()
    if not tracker.at_line_start:
        tracker.write("\n")
    tracker.flush()
    sys.stdout = tracker._stream
    for line in outcome_lines(header, data, key):
        _write_all(1, line)
    return 0 if header["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
