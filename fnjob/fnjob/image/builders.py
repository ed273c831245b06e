"""Builders: turn a ``CodePackage`` into a pushed image and return its digest-pinned reference.

``AppendBuilder`` (default) needs no container engine: it reads the base image from its
registry, appends one deterministic code layer, and pushes to the target repository:
base layers are skipped when present, mounted across repositories on the same registry, or
copied; the manifest goes last, after every blob it references is in place.

``DockerBuilder`` builds from a generated Dockerfile on a Docker-compatible daemon (docker SDK)
and pushes with it.

Both check the base image's Python against the package before building anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from fnjob.errors import FnJobError
from fnjob.image.auth import Credentials, find_credentials
from fnjob.image.layer import (
    DOCKER_MANIFEST_LIST,
    ENTRYPOINT,
    INDEX_MEDIA_TYPES,
    OCI_INDEX,
    AppendedImage,
    Blob,
    ImageFormatError,
    SpooledBlob,
    append_layer,
    image_links,
    image_tree,
    parse_platform,
    runtime_env,
    select_platform,
    sha256_digest,
    write_layer_tar,
)
from fnjob.image.package import APP_DIR, CodePackage
from fnjob.image.pythonversion import (
    PythonVersionCache,
    TarMember,
    check_python,
    declared_python,
    find_python,
    path_dirs,
    tar_members,
)
from fnjob.image.registry import (
    DEFAULT_CHUNK_SIZE,
    ImageReference,
    ManifestNotFound,
    RegistryClient,
    RetryPolicy,
    parse_reference,
    timeout_from_env,
)
from fnjob.image.requirements import vendor_requirements
from fnjob.options import check_base_python, check_platform, check_registry_timeout
from fnjob.progress import ProgressCallback, ProgressEvent

__all__ = [
    "AppendBuilder",
    "BaseImage",
    "BaseImageNotFound",
    "BasePython",
    "BuiltImage",
    "DockerBuildFailed",
    "DockerBuilder",
    "DockerDaemonUnavailable",
    "render_dockerfile",
]


class BaseImageNotFound(FnJobError):
    """The base image's repository has no such tag/digest (or platform)."""


class DockerDaemonUnavailable(FnJobError):
    """No Docker-compatible daemon answers (DOCKER_HOST or the default socket)."""


