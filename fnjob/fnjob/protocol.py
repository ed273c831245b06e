"""The caller's side of the runtime protocol: encode a call, authenticate and read the outcome.

Per run, the caller makes a fresh random key and hands the runner (``fnjob/runner.py``)
two files, ``call`` (a pickle of the arguments) and ``key``, through a channel only that
run reads (a Secret owned by the Job, or a private directory for the local deployer). The
runner prints the function's output as-is and then one outcome line signed with the key
(HMAC-SHA256). ``OutcomeReader`` reads a container's output line by line: the line carrying
a valid signature is the outcome, wherever it sits in the line (a partial line may be glued
before it) and whatever follows it (output written at exit); every other line, including
ones that merely look like an outcome, is the function's output.

Results are pickles, and unpickling runs code: ``Outcome.unwrap`` only ever unpickles bytes
whose signature was checked with this run's key.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import json
import pickle
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle

from fnjob.errors import FnJobError
from fnjob.runner import CALL_FILE, KEY_FILE, OUTCOME_PREFIX, PICKLE_PROTOCOL, RUN_DIR

__all__ = [
    "CALL_FILE",
    "KEY_FILE",
    "MAX_CALL_BYTES",
    "OUTCOME_PREFIX",
    "RUN_DIR",
    "CallNotEncodable",
    "Outcome",
    "OutcomeReader",
    "RemoteError",
    "ResultMissing",
    "ResultNotLoadable",
    "encode_call",
    "new_run_id",
    "new_run_key",
    "parse_outcome",
]

# The call travels in a Secret (at most 1 MiB of data); leave room for the key and headers.
MAX_CALL_BYTES = 768 * 1024
KEY_BYTES = 32
LAST_LINES = 20
# Anything that starts like an outcome line, signed or not (for counting forgeries).
_OUTCOME_MARK = "FNJOB-OUTCOME/"
_SIGNED_OUTCOME = re.compile(re.escape(OUTCOME_PREFIX) + r"([A-Za-z0-9+/]*={0,2}) ([0-9a-f]{64})")


class CallNotEncodable(FnJobError):
    """The call's arguments cannot be pickled, or are too large to travel with the run."""


class ResultMissing(FnJobError):
    """The output holds no outcome signed with this run's key: the container was killed,
    crashed, ran out of memory, or the image was not built by this fnjob."""

    def __init__(self, message: str, last_lines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.last_lines = last_lines


class ResultNotLoadable(FnJobError):
    """The function returned, but its value cannot be rebuilt here: typically its class
    lives in a library the image has and this Python lacks (``missing_module``).

    ``pickled_value`` holds the authenticated pickle, to load later (e.g. after installing
    the module) with ``pickle.loads``.
    """

    def __init__(self, message: str, *, missing_module: str | None, pickled_value: bytes) -> None:
        super().__init__(message)
        self.missing_module = missing_module
        self.pickled_value = pickled_value


class RemoteError(FnJobError):
    """The remote function raised an exception that cannot be rebuilt here.

    ``type_name`` is the remote exception's ``module.QualName``, ``remote_traceback`` the
    traceback text printed in the container.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = remote_traceback


class _RemoteTraceback(Exception):
    """Carries the remote traceback text as the ``__cause__`` of a re-raised exception."""

    def __str__(self) -> str:
        return f"\n\nRemote traceback:\n{self.args[0]}"


@dataclass(frozen=True)
class Outcome:
    """What the remote function did (authenticated): returned ``value`` (``ok``) or raised.

    For a failure, ``error_type`` is ``module.QualName``, ``error_message`` its ``str()``,
    ``remote_traceback`` the formatted traceback and ``pickled_error`` the pickled exception
    when the container could pickle it.
    """

    ok: bool
    pickled_value: bytes | None = None
    error_type: str = ""
    error_message: str = ""
    remote_traceback: str = ""
    pickled_error: bytes | None = None

    def unwrap(self) -> Any:
        """Return the remote return value, or raise the remote exception.

        Raises ``ResultNotLoadable`` (naming the missing module, with the raw pickle) when
        the value's type cannot be imported here. The exception is re-raised with its own
        type when it can be unpickled here, with the remote traceback as ``__cause__`` and
        as a note; otherwise a ``RemoteError`` naming the remote type is raised.
        """
        if self.ok:
            assert self.pickled_value is not None
            return _load_value(self.pickled_value)
        error = self._rebuild_error()
        if error is None:
            raise RemoteError(self.error_type, self.error_message, self.remote_traceback)
        error.add_note(f"Remote traceback:\n{self.remote_traceback}")
        raise error from _RemoteTraceback(self.remote_traceback)

    def _rebuild_error(self) -> BaseException | None:
        if self.pickled_error is None:
            return None
        try:
            error = pickle.loads(self.pickled_error)
        except Exception:
            return None
        # SystemExit/KeyboardInterrupt from the container must not stop the caller's process.
        if not isinstance(error, Exception):
            return None
        return error


_MODULE_IN_MESSAGE = re.compile(r"<module '([^']+)'")


def _load_value(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except ModuleNotFoundError as error:
        module = error.name
        reason = f"module {module!r} is not installed here"
    except (ImportError, AttributeError) as error:
        # A module that exists here but lacks the class: another version than the image's.
        found = _MODULE_IN_MESSAGE.search(str(error))
        module = found.group(1) if found else None
        reason = f"{error} (the module differs from the image's)"
    except Exception as error:
        module = None
        reason = f"{type(error).__name__}: {error}"
    raise ResultNotLoadable(
        f"the function returned a value that cannot be rebuilt here: {reason}; install the "
        "same library version as in the image, or return plain types (the raw pickle is in "
        "this error's pickled_value)",
        missing_module=module,
        pickled_value=data,
    )


def new_run_id() -> str:
    """A fresh id for one run (labels, names)."""
    return uuid.uuid4().hex[:12]


def new_run_key() -> bytes:
    """A fresh random key that signs one run's outcome."""
    return secrets.token_bytes(KEY_BYTES)


def encode_call(args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None) -> bytes:
    """The ``call`` file for the runner: a pickle of ``(args, kwargs)``.

    Raises ``CallNotEncodable`` when an argument cannot be pickled or the call is larger than
    ``MAX_CALL_BYTES`` (pass large data through storage instead).
    """
    call = (tuple(args), dict(kwargs or {}))
    try:
        # cloudpickle writes plain pickle for importable objects and handles lambdas too;
        # the runner has a vendored cloudpickle to read the latter.
        data: bytes = cloudpickle.dumps(call, protocol=PICKLE_PROTOCOL)
    except Exception as error:
        raise CallNotEncodable(f"the call's arguments cannot be pickled: {error}") from error
    if len(data) > MAX_CALL_BYTES:
        raise CallNotEncodable(
            f"the call's arguments take {len(data)} bytes pickled; at most {MAX_CALL_BYTES} "
            "travel with a run; pass large data through storage (e.g. S3 paths)"
        )
    return data


def _decode_b64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} is not a base64 string")
    return base64.b64decode(value, validate=True)


