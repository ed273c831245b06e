"""Which Python a base image has, and whether a code package can run on it.

Checked before anything is built or pushed. The base's Python comes from its config's
``PYTHON_VERSION`` environment variable (official ``python`` images set it), else from what
its layers contain: ``usr[/local]/bin/python3`` symlinks (``python3 -> python3.11``) and
``usr[/local]/lib/python3.N/os.py`` standard libraries, read from tar headers only. Scans are
cached per base manifest digest, on disk.
"""

from __future__ import annotations

import ast
import re
import sys
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fnjob.errors import FnJobError
from fnjob.package import CodePackage

__all__ = [
    "MIN_RUNNER_PYTHON",
    "PythonVersionCache",
    "PythonVersionMismatch",
    "TarPythonScan",
    "check_python",
    "python_from_config",
]

# The runner uses `from __future__ import annotations` and f-strings.
MIN_RUNNER_PYTHON = (3, 7)
_STDLIB = re.compile(r"^(?:\./)?(usr/(?:local/)?)lib/python(3\.\d+)/os\.py$")
_BINARY = re.compile(r"^(?:\./)?(usr/(?:local/)?)bin/python(3\.\d+)$")
_LAUNCHER = re.compile(r"^(?:\./)?(usr/(?:local/)?)bin/python3$")


class PythonVersionMismatch(FnJobError):
    """The base image's Python cannot run this code package (or it has none)."""

    def __init__(self, message: str, *, base_python: str | None, local_python: str) -> None:
        super().__init__(message)
        self.base_python = base_python
        self.local_python = local_python


