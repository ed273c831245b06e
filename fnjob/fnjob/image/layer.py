"""Image code: the code layer, the new config and manifest, platform selection.

Nothing here talks to a registry; ``registry.py`` moves the bytes. Everything is
deterministic: the same ``CodePackage`` on the same base gives byte-identical layer, config
and manifest, hence the same digest.

The code layer is streamed: tar -> gzip -> a spooled temporary file (in memory while small,
on disk in ``$TMPDIR`` beyond ``SPOOL_IN_MEMORY``), with both digests computed on the way, so
memory stays flat whatever the size of the files shipped.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import re
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import cloudpickle

from fnjob.errors import FnJobError
from fnjob.image.package import APP_DIR, CodePackage, FileContent
from fnjob.run import inimage, runner

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "INDEX_MEDIA_TYPES",
    "LAYER_COMPRESSION_LEVEL",
    "MANIFEST_MEDIA_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "AppendedImage",
    "Blob",
    "ImageFormatError",
    "Platform",
    "SitePackages",
    "SpooledBlob",
    "append_layer",
    "code_layer",
    "image_links",
    "image_tree",
    "parse_platform",
    "select_platform",
    "sha256_digest",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)

# Layer/config media types that go with each manifest media type.
_MEDIA_TYPES = {
    OCI_MANIFEST: (OCI_CONFIG, OCI_LAYER),
    DOCKER_MANIFEST: (DOCKER_CONFIG, DOCKER_LAYER),
}

RUNNER_PATH = "/fnjob/runner.py"
VENDOR_DIR = "/fnjob/vendor"
REQUIREMENTS_PATH = "/fnjob/requirements.txt"
SITE_DIR = "/fnjob/site"
# Requirements installed at build time (fnjob.image.requirements): files and symlinks by image path.
SitePackages = tuple[Mapping[str, FileContent], Mapping[str, str]]
# A fixed timestamp for every tar entry and the gzip header (determinism).
_FIXED_MTIME = 0
# gzip level of the code layer. Measured by benchmarks/bench_build_memory.py on this
# machine: level 1 compresses several times faster than 6 for a few percent more bytes, and
# the upload of those bytes costs less than the time level 6 adds.
LAYER_COMPRESSION_LEVEL = 1
# A layer stays in memory up to this size, then spills to a temporary file.
SPOOL_IN_MEMORY = 16 << 20
_READ_SIZE = 1 << 20


class ImageFormatError(FnJobError):
    """The base image's manifest or config is not something fnjob can append to."""


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of data."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    """Bytes with their digest and media type, ready to upload."""

    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def chunks(self) -> Iterator[bytes]:
        yield self.data


@dataclass(frozen=True, eq=False)
class SpooledBlob:
    """A blob written once to a spooled temporary file, with its digest and size; read back
    in chunks as many times as an upload needs (a retry starts again). ``close`` frees it."""

    file: IO[bytes]
    media_type: str
    digest: str
    size: int

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def chunks(self) -> Iterator[bytes]:
        self.file.seek(0)
        while chunk := self.file.read(_READ_SIZE):
            yield chunk

    def read_bytes(self) -> bytes:
        """All the bytes at once (small blobs and tests only)."""
        return b"".join(self.chunks())

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]`` as in an image index."""

    os: str
    architecture: str
    variant: str = ""

    def __post_init__(self) -> None:
        for name in ("os", "architecture"):
            if not re.fullmatch(r"[a-z0-9_]+", getattr(self, name)):
                raise ValueError(f"platform {name}: {getattr(self, name)!r} is not like 'linux'")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platform(text: str) -> Platform:
    """Parse ``linux/amd64`` or ``linux/arm64/v8``."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform: {text!r} is not 'os/arch' or 'os/arch/variant'")
    return Platform(*parts)


def select_platform(index: Mapping[str, Any], platform: Platform) -> dict[str, Any]:
    """The manifest descriptor in an image index that matches platform.

    The variant is matched when both sides give one (``arm64`` with no variant matches
    ``arm64/v8``). Raises ``ImageFormatError`` listing the platforms the index offers.
    """
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise ImageFormatError("the base image index has no 'manifests' list")
    offered = []
    for descriptor in manifests:
        found = descriptor.get("platform") or {}
        candidate = (found.get("os", ""), found.get("architecture", ""), found.get("variant", ""))
        offered.append("/".join(p for p in candidate if p))
        if candidate[:2] != (platform.os, platform.architecture):
            continue
        if platform.variant and candidate[2] and candidate[2] != platform.variant:
            continue
        if descriptor.get("mediaType", OCI_MANIFEST) not in MANIFEST_MEDIA_TYPES:
            continue
        return dict(descriptor)
    raise ImageFormatError(
        f"the base image has no {platform} variant; it offers {', '.join(offered) or 'none'}"
    )


# ---------------------------------------------------------------------------------------------
# The code layer


def _vendored_cloudpickle() -> dict[str, bytes]:
    package_dir = Path(cloudpickle.__file__).parent
    return {
        f"{VENDOR_DIR}/cloudpickle/{path.name}": path.read_bytes()
        for path in sorted(package_dir.glob("*.py"))
    }


def image_tree(package: CodePackage, site: SitePackages | None = None) -> dict[str, FileContent]:
    """Absolute path in the image -> content, for everything fnjob adds to the base: the
    runner, vendored cloudpickle, the in-image fnjob, the code, and either the installed
    requirements (``site``, the append builder) or ``requirements.txt`` (for a Dockerfile
    to install)."""
    tree: dict[str, FileContent] = {RUNNER_PATH: Path(runner.__file__).read_bytes()}
    tree.update(_vendored_cloudpickle())
    # Shipped code may import fnjob; in the image that import gets fnjob.run.inimage.
    tree[f"{VENDOR_DIR}/fnjob/__init__.py"] = Path(inimage.__file__).read_bytes()
    for path, data in package.files.items():
        tree[f"{APP_DIR}/{path}"] = data
    if site is not None:
        tree.update(site[0])
    elif package.requirements:
        tree[REQUIREMENTS_PATH] = ("\n".join(package.requirements) + "\n").encode("utf-8")
    return tree


def image_links(package: CodePackage, site: SitePackages | None = None) -> dict[str, str]:
    """Absolute path in the image -> relative target, for the symlinks fnjob adds."""
    links = {f"{APP_DIR}/{path}": target for path, target in package.links.items()}
    if site is not None:
        links.update(site[1])
    return links


def _tar_info(name: str, kind: bytes, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    is_dir = kind == tarfile.DIRTYPE
    info = tarfile.TarInfo(name + ("/" if is_dir else ""))
    info.type = kind
    info.mode = {tarfile.DIRTYPE: 0o755, tarfile.SYMTYPE: 0o777}.get(kind, 0o644)
    info.size = size
    info.linkname = linkname
    info.mtime = _FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Digesting:
    """A write-only file that hashes and counts what passes through to ``target``."""

    def __init__(self, target: IO[bytes] | gzip.GzipFile | _Digesting) -> None:
        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.target.flush()

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _entries(tree: Mapping[str, FileContent], links: Mapping[str, str]) -> list[tuple[str, bytes]]:
    folders: set[str] = set()
    for path in [*tree, *links]:
        parts = path.strip("/").split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(
        [(name, tarfile.DIRTYPE) for name in folders]
        + [(p.strip("/"), tarfile.REGTYPE) for p in tree]
        + [(p.strip("/"), tarfile.SYMTYPE) for p in links]
    )


def _add_file(archive: tarfile.TarFile, name: str, content: FileContent) -> None:
    if isinstance(content, bytes):
        info = _tar_info(name, tarfile.REGTYPE, len(content))
        if content.startswith(b"#!"):
            info.mode = 0o755
        archive.addfile(info, io.BytesIO(content))
        return
    with content.open("rb") as source:
        size = source.seek(0, io.SEEK_END)
        source.seek(0)
        info = _tar_info(name, tarfile.REGTYPE, size)
        if source.read(2) == b"#!":
            info.mode = 0o755
        source.seek(0)
        try:
            archive.addfile(info, source)
        except OSError as error:  # tarfile: "unexpected end of data"
            raise OSError(f"{content} changed while fnjob was reading it: {error}") from error


def write_layer_tar(
    out: IO[bytes] | gzip.GzipFile,
    tree: Mapping[str, FileContent],
    links: Mapping[str, str] | None = None,
) -> str:
    """Write an uncompressed tar of tree (and symlinks: path -> target) to out: parent
    folders included, entries sorted, fixed timestamps, owned by uid/gid 0, files 0644
    (0755 for ``#!`` scripts) and folders 0755. Files given as paths are streamed. Returns
    the tar's ``sha256:`` digest."""
    links = links or {}
    tar = _Digesting(out)
    with tarfile.TarFile(
        fileobj=cast(IO[bytes], tar), mode="w", format=tarfile.PAX_FORMAT, copybufsize=_READ_SIZE
    ) as archive:
        for name, kind in _entries(tree, links):
            if kind == tarfile.REGTYPE:
                _add_file(archive, name, tree["/" + name])
            else:
                archive.addfile(_tar_info(name, kind, linkname=links.get("/" + name, "")))
    return tar.digest()


@dataclass(frozen=True)
class CodeLayer:
    """The compressed layer blob and the digest of its uncompressed tar (the diff_id)."""

    blob: SpooledBlob
    diff_id: str


def code_layer(
    package: CodePackage,
    media_type: str = OCI_LAYER,
    site: SitePackages | None = None,
    *,
    compression_level: int = LAYER_COMPRESSION_LEVEL,
) -> CodeLayer:
    """The deterministic gzip layer holding the runner, vendored cloudpickle, the code and
    the installed requirements, streamed into a spooled temporary file (the caller closes
    ``layer.blob``)."""
    # Closed by the caller through the blob, or here when writing fails.
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, prefix="fnjob-layer-")  # noqa: SIM115
    try:
        compressed = _Digesting(cast(IO[bytes], spool))
        # mtime=0 and no file name keep the gzip header identical between runs.
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=compression_level
        ) as gz:
            diff_id = write_layer_tar(gz, image_tree(package, site), image_links(package, site))
        spool.flush()
    except BaseException:
        spool.close()
        raise
    blob = SpooledBlob(cast(IO[bytes], spool), media_type, compressed.digest(), compressed.size)
    return CodeLayer(blob=blob, diff_id=diff_id)


