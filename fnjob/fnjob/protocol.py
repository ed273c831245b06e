"""The caller's side of the runtime protocol: encode a call, read the outcome from the logs.

The image's runner (``fnjob/runner.py``) prints the function's output as-is and then one line
starting with ``OUTCOME_PREFIX``. Deployers feed the log lines they collected to
``parse_outcome`` and call ``Outcome.unwrap()`` to get the return value or the remote
exception. Call arguments travel in the ``FNJOB_CALL`` environment variable, never in the
image, so the same code always gives the same image digest.
"""

from __future__ import annotations

import base64
import binascii
import json
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle

from fnjob.errors import FnJobError
from fnjob.runner import OUTCOME_PREFIX, PICKLE_PROTOCOL

__all__ = [
    "CALL_ENV_VAR",
    "MAX_CALL_BYTES",
    "OUTCOME_PREFIX",
    "CallNotEncodable",
    "Outcome",
    "RemoteError",
    "ResultMissing",
    "encode_call",
    "is_protocol_line",
    "parse_outcome",
]

CALL_ENV_VAR = "FNJOB_CALL"
# Linux refuses a single environment string longer than 128 KiB (MAX_ARG_STRLEN); stay below.
MAX_CALL_BYTES = 96 * 1024


class CallNotEncodable(FnJobError):
    """The call's arguments cannot be pickled, or are too large for an environment variable."""


class ResultMissing(FnJobError):
    """The logs hold no outcome line: the container was killed, ran out of memory, or the
    image was not built by fnjob."""

    def __init__(self, message: str, last_lines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.last_lines = last_lines


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
    """What the remote function did: returned ``value`` (``ok``) or raised.

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

        The exception is re-raised with its own type when it can be unpickled here (its class
        importable locally), with the remote traceback as ``__cause__`` and as a note;
        otherwise a ``RemoteError`` naming the remote type is raised.
        """
        if self.ok:
            assert self.pickled_value is not None
            return pickle.loads(self.pickled_value)
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
        if not isinstance(error, BaseException):
            return None
        # SystemExit/KeyboardInterrupt from the container must not stop the caller's process.
        if not isinstance(error, Exception):
            return None
        return error


def encode_call(args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None) -> str:
    """Encode call arguments for the ``FNJOB_CALL`` environment variable.

    Raises ``CallNotEncodable`` when an argument cannot be pickled or the encoded call is
    larger than ``MAX_CALL_BYTES`` (pass large data through storage instead).
    """
    call = (tuple(args), dict(kwargs or {}))
    try:
        # cloudpickle writes plain pickle for importable objects and handles lambdas too;
        # the runner has a vendored cloudpickle to read the latter.
        data = cloudpickle.dumps(call, protocol=PICKLE_PROTOCOL)
    except Exception as error:
        raise CallNotEncodable(f"the call's arguments cannot be pickled: {error}") from error
    encoded = base64.b64encode(data).decode("ascii")
    if len(encoded) > MAX_CALL_BYTES:
        raise CallNotEncodable(
            f"the call's arguments take {len(encoded)} bytes encoded; at most {MAX_CALL_BYTES} "
            "fit in an environment variable; pass large data through storage (e.g. S3 paths)"
        )
    return encoded


def is_protocol_line(line: str) -> bool:
    """Whether a log line is the runner's outcome line (deployers hide it from the user)."""
    return line.startswith(OUTCOME_PREFIX)


def _decode_b64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} is not a base64 string")
    return base64.b64decode(value, validate=True)


def _outcome_from_line(line: str) -> Outcome:
    payload = line.rstrip("\r\n")[len(OUTCOME_PREFIX) :]
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


def parse_outcome(lines: Iterable[str]) -> Outcome:
    """Find the outcome in a container's log lines (the last outcome line wins).

    Raises ``ResultMissing`` when no line carries an outcome, or the outcome line is damaged
    (e.g. cut off by a log size limit); the error keeps the last few log lines.
    """
    last_lines: list[str] = []
    outcome_line: str | None = None
    for line in lines:
        if is_protocol_line(line):
            outcome_line = line
        else:
            last_lines.append(line.rstrip("\r\n"))
            del last_lines[:-20]
    if outcome_line is None:
        raise ResultMissing(
            "the container ended without reporting an outcome "
            "(killed, out of memory, or not an fnjob image)",
            tuple(last_lines),
        )
    try:
        return _outcome_from_line(outcome_line)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ResultMissing(f"the outcome line is damaged: {error}", tuple(last_lines)) from error