class DockerBuildFailed(FnJobError):
    """The daemon failed to build or push the image; ``log`` holds its last output lines."""

    def __init__(self, message: str, log: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class BuiltImage:
    """A pushed image.

    - ``ref``: digest-pinned ``host/repo@sha256:...``, what deployers should run;
    - ``tag_ref``: ``host/repo:tag`` (the tag defaults to ``fnjob-<digest prefix>``);
    - ``bytes_uploaded``: blob and manifest bytes sent (None when a daemon pushed);
    - ``python_version``: the base image's ``MAJOR.MINOR``, when known;
    - ``python_found_in``: where it was found (``base_python``, ``ENV PYTHON_VERSION``, a
      label, the build history, the layers, the cache);
    - ``base_bytes_read``: bytes of base layers downloaded to find it (0 unless the layers
      had to be read).
    """

    ref: str
    tag_ref: str
    digest: str
    bytes_uploaded: int | None
    python_version: str | None
    python_found_in: str = ""
    base_bytes_read: int = 0


@dataclass(frozen=True)
class BasePython:
    """The base image's Python ``version`` (None: it has none), ``found_in`` (where) and
    ``bytes_read`` (base layer bytes downloaded to find it)."""

    version: str | None
    found_in: str
    bytes_read: int = 0


@dataclass(frozen=True)
class BaseImage:
    """A resolved base image: its single-platform manifest and config."""

    reference: ImageReference
    manifest: Mapping[str, Any]
    manifest_digest: str
    config: Mapping[str, Any]


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/fnjob`` or ``~/.cache/fnjob``."""
    environ = os.environ if env is None else env
    root = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")) / ".cache")
    return Path(root).expanduser() / "fnjob"


@dataclass(frozen=True)
class _RegistryAccess:
    """How to reach registries: shared by both builders."""

    insecure_registries: tuple[str, ...]
    credentials: Mapping[str, Credentials] | None
    retry: RetryPolicy
    timeout: float
    chunk_size: int
    # Looked up once per repository and build (an ECR token costs an AWS call).
    found: dict[tuple[str, str], Credentials] = field(default_factory=dict)

    def credentials_for(self, host: str, repository: str) -> Credentials:
        if (host, repository) not in self.found:
            self.found[host, repository] = find_credentials(
                host, repository, explicit=self.credentials
            )
        return self.found[host, repository]

    def client(
        self, host: str, repository: str, scopes: tuple[str, ...] = (), *, push: bool = False
    ) -> RegistryClient:
        return RegistryClient(
            host,
            repository,
            credentials=self.credentials_for(host, repository),
            insecure_registries=self.insecure_registries,
            retry=self.retry,
            timeout=self.timeout,
            chunk_size=self.chunk_size,
            scopes=scopes,
            push=push,
        )


def _emit(progress: ProgressCallback | None, stage: str, detail: str = "", **counts: int) -> None:
    if progress is not None:
        progress(ProgressEvent(stage, detail, **counts))


def _resolve_base(client: RegistryClient, reference: ImageReference, platform: str) -> BaseImage:
    """Read the base manifest (choosing platform from an index) and its config."""
    try:
        data, media_type = client.get_manifest(reference.reference)
        if media_type in INDEX_MEDIA_TYPES or media_type == "":
            document = json.loads(data)
            if media_type in (OCI_INDEX, DOCKER_MANIFEST_LIST) or "manifests" in document:
                chosen = select_platform(document, parse_platform(platform))
                data, media_type = client.get_manifest(str(chosen["digest"]))
    except ManifestNotFound as error:
        raise BaseImageNotFound(
            f"base image {reference} not found: the registry has no such tag or digest"
        ) from error
    except ImageFormatError as error:
        raise BaseImageNotFound(f"base image {reference}: {error}") from error
    manifest = json.loads(data)
    manifest.setdefault("mediaType", media_type)
    config_digest = str((manifest.get("config") or {}).get("digest", ""))
    if not config_digest:
        raise ImageFormatError(f"base image {reference}: the manifest has no config")
    return BaseImage(
        reference=reference,
        manifest=manifest,
        manifest_digest=sha256_digest(data),
        config=json.loads(client.get_blob(config_digest)),
    )


def _scan_layers(
    client: RegistryClient, base: BaseImage, progress: ProgressCallback | None
) -> tuple[str | None, int]:
    """Stream the base layers' tar headers, newest first, until the python3 on PATH is
    known; older layers are never downloaded and the last one read is cut short. Returns
    the version and the bytes downloaded."""
    layers = [
        layer
        for layer in base.manifest.get("layers") or []
        # The standard library cannot read zstd; PYTHON_VERSION or base_python is the way then.
        if "zstd" not in str(layer.get("mediaType", ""))
    ]
    total = sum(int(layer.get("size", 0)) for layer in layers)
    before = client.bytes_downloaded

    def members(layer: Mapping[str, Any]) -> Iterator[TarMember]:
        try:
            yield from tar_members(client.iter_blob(str(layer["digest"])))
        except ValueError as error:
            raise ImageFormatError(
                f"base image {base.reference}: layer {layer['digest']} is not a readable tar "
                f"({error})"
            ) from error
        finally:
            _emit(
                progress,
                "check-python",
                str(layer["digest"]),
                bytes_done=client.bytes_downloaded - before,
                bytes_total=total,
            )

    version = find_python((members(layer) for layer in reversed(layers)), path_dirs(base.config))
    return version, client.bytes_downloaded - before


def _base_python(
    client: RegistryClient,
    base: BaseImage,
    cache: PythonVersionCache,
    progress: ProgressCallback | None,
) -> BasePython:
    """What the config declares (free: it is already read), else the cached scan, else the
    layers, newest first."""
    declared = declared_python(base.config)
    if declared is not None:
        return BasePython(*declared)
    found, cached = cache.get(base.manifest_digest)
    if found:
        return BasePython(cached, "cache")
    version, bytes_read = _scan_layers(client, base, progress)
    cache.put(base.manifest_digest, version)
    return BasePython(version, "layers", bytes_read)


def _report_python(progress: ProgressCallback | None, base: BaseImage, python: BasePython) -> None:
    """One last check-python event: where the Python was found and the bytes it cost."""
    total = sum(int(layer.get("size", 0)) for layer in base.manifest.get("layers") or [])
    _emit(
        progress,
        "check-python",
        f"Python {python.version or 'none'} from {python.found_in}",
        bytes_done=python.bytes_read,
        bytes_total=total,
    )


class Builder(Protocol):
    """What makes an image: ``AppendBuilder`` (no daemon) or ``DockerBuilder``."""

    def build(self, package: CodePackage, target: str) -> BuiltImage:
        """Build ``package`` onto the base, push it to ``target``, return its reference."""
        ...


@dataclass(frozen=True)
class _BaseImageSettings:
    """What every builder needs to know about the base image and the registries it uses.

    - ``base_image``: e.g. ``registry.example.com/ml/python:3.11`` (tag or ``@sha256:``);
    - ``base_python``: the base's Python ``MAJOR.MINOR`` when you know it; skips reading the
      base's layers (otherwise found from what its config declares, ``ENV PYTHON_VERSION``,
      the ``io.kubeflow-eks.python-version`` label or its build history, else from the
      layers, and cached);
    - ``platform``: chosen when the base is a multi-platform index;
    - ``insecure_registries``: hosts allowed over plain HTTP besides loopback;
    - ``credentials``: per-host credentials overriding the ECR / auth file lookup;
    - ``cache_dir``: where base Python versions are cached (``~/.cache/fnjob``);
    - ``registry_timeout``: seconds one registry operation may wait in total, retries
      included (default ``$FNJOB_REGISTRY_TIMEOUT`` or 30); ``retry``: how retries back off;
    - ``progress``: called with ``ProgressEvent``s; never printed.
    """

    base_image: str
    base_python: str | None = None
    platform: str = "linux/amd64"
    insecure_registries: tuple[str, ...] = ()
    credentials: Mapping[str, Credentials] | None = None
    cache_dir: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    registry_timeout: float | None = None
    progress: ProgressCallback | None = None

    def __post_init__(self) -> None:
        try:
            parse_reference(self.base_image)
        except ValueError as error:
            raise ValueError(f"base_image: {error}") from error
        check_platform(self.platform)
        check_base_python(self.base_python)
        check_registry_timeout(self.registry_timeout)
        if self.registry_timeout is None:
            object.__setattr__(self, "registry_timeout", timeout_from_env())
        object.__setattr__(self, "insecure_registries", tuple(self.insecure_registries))


@dataclass(frozen=True)
class AppendBuilder(_BaseImageSettings):
    """Build by appending one code layer to ``base_image`` directly in the registry.

    Takes the base image settings (see ``_BaseImageSettings``: ``base_image``,
    ``base_python``, ``platform``, ``insecure_registries``, ``credentials``, ``cache_dir``,
    ``retry``, ``registry_timeout``, ``progress``) and ``upload_chunk_size``, the bytes per
    upload request (progress is reported per chunk).
    """

    upload_chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.upload_chunk_size < 1:
            raise ValueError(f"upload_chunk_size: {self.upload_chunk_size} must be >= 1 byte")

    def _access(self) -> _RegistryAccess:
        assert self.registry_timeout is not None  # resolved in __post_init__
        return _RegistryAccess(
            self.insecure_registries,
            self.credentials,
            self.retry,
            self.registry_timeout,
            self.upload_chunk_size,
        )

    def _cache(self) -> PythonVersionCache:
        return PythonVersionCache((self.cache_dir or default_cache_dir()) / "python-versions")

    def resolve_base(self) -> tuple[BaseImage, BasePython]:
        """The base image and its Python (``version`` None when it has none).

        Raises ``BaseImageNotFound``, ``RegistryError``, ``AuthError``, ``ImageFormatError``.
        """
        reference = parse_reference(self.base_image)
        with self._access().client(reference.host, reference.repository) as client:
            return self._resolve(client)

    def _resolve(self, client: RegistryClient) -> tuple[BaseImage, BasePython]:
        reference = parse_reference(self.base_image)
        _emit(self.progress, "resolve-base", str(reference))
        base = _resolve_base(client, reference, self.platform)
        if self.base_python is not None:
            return base, BasePython(self.base_python, "base_python")
        _emit(self.progress, "check-python", base.manifest_digest)
        python = _base_python(client, base, self._cache(), self.progress)
        _report_python(self.progress, base, python)
        return base, python

    def build(self, package: CodePackage, target: str) -> BuiltImage:
        """Append package to the base image and push it as ``target`` (``host/repo[:tag]``).

        Raises ``PythonVersionMismatch`` (before anything is pushed), ``BaseImageNotFound``,
        ``AuthError`` (401/403), ``RegistryUnreachable``, ``RegistryServerError``,
        ``ImageFormatError``. On failure no manifest is pushed, so nothing in the target
        repository references a missing blob.
        """
        target_ref = parse_reference(target)
        if target_ref.digest:
            raise ValueError(f"target: {target!r} must not contain a digest; fnjob computes it")
        base_ref = parse_reference(self.base_image)
        access = self._access()
        same_registry = base_ref.host == target_ref.host
        mount_scope = (f"repository:{base_ref.repository}:pull",) if same_registry else ()
        # One connection to the base's repository reads it and, when needed, copies from it.
        with contextlib.ExitStack() as stack:
            base_client = stack.enter_context(access.client(base_ref.host, base_ref.repository))
            base, python = self._resolve(base_client)
            check_python(package, python.version, str(base_ref))
            image = stack.enter_context(self._appended(package, base, python))
            target_client = stack.enter_context(
                access.client(target_ref.host, target_ref.repository, mount_scope, push=True)
            )
            tag = target_ref.tag or f"fnjob-{image.digest.split(':', 1)[1][:16]}"
            self._push_blobs(image, target_client, base_client, base_ref, same_registry)
            digest = target_client.put_manifest(tag, image.manifest.data, image.manifest.media_type)
            _emit(
                self.progress,
                "manifest",
                f"{target_ref.host}/{target_ref.repository}:{tag}",
                bytes_done=image.manifest.size,
                bytes_total=image.manifest.size,
            )
            uploaded = target_client.bytes_uploaded
        pinned = f"{target_ref.host}/{target_ref.repository}@{digest}"
        _emit(self.progress, "done", pinned)
        return BuiltImage(
            ref=pinned,
            tag_ref=f"{target_ref.host}/{target_ref.repository}:{tag}",
            digest=digest,
            bytes_uploaded=uploaded,
            python_version=python.version,
            python_found_in=python.found_in,
            base_bytes_read=python.bytes_read,
        )

    @contextlib.contextmanager
    def _appended(
        self, package: CodePackage, base: BaseImage, python: BasePython
    ) -> Iterator[AppendedImage]:
        """The appended image, its code layer spooled (freed on exit); requirements are
        installed into a temporary folder that lives until the layer is written."""
        with contextlib.ExitStack() as stack:
            site = None
            if package.requirements:
                assert python.version is not None  # check_python refuses a base without one
                _emit(self.progress, "install-requirements", ", ".join(package.requirements))
                workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="fnjob-site-"))
                site = vendor_requirements(
                    package.requirements, python.version, self.platform, workdir=Path(workdir)
                )
            _emit(self.progress, "build-layer", package.description)
            image = append_layer(base.manifest, base.config, package, site)
            stack.close()  # the site folder is in the layer now
            with image:
                yield image

    def _push_blobs(
        self,
        image: AppendedImage,
        target: RegistryClient,
        source: RegistryClient,
        base_ref: ImageReference,
        same_registry: bool,
    ) -> None:
        """Base layers, then the code layer and the config, in as few requests as the
        registry allows: a mount is tried first (where it works, one request both checks
        and places the blob; once refused, existence is checked first for the rest), and
        the config is not checked when the code layer was new (it names that layer)."""
        mountable = same_registry and base_ref.repository != target.repository
        for layer in image.base_layers:
            digest, size = str(layer["digest"]), int(layer.get("size", 0))
            if layer.get("urls"):
                continue  # foreign layers (Windows bases) stay where their URLs point
            if mountable:
                if target.mount_blob(base_ref.repository, digest):
                    _emit(self.progress, "mount", digest, bytes_total=size)
                    continue
                mountable = False
            if target.blob_exists(digest):
                _emit(self.progress, "skip", digest, bytes_total=size)
                continue
            self._upload(target, digest, size, functools.partial(source.iter_blob, digest))
        new_layer = self._push_new(target, image.layer.blob, check=True)
        self._push_new(target, image.config, check=not new_layer)

    def _push_new(self, target: RegistryClient, blob: Blob | SpooledBlob, *, check: bool) -> bool:
        """Upload blob unless (when ``check``) the target has it; True when uploaded."""
        if check and target.blob_exists(blob.digest):
            _emit(self.progress, "skip", blob.digest, bytes_total=blob.size)
            return False
        self._upload(target, blob.digest, blob.size, blob.chunks)
        return True

    def _upload(
        self,
        target: RegistryClient,
        digest: str,
        size: int,
        chunks: Callable[[], Iterable[bytes]],
    ) -> None:
        def acknowledged(done: int) -> None:
            _emit(self.progress, "upload", digest, bytes_done=done, bytes_total=size)

        acknowledged(0)
        target.push_blob(digest, chunks, on_progress=acknowledged)


# ---------------------------------------------------------------------------------------------
# Docker


def render_dockerfile(package: CodePackage, base_image: str) -> str:
    """The Dockerfile equivalent of the append builder's layer (used by ``DockerBuilder`` and
    by the benchmark's ``buildah bud``). The build context is ``docker_context(package)``."""
    env = runtime_env(package)
    lines = [f"FROM {base_image}", "COPY fnjob /fnjob"]
    if package.requirements:
        lines.append("RUN python3 -m pip install --no-cache-dir -r /fnjob/requirements.txt")
    for key, value in env.items():
        lines.append(f"ENV {key}={json.dumps(value)}")
    lines.append(f"WORKDIR {APP_DIR}")
    lines.append(f"ENTRYPOINT {json.dumps(list(ENTRYPOINT))}")
    lines.append("CMD []")
    return "\n".join(lines) + "\n"


