"""Registry I/O on the OCI distribution API (python-dxf underneath).

Errors are typed: ``RegistryUnreachable`` (connection refused/reset, timeouts),
``auth.AuthError`` (401/403), ``ManifestNotFound`` (404 for a manifest), ``RegistryServerError``
(5xx and other unexpected answers). Only idempotent requests are retried, with exponential
backoff: GET/HEAD, and blob uploads (content-addressed, so sending a blob twice is harmless).
Manifest PUTs and mounts are not retried.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import dxf
import dxf.exceptions
import requests

from fnjob.auth import (
    AuthError,
    Credentials,
    fetch_bearer_token,
    parse_challenge,
    uses_plain_http,
)
from fnjob.errors import FnJobError
from fnjob.image import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES

__all__ = [
    "BlobNotFound",
    "ImageReference",
    "ManifestNotFound",
    "RegistryClient",
    "RegistryError",
    "RegistryServerError",
    "RegistryUnreachable",
    "RetryPolicy",
    "parse_reference",
]

_T = TypeVar("_T")
_DOCKER_HUB = "registry-1.docker.io"
_REPOSITORY = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


class RegistryError(FnJobError):
    """A registry operation failed. ``host`` names the registry."""

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.host = host


class RegistryUnreachable(RegistryError):
    """The registry did not answer (refused, reset, timed out, DNS, TLS)."""


class RegistryServerError(RegistryError):
    """The registry answered with an error status (``status``) after any retries."""

    def __init__(self, message: str, *, host: str, status: int) -> None:
        super().__init__(message, host=host)
        self.status = status


class ManifestNotFound(RegistryError):
    """The repository has no manifest for the tag or digest (the builder reports a missing
    base image as ``build.BaseImageNotFound``)."""


class BlobNotFound(RegistryError):
    """The repository has no blob with that digest."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently idempotent requests are retried: ``attempts`` in total,
    waiting ``first_delay`` seconds, doubling up to ``max_delay``."""

    attempts: int = 4
    first_delay: float = 0.25
    max_delay: float = 4.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts: {self.attempts} must be >= 1")
        if self.first_delay < 0 or self.max_delay < self.first_delay:
            raise ValueError(
                f"first_delay/max_delay: {self.first_delay}/{self.max_delay} must satisfy "
                "0 <= first_delay <= max_delay"
            )

    def delays(self) -> Iterator[float]:
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay)


@dataclass(frozen=True)
class ImageReference:
    """``host/repository[:tag][@digest]``; Docker Hub short names are expanded."""

    host: str
    repository: str
    tag: str = ""
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host: must not be empty")
        if not _REPOSITORY.match(self.repository):
            raise ValueError(
                f"repository: {self.repository!r} must be lower-case path components "
                "(letters, digits, '.', '_', '-') separated by '/'"
            )
        if self.tag and not _TAG.match(self.tag):
            raise ValueError(f"tag: {self.tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
        if self.digest and not _DIGEST.match(self.digest):
            raise ValueError(f"digest: {self.digest!r} must be 'sha256:' and 64 hex digits")

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag (or latest)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference; ``python:3.11`` means Docker Hub's ``library/python``.

    The first path component is the registry host when it has a ``.`` or ``:`` or is
    ``localhost``. Raises ``ValueError`` naming what is wrong.
    """
    rest, _, digest = text.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, path = first, remainder
    else:
        host, path = _DOCKER_HUB, rest
        if "/" not in path:
            path = f"library/{path}"
    repository, tag = path, ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = path.rpartition(":")
    try:
        return ImageReference(host=host, repository=repository, tag=tag, digest=digest)
    except ValueError as error:
        raise ValueError(f"image reference {text!r}: {error}") from error


class _DXF(dxf.DXF):
    """dxf.DXF that can carry a basic-auth header over plain HTTP (dxf's own authenticate()
    refuses insecure registries, which rules out a password-protected loopback registry)."""

    def set_authorization(self, value: str) -> None:
        self._headers = {"Authorization": value}