# ---------------------------------------------------------------------------------------------
# Config and manifest


def _env_with(env: Sequence[str], updates: Mapping[str, str]) -> list[str]:
    kept = [item for item in env if item.split("=", 1)[0] not in updates]
    return kept + [f"{key}={value}" for key, value in updates.items()]


def runtime_env(
    package: CodePackage, base_env: Sequence[str] = (), *, site: bool = False
) -> dict[str, str]:
    """The environment fnjob sets in the image (base PYTHONPATH kept after ours; the
    installed requirements' folder on it when there are some)."""
    base_pythonpath = ""
    for item in base_env:
        key, _, value = item.partition("=")
        if key == "PYTHONPATH":
            base_pythonpath = value
    site_dir = SITE_DIR if site else ""
    pythonpath = ":".join(p for p in (APP_DIR, VENDOR_DIR, site_dir, base_pythonpath) if p)
    env = {
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        "FNJOB_ENTRY": package.entry,
    }
    return env


ENTRYPOINT = ("python3", RUNNER_PATH)


def appended_config(
    base_config: Mapping[str, Any], package: CodePackage, layer: CodeLayer, *, site: bool = False
) -> dict[str, Any]:
    """The base config with the code layer's diff_id appended and fnjob's entrypoint,
    environment and working directory. The base's other settings (user, labels, ...)
    are kept."""
    config = copy.deepcopy(dict(base_config))
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ImageFormatError("the base image config has no rootfs.diff_ids list")
    rootfs["diff_ids"].append(layer.diff_id)
    container = dict(config.get("config") or {})
    container["Env"] = _env_with(
        container.get("Env") or [], runtime_env(package, container.get("Env") or [], site=site)
    )
    container["Entrypoint"] = list(ENTRYPOINT)
    # The base's Cmd would become the runner's arguments.
    container.pop("Cmd", None)
    container["WorkingDir"] = APP_DIR
    config["config"] = container
    # History entries pair with layers; only extend a history the base keeps.
    if config.get("history"):
        created_by = f"fnjob append: {package.description or package.entry}"
        config["history"] = [*config["history"], {"created_by": created_by}]
    return config


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class AppendedImage:
    """The new image: blobs fnjob made (code layer, config), the manifest bytes and the base
    layer descriptors the manifest references (to mount or copy)."""

    layer: CodeLayer
    config: Blob
    manifest: Blob
    base_layers: tuple[dict[str, Any], ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def close(self) -> None:
        """Free the spooled code layer."""
        self.layer.blob.close()

    def __enter__(self) -> AppendedImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_layer(
    base_manifest: Mapping[str, Any],
    base_config: Mapping[str, Any],
    package: CodePackage,
    site: SitePackages | None = None,
) -> AppendedImage:
    """Append package's code layer (with ``site``, the requirements installed for the base)
    to a base image, in the base manifest's media types. Close the result (or use it as a
    context manager) to free its spooled layer.

    Raises ``ImageFormatError`` for a manifest that is not OCI or Docker schema 2 (an index
    must be resolved with ``select_platform`` first) or when layers and diff_ids disagree.
    """
    media_type = base_manifest.get("mediaType") or (
        OCI_MANIFEST if base_manifest.get("schemaVersion") == 2 else ""
    )
    if media_type not in _MEDIA_TYPES:
        raise ImageFormatError(
            f"the base manifest has media type {media_type!r}; fnjob appends to "
            f"{' or '.join(MANIFEST_MEDIA_TYPES)}"
        )
    config_type, layer_type = _MEDIA_TYPES[media_type]
    base_layers = base_manifest.get("layers")
    if not isinstance(base_layers, list):
        raise ImageFormatError("the base manifest has no 'layers' list")
    diff_ids = (base_config.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(base_layers):
        raise ImageFormatError(
            f"the base manifest lists {len(base_layers)} layers but its config "
            f"{len(diff_ids)} diff_ids"
        )
    layer = code_layer(package, layer_type, site)
    has_site = bool(site and (site[0] or site[1]))
    config = Blob(
        _canonical_json(appended_config(base_config, package, layer, site=has_site)),
        config_type,
    )
    manifest_doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.descriptor(),
        "layers": [dict(d) for d in base_layers] + [layer.blob.descriptor()],
    }
    return AppendedImage(
        layer=layer,
        config=config,
        manifest=Blob(_canonical_json(manifest_doc), media_type),
        base_layers=tuple(dict(d) for d in base_layers),
    )
