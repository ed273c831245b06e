"""Which Python a base image has, and whether a code package can run on it.

Checked before anything is built or pushed. The base's Python is, in this order: the
``base_python`` the caller gives; what the image config declares (``declared_python``: the
``PYTHON_VERSION`` environment variable, the ``PYTHON_LABEL`` label, a ``PYTHON_VERSION=``
in its build history), which costs no download; else the ``python3`` the image's ``PATH``
runs, found in its layers' tar headers (``python3 -> python3.11`` symlink chains, or the
``lib/python3.N/os.py`` beside a plain ``bin/python3``). Layers are read newest first and
the reading stops as soon as the answer is known. Scans are cached per base manifest digest,
on disk.
"""

from __future__ import annotations

import ast
import functools
import itertools
import posixpath
import re
import sys
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fnjob.errors import FnJobError
from fnjob.image.package import CodePackage

__all__ = [
    "DEFAULT_PATH",
    "MIN_RUNNER_PYTHON",
    "PYTHON_ENV",
    "PYTHON_LABEL",
    "PythonVersionCache",
    "PythonVersionMismatch",
    "TarMember",
    "check_python",
    "declared_python",
    "find_python",
    "path_dirs",
]

# The runner uses `from __future__ import annotations` and f-strings.
MIN_RUNNER_PYTHON = (3, 7)
_STDLIB = re.compile(r"^(.*/)?lib/python(3\.\d+)/os\.py$")
_VERSIONED = re.compile(r"^python(3\.\d+)m?$")


class PythonVersionMismatch(FnJobError):
    """The base image's Python cannot run this code package (or it has none)."""

    def __init__(self, message: str, *, base_python: str | None, local_python: str) -> None:
        super().__init__(message)
        self.base_python = base_python
        self.local_python = local_python