def docker_context(package: CodePackage, base_image: str, out: IO[bytes]) -> str:
    """Write a tar build context to out (streamed, like the layer): the Dockerfile plus the
    ``fnjob/`` tree the layer would hold. Returns its digest."""
    tree = dict(image_tree(package))
    tree["/Dockerfile"] = render_dockerfile(package, base_image).encode("utf-8")
    return write_layer_tar(out, tree, image_links(package))


_PUSHED_DIGEST = re.compile(r"digest: (sha256:[a-f0-9]{64})")


@dataclass(frozen=True)
class DockerBuilder(_BaseImageSettings):
    """Build with a Docker-compatible daemon from a generated Dockerfile, then push.

    Takes the base image settings like ``AppendBuilder`` (its Python is checked through the
    registry first); ``docker_host`` overrides ``DOCKER_HOST`` and ``timeout`` is the
    daemon's.
    """

    docker_host: str | None = None
    timeout: float = 600.0

    def _client(self) -> Any:
        import docker  # the docker SDK is only needed when this builder is used

        try:
            if self.docker_host:
                client = docker.DockerClient(base_url=self.docker_host, timeout=int(self.timeout))
            else:
                client = docker.from_env(timeout=int(self.timeout))
            client.ping()
        except Exception as error:  # docker raises DockerException, requests errors, OSError
            where = self.docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
            raise DockerDaemonUnavailable(
                f"no Docker-compatible daemon answers at {where}: {error}; use the append "
                "builder, which needs no daemon"
            ) from error
        return client

    def build(self, package: CodePackage, target: str) -> BuiltImage:
        """Check the base's Python, build from ``render_dockerfile`` and push to target.

        Raises ``DockerDaemonUnavailable`` (checked first), ``PythonVersionMismatch``,
        ``BaseImageNotFound``, ``DockerBuildFailed``.
        """
        target_ref = parse_reference(target)
        client = self._client()
        appender = AppendBuilder(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(_BaseImageSettings)}
        )
        _, python = appender.resolve_base()
        check_python(package, python.version, self.base_image)
        _emit(self.progress, "build-layer", package.description)
        context = tempfile.TemporaryFile(prefix="fnjob-context-")  # noqa: SIM115
        with context:
            return self._build_and_push(client, package, target_ref, python, context)

    def _build_and_push(
        self,
        client: Any,
        package: CodePackage,
        target_ref: ImageReference,
        python: BasePython,
        context: IO[bytes],
    ) -> BuiltImage:
        context_digest = docker_context(package, self.base_image, context)
        context.seek(0)
        tag = target_ref.tag or "fnjob-" + context_digest.split(":", 1)[1][:16]
        repository = f"{target_ref.host}/{target_ref.repository}"
        log: list[str] = []
        try:
            for chunk in client.api.build(
                fileobj=context,
                custom_context=True,
                tag=f"{repository}:{tag}",
                platform=self.platform,
                decode=True,
                rm=True,
            ):
                if "stream" in chunk:
                    log.append(str(chunk["stream"]).rstrip())
                if "error" in chunk:
                    raise DockerBuildFailed(f"docker build failed: {chunk['error']}", tuple(log))
            credentials = find_credentials(
                target_ref.host, target_ref.repository, explicit=self.credentials
            )
            auth_config = (
                {"username": credentials.username, "password": credentials.password}
                if credentials.username
                else None
            )
            digest = ""
            for chunk in client.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=auth_config
            ):
                if "error" in chunk:
                    raise DockerBuildFailed(f"docker push failed: {chunk['error']}", tuple(log))
                # Docker reports the digest in "aux"; podman's compatible API only in "status".
                digest = str((chunk.get("aux") or {}).get("Digest", digest))
                found = _PUSHED_DIGEST.search(str(chunk.get("status", "")))
                digest = found.group(1) if found else digest
        except DockerBuildFailed:
            raise
        except Exception as error:
            raise DockerBuildFailed(f"docker build/push failed: {error}", tuple(log)) from error
        if not digest:
            raise DockerBuildFailed("docker push reported no digest", tuple(log))
        pinned = f"{repository}@{digest}"
        _emit(self.progress, "done", pinned)
        return BuiltImage(
            ref=pinned,
            tag_ref=f"{repository}:{tag}",
            digest=digest,
            bytes_uploaded=None,
            python_version=python.version,
            python_found_in=python.found_in,
            base_bytes_read=python.bytes_read,
        )


# ``Build(builder=...)``: the builder each name stands for (``fnjob.options.BUILDERS``).
BUILDER_TYPES: Mapping[str, type[AppendBuilder] | type[DockerBuilder]] = {
    "append": AppendBuilder,
    "docker": DockerBuilder,
}