class RegistryClient:
    """One repository on one registry, with credentials, retries and an upload byte count.

    ``scopes`` are extra token scopes to ask for (e.g. pull on the repository a layer is
    mounted from); ``push=False`` asks for pull access only. ``bytes_uploaded`` counts every
    blob and manifest byte sent.
    """

    def __init__(
        self,
        host: str,
        repository: str,
        *,
        credentials: Credentials,
        insecure_registries: Iterable[str] = (),
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        scopes: Iterable[str] = (),
        push: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host = host
        self.repository = repository
        self.bytes_uploaded = 0
        self._credentials = credentials
        self._insecure_registries = tuple(insecure_registries)
        self._plain_http = uses_plain_http(host, self._insecure_registries)
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._sleep = sleep
        # Ask only for what is needed: some token servers refuse a push scope outright.
        actions = "pull,push" if push else "pull"
        self._scopes = [f"repository:{repository}:{actions}", *scopes]
        self._dxf = _DXF(
            host, repository, auth=self._authenticate, insecure=self._plain_http, timeout=timeout
        )
        # Entering dxf's context gives all requests of this client one keep-alive session.
        self._dxf.__enter__()

    def close(self) -> None:
        self._dxf.__exit__(None, None, None)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth ---------------------------------------------------------------------------------

    def _authenticate(self, client: dxf.DXFBase, response: requests.Response) -> None:
        """dxf's hook on a 401: answer the registry's challenge, basic or bearer."""
        assert isinstance(client, _DXF)
        header = response.headers.get("WWW-Authenticate", "")
        challenge = parse_challenge(header) if header else None
        if challenge is None or challenge.scheme == "basic":
            basic = self._credentials.basic_header()
            if basic is not None:
                client.set_authorization(basic)
            return
        if challenge.scheme == "bearer":
            client.token = fetch_bearer_token(
                challenge,
                self._credentials,
                self._scopes,
                host=self.host,
                insecure_registries=self._insecure_registries,
                timeout=self._timeout,
            )

    # -- error mapping and retries ------------------------------------------------------------

    def _auth_error(self, status: int, what: str) -> AuthError:
        source = self._credentials.source
        if status == 401:
            hint = (
                "no credentials were found (log in with docker/podman login, or set DOCKER_CONFIG)"
                if self._credentials.anonymous
                else f"the credentials from {source} were refused"
            )
            return AuthError(
                f"{self.host}: {what}: authentication required; {hint}", host=self.host, status=401
            )
        return AuthError(
            f"{self.host}: {what}: access denied (403) for {source} credentials on "
            f"repository {self.repository!r}",
            host=self.host,
            status=status,
        )

    def _call(self, what: str, operation: Callable[[], _T], *, retry: bool) -> _T:
        """Run operation, mapping failures to typed errors; retry transient ones (connection
        errors, 429, 5xx) with backoff when retry is True. A 404 is re-raised as HTTPError
        for the caller to name what was missing."""
        delays = self._retry.delays() if retry else iter(())
        while True:
            cause: Exception
            try:
                return operation()
            except requests.HTTPError as error:
                status = error.response.status_code if error.response is not None else 0
                if status in (401, 403):
                    raise self._auth_error(status, what) from error
                if status == 404:
                    raise
                failure: RegistryError = RegistryServerError(
                    f"{self.host}: {what}: the registry answered {status}"
                    + _body_hint(error.response),
                    host=self.host,
                    status=status,
                )
                transient = status == 429 or status >= 500
                cause = error
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as error:
                failure = RegistryUnreachable(
                    f"{self.host}: {what}: registry unreachable ({_short(error)})",
                    host=self.host,
                )
                transient = True
                cause = error
            except dxf.exceptions.DXFUnauthorizedError as error:
                raise self._auth_error(401, what) from error
            except dxf.exceptions.DXFError as error:
                raise RegistryServerError(
                    f"{self.host}: {what}: {error}", host=self.host, status=0
                ) from error
            delay = next(delays, None)
            if not transient or delay is None:
                raise failure from cause
            self._sleep(delay)

    # -- manifests ----------------------------------------------------------------------------

    def get_manifest(self, reference: str) -> tuple[bytes, str]:
        """The raw manifest (or index) bytes and media type. Raises ``ManifestNotFound``."""

        def fetch() -> tuple[bytes, str]:
            _, response = self._dxf.get_manifest_and_response(reference)
            return response.content, response.headers.get("Content-Type", "").split(";")[0]

        try:
            data, media_type = self._call(f"read manifest {reference}", fetch, retry=True)
        except requests.HTTPError as error:
            raise ManifestNotFound(
                f"{self.host}/{self.repository}: no manifest {reference!r}", host=self.host
            ) from error
        if reference.startswith("sha256:") and _digest(data) != reference:
            raise RegistryServerError(
                f"{self.host}: manifest {reference} arrived with digest {_digest(data)}",
                host=self.host,
                status=0,
            )
        if media_type not in (*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES):
            # Some registries send application/json; the document's own field decides then.
            media_type = _media_type_field(data) or media_type
        return data, media_type

    def manifest_exists(self, reference: str) -> bool:
        def probe() -> bool:
            try:
                self._dxf.head_manifest_and_response(reference)
            except requests.HTTPError as error:
                if error.response is not None and error.response.status_code == 404:
                    return False
                raise
            return True

        return self._call(f"check manifest {reference}", probe, retry=True)

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> str:
        """Push a manifest under tag; returns its digest. Not retried: callers push it only
        after every blob it references is in the repository."""

        if _media_type_field(data) != media_type:
            raise ValueError(f"media_type: {media_type!r} differs from the manifest's mediaType")

        def put() -> None:
            self._dxf.set_manifest(tag, data.decode("utf-8"))

        try:
            self._call(f"push manifest {tag}", put, retry=False)
        except requests.HTTPError as error:
            raise RegistryServerError(
                f"{self.host}: push manifest {tag}: the registry answered 404"
                + _body_hint(error.response),
                host=self.host,
                status=404,
            ) from error
        self.bytes_uploaded += len(data)
        return _digest(data)

    # -- blobs --------------------------------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        def probe() -> bool:
            try:
                self._dxf.blob_size(digest)
            except requests.HTTPError as error:
                if error.response is not None and error.response.status_code == 404:
                    return False
                raise
            return True

        return self._call(f"check blob {digest[:19]}", probe, retry=True)

    def iter_blob(self, digest: str) -> Iterator[bytes]:
        """Stream a blob (digest checked at the end by dxf). Raises ``BlobNotFound``."""
        try:
            chunks = cast(
                Iterable[bytes],
                self._call(
                    f"read blob {digest[:19]}",
                    lambda: self._dxf.pull_blob(digest, chunk_size=1 << 20),
                    retry=True,
                ),
            )
        except requests.HTTPError as error:
            raise BlobNotFound(
                f"{self.host}/{self.repository}: no blob {digest}", host=self.host
            ) from error
        try:
            yield from chunks
        except (requests.ConnectionError, requests.Timeout) as error:
            raise RegistryUnreachable(
                f"{self.host}: read blob {digest[:19]}: connection lost ({_short(error)})",
                host=self.host,
            ) from error
        except dxf.exceptions.DXFDigestMismatchError as error:
            raise RegistryServerError(
                f"{self.host}: blob {digest} arrived corrupted ({error})", host=self.host, status=0
            ) from error

    def get_blob(self, digest: str) -> bytes:
        return b"".join(self.iter_blob(digest))

    def mount_blob(self, from_repository: str, digest: str) -> bool:
        """Ask the registry to link a blob from another repository; False when it refuses
        (then the caller copies the bytes)."""
        try:
            self._call(
                f"mount blob {digest[:19]} from {from_repository}",
                lambda: self._dxf.mount_blob(from_repository, digest),
                retry=False,
            )
        except (RegistryServerError, requests.HTTPError):
            # A refusal (202 "upload started instead", 404, 5xx) means: copy the bytes.
            return False
        return True

    def push_blob(
        self,
        digest: str,
        chunks: Callable[[], Iterable[bytes]],
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Upload a blob unless the repository has it. ``chunks`` makes a fresh iterator per
        attempt (uploads are retried). ``on_bytes`` is told each chunk's size as it is sent."""

        def counted() -> Iterator[bytes]:
            for chunk in chunks():
                self.bytes_uploaded += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                yield chunk

        def upload() -> None:
            # Callers check existence first (to report "skip"); no second HEAD here.
            self._dxf.push_blob(data=counted(), digest=digest, check_exists=False)

        try:
            self._call(f"upload blob {digest[:19]}", upload, retry=True)
        except requests.HTTPError as error:
            raise RegistryServerError(
                f"{self.host}: upload blob {digest[:19]}: the registry answered 404",
                host=self.host,
                status=404,
            ) from error


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _media_type_field(data: bytes) -> str:
    try:
        document: Any = json.loads(data)
    except ValueError:
        return ""
    return str(document.get("mediaType", "")) if isinstance(document, dict) else ""


def _short(error: BaseException) -> str:
    text = str(error)
    return text if len(text) < 160 else text[:157] + "..."


def _body_hint(response: requests.Response | None) -> str:
    if response is None:
        return ""
    body = response.text.strip()
    return f": {body[:200]}" if body else ""