def _outcome_from_payload(payload: str) -> Outcome:
    record = json.loads(base64.b64decode(payload, validate=True))
    if not isinstance(record, dict):
        raise ValueError("the outcome record is not a JSON object")
    if record.get("ok") is True:
        return Outcome(ok=True, pickled_value=_decode_b64(record.get("value"), "value"))
    pickled_error = record.get("exception")
    return Outcome(
        ok=False,
        error_type=str(record.get("type", "")),
        error_message=str(record.get("message", "")),
        remote_traceback=str(record.get("traceback", "")),
        pickled_error=None if pickled_error is None else _decode_b64(pickled_error, "exception"),
    )


class OutcomeReader:
    """Reads one run's output, line by line, and keeps the outcome signed with ``key``.

    ``feed(line)`` returns the text to show the user: the line itself, the line without the
    outcome glued into it, or None when the line was only the outcome.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.outcome: Outcome | None = None
        self.unsigned_lines = 0
        self.last_lines: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
        self._damaged: str | None = None

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if _OUTCOME_MARK not in line:
            self.last_lines.append(line)
            return line
        for match in _SIGNED_OUTCOME.finditer(line):
            if self._signed(match):
                self._accept(match.group(1))
                rest = line[: match.start()] + line[match.end() :]
                if rest:
                    self.last_lines.append(rest)
                return rest or None
        self.unsigned_lines += 1
        self.last_lines.append(line)
        return line

    def _signed(self, match: re.Match[str]) -> bool:
        signed_text = OUTCOME_PREFIX + match.group(1)
        expected = hmac.new(self._key, signed_text.encode("ascii"), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, match.group(2))

    def _accept(self, payload: str) -> None:
        try:
            self.outcome = _outcome_from_payload(payload)
        except (ValueError, binascii.Error, UnicodeDecodeError) as error:
            # Signed but unreadable: a runner bug, never someone else's line.
            self._damaged = str(error)

    def result(self) -> Outcome:
        """The authenticated outcome; ``ResultMissing`` (with the last lines) when none."""
        if self.outcome is not None:
            return self.outcome
        last = tuple(self.last_lines)
        if self._damaged is not None:
            raise ResultMissing(f"the outcome line is damaged: {self._damaged}", last)
        message = (
            "the container ended without reporting an outcome (killed, crashed, out of "
            "memory, or not an image built by this fnjob)"
        )
        if self.unsigned_lines:
            message += (
                f"; {self.unsigned_lines} line(s) of its output looked like an outcome but were "
                "not signed with this run's key, so they were treated as output"
            )
        raise ResultMissing(message, last)


def parse_outcome(lines: Iterable[str], key: bytes) -> Outcome:
    """The outcome signed with ``key`` among a run's output lines (``ResultMissing`` if none)."""
    reader = OutcomeReader(key)
    for line in lines:
        reader.feed(line)
    return reader.result()
