"""The caller's side of the runtime protocol: encode a call, authenticate and read the outcome.

Per run, the caller makes a fresh random key and hands the runner (``fnjob/runner.py``)
two files, ``call`` (a pickle of the arguments) and ``key``, through a channel only that
run reads (a Secret owned by the Job, or a private directory for the local deployer). The
runner prints the function's output as-is and then the outcome, framed in whole lines of at
most 4 KiB, each signed with the key (HMAC-SHA256; the format is in ``fnjob/runner.py``).
``OutcomeReader`` reads a container's output line by line: a line carrying a validly signed
piece of the outcome is not output, wherever the piece sits in the line (a partial line may
be glued before it); every other line, including ones that merely look like an outcome, is
the function's output. Reading costs time linear in the output's size.

Results are pickles, and unpickling runs code: ``Outcome.unwrap`` only ever unpickles bytes
whose signature was checked with this run's key.
"""

from __future__ import annotations

import base64
import binascii
import collections
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
from fnjob.run.runner import (
    CALL_FILE,
    KEY_FILE,
    MAX_POD_RESULT_BYTES,
    OUTCOME_PREFIX,
    PICKLE_PROTOCOL,
    RENDEZVOUS_TIMEOUT_TYPE,
    RESULT_TOO_LARGE,
    RUN_DIR,
)

__all__ = [
    "CALL_FILE",
    "KEY_FILE",
    "MAX_CALL_BYTES",
    "MAX_POD_RESULT_BYTES",
    "OUTCOME_PREFIX",
    "RUN_DIR",
    "CallNotEncodable",
    "Outcome",
    "OutcomeReader",
    "RankFailed",
    "RemoteError",
    "RendezvousTimeout",
    "ResultMissing",
    "ResultNotLoadable",
    "ResultTooLarge",
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


class CallNotEncodable(FnJobError):
    """The call's arguments cannot be pickled, or are too large to travel with the run."""


class ResultMissing(FnJobError):
    """The output holds no outcome signed with this run's key: the container was killed,
    crashed, ran out of memory, or the image was not built by this fnjob."""

    def __init__(self, message: str, last_lines: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.last_lines = last_lines


class ResultTooLarge(FnJobError):
    """The function returned a value too large to come back through the container's log.

    ``result_bytes`` is its pickled size, ``limit`` the most a run returns that way.
    """

    def __init__(self, *, result_bytes: int, limit: int) -> None:
        super().__init__(
            f"the function returned {result_bytes} bytes (pickled); at most {limit} bytes "
            "come back through the container's log, which the kubelet rotates at "
            "containerLogMaxSize (10 MiB by default). Write large data to a path on your "
            "profile's volume (a ClaimMount, e.g. the notebook's workspace) or to a bucket, "
            "and return the path"
        )
        self.result_bytes = result_bytes
        self.limit = limit


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


class RankFailed(FnJobError):
    """One rank of a distributed run failed; the others were stopped.

    ``rank`` is the failing process's rank, ``type_name`` what it raised (``module.QualName``;
    ``fnjob.RankDied`` when the process died without an outcome), ``remote_message`` its
    message and ``remote_traceback`` the traceback printed on that rank. ``error`` is the
    rank's own exception when it can be rebuilt here (also this error's ``__cause__``).
    """

    def __init__(
        self,
        rank: int,
        type_name: str,
        message: str,
        remote_traceback: str,
        error: BaseException | None = None,
    ) -> None:
        text = f"rank {rank} failed: {type_name}: {message}"
        if remote_traceback:
            text += f"\n\nRemote traceback (rank {rank}):\n{remote_traceback}"
        super().__init__(text)
        self.rank = rank
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = remote_traceback
        self.error = error


class RendezvousTimeout(RankFailed):
    """Not every rank of a distributed run joined within ``Lifecycle.rendezvous_timeout``;
    the message names the ranks that never joined."""


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
    # (pickled size, limit) when the runner refused to print a too large result.
    too_large: tuple[int, int] | None = None
    # The rank whose outcome this is, in a distributed run (None: a single process).
    rank: int | None = None

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
        if self.too_large is not None:
            raise ResultTooLarge(result_bytes=self.too_large[0], limit=self.too_large[1])
        error = self._rebuild_error()
        if self.rank is not None:
            kind = RendezvousTimeout if self.error_type == RENDEZVOUS_TIMEOUT_TYPE else RankFailed
            raise kind(
                self.rank, self.error_type, self.error_message, self.remote_traceback, error
            ) from error
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


def _outcome_from_blob(blob: bytes) -> Outcome:
    header_text, _, data = blob.partition(b"\n")
    header = json.loads(header_text)
    if not isinstance(header, dict):
        raise ValueError("the outcome header is not a JSON object")
    rank = header.get("rank")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)):
        raise ValueError(f"the outcome's rank {rank!r} is not a number")
    if header.get("ok") is True:
        return Outcome(ok=True, pickled_value=data, rank=rank)
    too_large = None
    if header.get("type") == RESULT_TOO_LARGE:
        too_large = (int(header["result_bytes"]), int(header["limit"]))
    return Outcome(
        ok=False,
        error_type=str(header.get("type", "")),
        error_message=str(header.get("message", "")),
        remote_traceback=str(header.get("traceback", "")),
        pickled_error=data if header.get("exception") else None,
        too_large=too_large,
        rank=rank,
    )