def _major_minor(text: str) -> str | None:
    match = re.match(r"^\s*(\d+)\.(\d+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def python_from_config(config: Mapping[str, Any]) -> str | None:
    """``MAJOR.MINOR`` from the config's ``PYTHON_VERSION`` env, or None."""
    for item in (config.get("config") or {}).get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "PYTHON_VERSION":
            return _major_minor(value)
    return None


@dataclass
class TarPythonScan:
    """Accumulates what a base's layers say about Python, one tar member at a time.

    Later layers win: a ``python3`` launcher symlink names the version ``python3`` runs;
    otherwise the single version with both stdlib and binary (or a stdlib alone).
    ``usr/local`` is preferred as it comes first on the default PATH.
    """

    launchers: dict[str, str] = field(default_factory=dict)
    stdlibs: set[str] = field(default_factory=set)
    binaries: set[str] = field(default_factory=set)

    def add(self, name: str, linkname: str = "") -> None:
        if (match := _STDLIB.match(name)) is not None:
            self.stdlibs.add(match.group(2))
        elif (match := _BINARY.match(name)) is not None:
            self.binaries.add(match.group(2))
        elif (match := _LAUNCHER.match(name)) is not None:
            version = _BINARY.match("usr/bin/" + linkname.rsplit("/", 1)[-1])
            if version is not None:
                self.launchers[match.group(1)] = version.group(2)

    def version(self) -> str | None:
        for prefix in ("usr/local/", "usr/"):
            found = self.launchers.get(prefix)
            if found is not None and found in self.stdlibs:
                return found
        both = sorted(self.stdlibs & self.binaries, key=_version_key)
        if both:
            return both[-1]
        only_stdlib = sorted(self.stdlibs, key=_version_key)
        return only_stdlib[-1] if only_stdlib else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class PythonVersionCache:
    """``<folder>/<digest hex>`` files holding the base's ``MAJOR.MINOR`` (or ``none``)."""

    folder: Path

    def _path(self, digest: str) -> Path:
        return self.folder / digest.replace(":", "-")

    def get(self, digest: str) -> tuple[bool, str | None]:
        """(found, version) for a base manifest digest."""
        try:
            text = self._path(digest).read_text().strip()
        except OSError:
            return False, None
        return True, (None if text == "none" else text)

    def put(self, digest: str, version: str | None) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary = self._path(digest).with_suffix(".tmp")
            temporary.write_text(version or "none")
            temporary.replace(self._path(digest))
        except OSError:
            # A cache that cannot be written only costs a rescan next time.
            pass


def _syntax_problems(sources: Mapping[str, bytes], base: tuple[int, int]) -> list[str]:
    problems = []
    for path, data in sorted(sources.items()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ast.parse(data, filename=path, feature_version=base)
        except SyntaxError as error:
            problems.append(f"{path}:{error.lineno}: {error.msg}")
    return problems


def check_python(package: CodePackage, base_python: str | None, base_name: str) -> None:
    """Raise ``PythonVersionMismatch`` unless package can run on base_python.

    A pickled function needs the same major.minor as the Python that pickled it; source needs
    Python >= 3.7 (the runner) whose grammar accepts the shipped ``.py`` files.
    """
    local = package.source_python
    if base_python is None:
        raise PythonVersionMismatch(
            f"base image {base_name} has no python3 (looked for PYTHON_VERSION and "
            "usr[/local]/lib/python3.N); use a base image with Python",
            base_python=None,
            local_python=local,
        )
    if package.needs_exact_python:
        if base_python != local:
            raise PythonVersionMismatch(
                f"{package.description or 'the function'} is pickled with Python {local} but "
                f"base image {base_name} has Python {base_python}; pickles need the same "
                f"major.minor: use a Python {local} base image, or define the function at module "
                "level in a .py file so it ships as source",
                base_python=base_python,
                local_python=local,
            )
        return
    base_tuple = tuple(int(part) for part in base_python.split("."))
    if base_tuple < MIN_RUNNER_PYTHON:
        raise PythonVersionMismatch(
            f"base image {base_name} has Python {base_python}; fnjob needs at least "
            f"{'.'.join(map(str, MIN_RUNNER_PYTHON))}",
            base_python=base_python,
            local_python=local,
        )
    # ast only knows grammars up to its own version; newer bases accept at least that.
    grammar = min((base_tuple[0], base_tuple[1]), (sys.version_info.major, sys.version_info.minor))
    problems = _syntax_problems(package.python_sources(), grammar)
    if problems:
        raise PythonVersionMismatch(
            f"base image {base_name} has Python {base_python}, which cannot parse the shipped "
            f"code: {'; '.join(problems[:5])}",
            base_python=base_python,
            local_python=local,
        )


def _octal_or_base256(field: bytes) -> int:
    if field[:1] == b"\x80":  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[str, str]:
    records = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        _, _, record = line.partition(" ")
        key, sep, value = record.partition("=")
        if sep:
            records[key] = value
    return records


def tar_members(compressed: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """(name, linkname) of each member of a gzip or plain tar stream, reading headers only.

    File data still has to be decompressed, but is skipped without copying; this is several
    times faster than ``tarfile`` in stream mode. Stops at the end-of-archive block. Raises
    ``ValueError`` for a truncated or undecodable stream.
    """
    chunks = iter(compressed)
    first = next(chunks, b"")
    # 0x1f8b is gzip's magic; anything else is taken as an uncompressed tar.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if first[:2] == b"\x1f\x8b" else None
    buffer = bytearray()
    position = 0
    skip = 0
    pending_name = pending_link = ""

    def feed() -> Iterator[bytes]:
        yield first
        yield from chunks

    for raw in feed():
        try:
            buffer += inflater.decompress(raw) if inflater is not None else raw
        except zlib.error as error:
            raise ValueError(f"layer is not valid gzip: {error}") from error
        while True:
            if skip:
                taken = min(skip, len(buffer) - position)
                position += taken
                skip -= taken
                if skip:
                    break
            if len(buffer) - position < 512:
                break
            header = bytes(buffer[position : position + 512])
            if header == bytes(512):
                return
            size = _octal_or_base256(header[124:136])
            padded = (size + 511) // 512 * 512
            kind = header[156:157]
            if kind in (b"L", b"K", b"x"):
                if len(buffer) - position < 512 + padded:
                    break  # wait until the whole extension record is buffered
                data = bytes(buffer[position + 512 : position + 512 + size])
                if kind == b"L":
                    pending_name = data.rstrip(b"\0").decode("utf-8", "replace")
                elif kind == b"K":
                    pending_link = data.rstrip(b"\0").decode("utf-8", "replace")
                else:
                    records = _pax_records(data)
                    pending_name = records.get("path", pending_name)
                    pending_link = records.get("linkpath", pending_link)
                position += 512 + padded
                continue
            name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            if header[257:262] == b"ustar":
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
                name = f"{prefix}/{name}" if prefix else name
            link = header[157:257].split(b"\0", 1)[0].decode("utf-8", "replace")
            if kind not in (b"g",):
                # Like tarfile: folder names without their trailing slash.
                yield (pending_name or name).rstrip("/"), pending_link or link
            pending_name = pending_link = ""
            position += 512
            skip = padded
        if position > 1 << 20:
            del buffer[:position]
            position = 0
    if inflater is not None and not inflater.eof:
        raise ValueError("layer ended before the end of its gzip stream")


def scan_names(members: Iterable[tuple[str, str]]) -> str | None:
    """The Python version from (name, linkname) pairs of one or more layers, in order."""
    scan = TarPythonScan()
    for name, linkname in members:
        scan.add(name, linkname)
    return scan.version()