def _major_minor(text: str) -> str | None:
    match = re.match(r"^\s*(\d+)\.(\d+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else None


# What an image declares about its Python. The environment variable is the official
# ``python`` images' (and NGC's, and the stack's images'); the label is this project's, set
# by the images the stack builds; in the history, ``ENV``/``ARG PYTHON_VERSION=`` of any
# Dockerfile (BuildKit records an ARG used by a RUN as ``|1 PYTHON_VERSION=3.11 ...``).
PYTHON_ENV = "PYTHON_VERSION"
PYTHON_LABEL = "io.kubeflow-eks.python-version"
_HISTORY = re.compile(r"(?:^|[\s|])PYTHON_VERSION=[\"']?(\d+\.\d+)")


def declared_python(config: Mapping[str, Any]) -> tuple[str, str] | None:
    """(``MAJOR.MINOR``, where it was read) from what the image config declares, in this
    order: ``ENV PYTHON_VERSION``, the ``PYTHON_LABEL`` label, the newest
    ``PYTHON_VERSION=`` in the build history; None when it declares nothing."""
    container = config.get("config") or {}
    for item in container.get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == PYTHON_ENV and (version := _major_minor(value)) is not None:
            return version, f"ENV {PYTHON_ENV}"
    label = (container.get("Labels") or {}).get(PYTHON_LABEL)
    if label is not None and (version := _major_minor(str(label))) is not None:
        return version, f"label {PYTHON_LABEL}"
    for entry in reversed(config.get("history") or []):
        found = _HISTORY.search(str((entry or {}).get("created_by", "")))
        if found is not None:
            return found.group(1), "build history"
    return None


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_SYMLINK, _HARDLINK = b"2", b"1"


class TarMember(NamedTuple):
    """A tar entry as the scan needs it: path, link target and type flag (``b"2"`` symlink,
    ``b"1"`` hard link, ``b"0"`` file, ``b"5"`` folder)."""

    name: str
    linkname: str = ""
    kind: bytes = b"0"


def path_dirs(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The image's ``PATH`` folders (Docker's default when it sets none), without the
    leading ``/``, in lookup order."""
    path = DEFAULT_PATH
    for item in (config.get("config") or {}).get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "PATH":
            path = value
    return tuple(dict.fromkeys(d.strip("/") for d in path.split(":") if d.strip("/")))


def _normal(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


class _PathScan:
    """Which ``python3`` the image's PATH runs, from tar members read newest layer first.

    The newest entry for a path wins; whiteouts in newer layers hide older entries. The answer
    is the version of the ``python3`` in the earliest PATH folder that has one among the
    entries seen so far: a symlink chain ending in ``python3.N``, or, for a plain file, the
    single ``lib/python3.N`` standard library beside its ``bin`` folder.
    """

    def __init__(self, dirs: Sequence[str]) -> None:
        self.dirs = tuple(dirs)
        self.entries: dict[str, TarMember] = {}
        self.stdlibs: dict[str, set[str]] = {}
        self.hidden: set[str] = set()
        self.opaque: set[str] = set()
        self._layer_hidden: set[str] = set()
        self._layer_opaque: set[str] = set()

    def _is_hidden(self, path: str) -> bool:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in self.hidden or (i < len(parts) and prefix in self.opaque):
                return True
        return False

    def add(self, member: TarMember) -> None:
        path = _normal(member.name)
        folder, base = posixpath.split(path)
        if base == _OPAQUE:
            self._layer_opaque.add(folder)
            return
        if base.startswith(_WHITEOUT):
            self._layer_hidden.add(posixpath.join(folder, base[len(_WHITEOUT) :]))
            return
        if self._is_hidden(path):
            return
        if (match := _STDLIB.match(path)) is not None:
            self.stdlibs.setdefault(match.group(1) or "", set()).add(match.group(2))
        self.entries.setdefault(path, member)

    def end_layer(self) -> None:
        """Whiteouts of the layer just read hide entries of the older layers."""
        self.hidden |= self._layer_hidden
        self.opaque |= self._layer_opaque
        self._layer_hidden, self._layer_opaque = set(), set()

    def _version_of(self, path: str, depth: int = 0) -> str | None:
        if (match := _VERSIONED.match(posixpath.basename(path))) is not None:
            return match.group(1)
        member = self.entries.get(path)
        if member is None or depth > 16:
            return None
        if member.kind == _SYMLINK:
            target = member.linkname
            if not target.startswith("/"):
                target = posixpath.join(posixpath.dirname(path), target)
            return self._version_of(_normal(target), depth + 1)
        if member.kind == _HARDLINK:
            return self._version_of(_normal(member.linkname), depth + 1)
        prefix = posixpath.dirname(posixpath.dirname(path))
        versions = self.stdlibs.get(prefix + "/" if prefix else "", set())
        return next(iter(versions)) if len(versions) == 1 else None

    def answer(self) -> tuple[bool, str | None]:
        """(decided, version): decided once the earliest PATH folder holding a python3
        resolves to a version."""
        for folder in self.dirs:
            path = f"{folder}/python3"
            if path in self.entries:
                version = self._version_of(path)
                return version is not None, version
        return False, None


def find_python(
    layers_newest_first: Iterable[Iterable[TarMember]], dirs: Sequence[str]
) -> str | None:
    """The ``MAJOR.MINOR`` of the ``python3`` on PATH, reading as few layers as possible.

    Layers are read newest first and reading stops as soon as the answer is known, in the
    middle of a layer if need be: iterators are closed then, so a streamed layer is not
    downloaded further and older layers are never opened. An image whose older layers put
    another python3 in an earlier PATH folder is misread; pass ``base_python`` for those.
    """
    scan = _PathScan(dirs)
    for layer in layers_newest_first:
        members = iter(layer)
        try:
            for member in members:
                scan.add(member)
                decided, version = scan.answer()
                if decided:
                    return version
        finally:
            close = getattr(members, "close", None)
            if close is not None:
                close()
        scan.end_layer()
    return scan.answer()[1]


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


# Parsing every shipped file was most of a repeated build's time (a package of 80 modules:
# about 0.3 s): each source parses once per grammar and process. The cache holds the sources
# it has seen (a few MB for thousands of files).
@functools.lru_cache(maxsize=4096)
def _syntax_error(data: bytes, grammar: tuple[int, int]) -> tuple[int | None, str] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(data, feature_version=grammar)
    except SyntaxError as error:
        return error.lineno, str(error.msg)
    return None


def _syntax_problems(sources: Mapping[str, bytes], base: tuple[int, int]) -> list[str]:
    problems = []
    for path, data in sorted(sources.items()):
        found = _syntax_error(data, base)
        if found is not None:
            problems.append(f"{path}:{found[0]}: {found[1]}")
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
                f"major.minor: use a Python {local} base image, or "
                + (package.pickle_hint or "define the function at module level in a .py file")
                + ("; if the base image's Python was misread, pass base_python= (--base-python)"),
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


def tar_members(compressed: Iterable[bytes]) -> Iterator[TarMember]:
    """Each member of a gzip or plain tar stream, reading headers only.

    File data still has to be decompressed, but is skipped without copying; this is several
    times faster than ``tarfile`` in stream mode. Stops at the end-of-archive block. Raises
    ``ValueError`` for a truncated or undecodable stream. Closing this iterator closes the
    stream it reads (a download stops there).
    """
    chunks = iter(compressed)
    try:
        yield from _members(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _members(chunks: Iterator[bytes]) -> Iterator[TarMember]:
    first = next(chunks, b"")
    # 0x1f8b is gzip's magic; anything else is taken as an uncompressed tar.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if first[:2] == b"\x1f\x8b" else None
    scanner = _TarScanner()
    for raw in itertools.chain((first,), chunks):
        try:
            data = inflater.decompress(raw) if inflater is not None else raw
        except zlib.error as error:
            raise ValueError(f"layer is not valid gzip: {error}") from error
        yield from scanner.feed(data)
        if scanner.ended:
            return
    if inflater is not None and not inflater.eof:
        raise ValueError("layer ended before the end of its gzip stream")


# Records that describe the member after them: GNU long name and long link, POSIX pax.
_EXTENSION_KINDS = (b"L", b"K", b"x")
# A POSIX pax global header: describes the archive, not a member.
_GLOBAL_HEADER = b"g"


def _header_text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _padded(size: int) -> int:
    return (size + 511) // 512 * 512


class _TarScanner:
    """Tar headers from a byte stream fed in pieces; file contents are skipped, and only
    the last megabyte or so is kept."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0
        self._skip = 0
        self._pending_name = ""
        self._pending_link = ""
        self.ended = False

    def feed(self, data: bytes) -> Iterator[TarMember]:
        self._buffer += data
        while self._skipped() and self._available() >= 512:
            header = bytes(self._buffer[self._position : self._position + 512])
            if header == bytes(512):
                self.ended = True
                return
            kind = header[156:157]
            if kind in _EXTENSION_KINDS:
                if not self._read_extension(header, kind):
                    break  # wait until the whole extension record is buffered
                continue
            member = self._member(header, kind)
            if member is not None:
                yield member
        if self._position > 1 << 20:
            del self._buffer[: self._position]
            self._position = 0

    def _available(self) -> int:
        return len(self._buffer) - self._position

    def _skipped(self) -> bool:
        """Pass over what is buffered of the current file's contents; True once all is."""
        taken = min(self._skip, self._available())
        self._position += taken
        self._skip -= taken
        return not self._skip

    def _read_extension(self, header: bytes, kind: bytes) -> bool:
        size = _octal_or_base256(header[124:136])
        if self._available() < 512 + _padded(size):
            return False
        data = bytes(self._buffer[self._position + 512 : self._position + 512 + size])
        if kind == b"L":
            self._pending_name = data.rstrip(b"\0").decode("utf-8", "replace")
        elif kind == b"K":
            self._pending_link = data.rstrip(b"\0").decode("utf-8", "replace")
        else:
            records = _pax_records(data)
            self._pending_name = records.get("path", self._pending_name)
            self._pending_link = records.get("linkpath", self._pending_link)
        self._position += 512 + _padded(size)
        return True

    def _member(self, header: bytes, kind: bytes) -> TarMember | None:
        name = _header_text(header[0:100])
        if header[257:262] == b"ustar":
            prefix = _header_text(header[345:500])
            name = f"{prefix}/{name}" if prefix else name
        member = None
        if kind != _GLOBAL_HEADER:
            # Like tarfile: folder names without their trailing slash.
            name = (self._pending_name or name).rstrip("/")
            member = TarMember(name, self._pending_link or _header_text(header[157:257]), kind)
        self._pending_name = self._pending_link = ""
        self._position += 512
        self._skip = _padded(_octal_or_base256(header[124:136]))
        return member