class OutcomeReader:
    """Reads one run's output, line by line, and keeps the outcome signed with ``key``.

    ``feed(line)`` returns the text to show the user: the line itself, the line without the
    outcome piece glued into it, or None when the line was only a piece of the outcome.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.outcome: Outcome | None = None
        self.unsigned_lines = 0
        self.last_lines: collections.deque[str] = collections.deque(maxlen=LAST_LINES)
        self._damaged: str | None = None
        self._pieces: dict[int, str] = {}
        self._count: int | None = None

    def feed(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if _OUTCOME_MARK not in line:
            self.last_lines.append(line)
            return line
        # A piece ends its line (the runner writes it with its newline); a partial line may
        # be glued before it. Its base64 never holds the prefix, so the last one is the only
        # candidate.
        start = line.rfind(OUTCOME_PREFIX)
        if start != -1 and self._take_signed(line[start:]):
            rest = line[:start]
            if rest:
                self.last_lines.append(rest)
            return rest or None
        self.unsigned_lines += 1
        self.last_lines.append(line)
        return line

    @property
    def incomplete(self) -> bool:
        """Some, not all, pieces of the outcome were read."""
        return self.outcome is None and bool(self._pieces)

    def _take_signed(self, frame: str) -> bool:
        """Keep ``frame``'s piece if this run's key signed it."""
        text, _, signature = frame.rpartition(" ")
        try:
            expected = hmac.digest(self._key, text.encode("ascii"), "sha256").hex()
        except UnicodeEncodeError:
            return False
        if not hmac.compare_digest(expected, signature):
            return False
        counts, _, piece = text[len(OUTCOME_PREFIX) :].partition(" ")
        index, _, count = counts.partition("/")
        if not (index.isdigit() and count.isdigit()):
            # Signed but unreadable: a runner bug, never someone else's line.
            self._damaged = f"the outcome line {text[:60]!r}... has no piece number"
            return True
        self._take(int(index), int(count), piece)
        return True

    def _take(self, index: int, count: int, piece: str) -> None:
        if self._count is None:
            self._count = count
        if count != self._count or index >= count:
            self._damaged = f"piece {index}/{count} of an outcome in {self._count} pieces"
            return
        self._pieces.setdefault(index, piece)
        if len(self._pieces) == count and self.outcome is None:
            payload = "".join(self._pieces[i] for i in range(count))
            self._pieces.clear()
            try:
                self.outcome = _outcome_from_blob(base64.b64decode(payload, validate=True))
            except (ValueError, KeyError, binascii.Error, UnicodeDecodeError) as error:
                # Signed but unreadable: a runner bug, never someone else's line.
                self._damaged = str(error)

    def result(self) -> Outcome:
        """The authenticated outcome; ``ResultMissing`` (with the last lines) when none."""
        if self.outcome is not None:
            return self.outcome
        last = tuple(self.last_lines)
        if self._damaged is not None:
            raise ResultMissing(f"the outcome is damaged: {self._damaged}", last)
        if self._pieces:
            assert self._count is not None
            missing = self._count - len(self._pieces)
            raise ResultMissing(
                f"the outcome arrived incomplete: {missing} of its {self._count} lines never "
                "reached fnjob (the log was cut or rotated away by the kubelet before they "
                "were read)",
                last,
            )
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
