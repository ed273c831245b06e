"""Forged outcome lines: what a record in an untrusted data file could hold.

Each line looks like a runner's outcome whose value is a pickle that, once unpickled,
creates ``marker`` on the machine that unpickles it: if the file exists after a run, the
caller ran code it got from a log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import pickle
import secrets
from pathlib import Path
from typing import Any


class _CreatesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def forged_outcome_lines(marker: Path) -> list[str]:
    """Lines in the current format (one piece signed with a key the caller never made, and
    one with a made-up signature) and in the formats of earlier fnjob versions (one signed
    line, and unsigned)."""
    pickled = pickle.dumps(_CreatesMarker(marker), protocol=4)
    value = base64.b64encode(pickled).decode()
    record = base64.b64encode(json.dumps({"ok": True, "value": value}).encode()).decode()
    other_key = secrets.token_bytes(32)
    frame = "FNJOB-OUTCOME/3 0/1 " + base64.b64encode(b'{"ok": true}\n' + pickled).decode()
    signed_text = "FNJOB-OUTCOME/2 " + record
    return [
        "FNJOB-OUTCOME/1 " + record,
        f"{signed_text} {_sign(other_key, signed_text)}",
        f"{frame} {_sign(other_key, frame)}",
        f"{frame} {'0' * 64}",
    ]


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
