"""Registry I/O on the OCI distribution API, over ``requests``.

Errors are typed: ``RegistryUnreachable`` (connection refused/reset, no answer within the
timeout), ``auth.AuthError`` (401/403), ``ManifestNotFound`` / ``BlobNotFound`` (404),
``RegistryServerError`` (5xx and other unexpected answers).

Rules this client keeps:

- **Credentials go only to the registry host.** Basic credentials and bearer tokens are sent
  to the host this client was made for, only after it challenged for them; never to an
  upload ``Location`` or a redirect on another host (blob storage such as S3 authenticates
  with its own signed URL).
- **Plain HTTP only for loopback and hosts listed as insecure**, for every URL it is sent to
  (the registry, an upload ``Location``, a redirect); anything else must be HTTPS.
- **Bounded waits.** ``timeout`` is how long one operation may wait for the registry in
  total, retries included (connect, each answer, each chunk of a stream); a registry that
  accepts connections and never answers gives ``RegistryUnreachable`` after it. Only
  idempotent requests are retried, with exponential backoff: GET/HEAD and blob upload chunks
  (content-addressed); manifest PUTs and mounts are not.
- **Uploads are chunked** (``PATCH`` with ``Content-Range``), the last chunk going with the
  closing ``PUT``: a blob that fits one chunk is one ``POST`` and one ``PUT`` (a monolithic
  upload). Progress is the byte count the registry acknowledged (its ``Range`` header), so a
  retried chunk is not counted twice and 100 % means the registry has the bytes. A failed
  chunk resumes where the registry's upload status says it stopped.
- **Reads stream** and can stop early: closing a blob iterator closes the connection, so a
  caller that has what it needs does not download the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from fnjob.errors import FnJobError
from fnjob.image.auth import (
    AuthError,
    Credentials,
    fetch_bearer_token,
    parse_challenge,
    uses_plain_http,
)
from fnjob.image.layer import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES

_T = TypeVar("_T")

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TIMEOUT",
    "TIMEOUT_ENV_VAR",
    "BlobNotFound",
    "ImageReference",
    "ManifestNotFound",
    "RegistryClient",
    "RegistryError",
    "RegistryServerError",
    "RegistryUnreachable",
    "RetryPolicy",
    "parse_reference",
    "timeout_from_env",
]

_DOCKER_HUB = "registry-1.docker.io"
_REPOSITORY = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_RANGE = re.compile(r"^(?:bytes=)?0-(\d+)$")

# Seconds one registry operation may wait in total (retries included). Long enough for a
# registry under load, short enough that a hung one is noticed in half a minute, not 8.
DEFAULT_TIMEOUT = 30.0
TIMEOUT_ENV_VAR = "FNJOB_REGISTRY_TIMEOUT"
# Upload chunk size: ECR refuses chunks under 5 MiB (except the last).
DEFAULT_CHUNK_SIZE = 8 << 20
_MAX_REDIRECTS = 5
_MANIFEST_ACCEPT = ", ".join((*MANIFEST_MEDIA_TYPES, *INDEX_MEDIA_TYPES))


def timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """``$FNJOB_REGISTRY_TIMEOUT`` in seconds, else ``DEFAULT_TIMEOUT``. Raises ``ValueError``
    naming the variable when it is not a positive number."""
    environ = os.environ if env is None else env
    text = environ.get(TIMEOUT_ENV_VAR, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV_VAR}={text!r} must be a number of seconds > 0")
    return value


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


class _Retryable(Exception):
    """A failure worth retrying (connection error, 429, 5xx); carries the public error."""

    def __init__(self, error: RegistryError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Deadline:
    end: float
    clock: Callable[[], float]

    def remaining(self) -> float:
        return self.end - self.clock()


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
    try:
        body = response.text.strip()
    except (requests.RequestException, UnicodeDecodeError):
        return ""
    return f": {body[:200]}" if body else ""


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.lower()


def _pieces(chunks: Iterable[bytes], size: int, skip: int) -> Iterator[bytes]:
    """Regroup chunks into pieces of ``size`` bytes (the last may be shorter), after
    dropping the first ``skip`` bytes (already acknowledged by the registry)."""
    buffer = bytearray()
    for chunk in chunks:
        if skip:
            dropped = min(skip, len(chunk))
            chunk = chunk[dropped:]
            skip -= dropped
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class RegistryClient:
    """One repository on one registry, with credentials, bounded retries and byte counts.

    ``scopes`` are extra token scopes to ask for (e.g. pull on the repository a layer is
    mounted from); ``push=False`` asks for pull access only. ``timeout`` bounds each
    operation (see the module docstring); ``chunk_size`` is the upload chunk. Counters:
    ``bytes_uploaded`` (every blob and manifest byte sent, retries included) and
    ``bytes_downloaded`` (blob bytes read).
    """

    def __init__(
        self,
        host: str,
        repository: str,
        *,
        credentials: Credentials,
        insecure_registries: Iterable[str] = (),
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        scopes: Iterable[str] = (),
        push: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout: {timeout} must be > 0 seconds")
        if chunk_size < 1:
            raise ValueError(f"chunk_size: {chunk_size} must be >= 1 byte")
        self.host = host
        self.repository = repository
        self.bytes_uploaded = 0
        self.bytes_downloaded = 0
        self._credentials = credentials
        self._insecure_registries = tuple(insecure_registries)
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._chunk_size = chunk_size
        self._sleep = sleep
        self._clock = clock
        # Ask only for what is needed: some token servers refuse a push scope outright.
        actions = "pull,push" if push else "pull"
        self._scopes = [f"repository:{repository}:{actions}", *scopes]
        scheme = "http" if uses_plain_http(host, self._insecure_registries) else "https"
        self._base = f"{scheme}://{host}/v2/{repository}/"
        self._authorization: str | None = None
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------

    def _deadline(self) -> _Deadline:
        return _Deadline(self._clock() + self._timeout, self._clock)

    def _check_url(self, url: str, what: str) -> None:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return
        if parts.scheme == "http" and uses_plain_http(parts.netloc, self._insecure_registries):
            return
        raise RegistryServerError(
            f"{self.host}: {what}: the registry sent fnjob to {url!r}; refusing plain HTTP to a "
            "host that is neither loopback nor listed in insecure_registries",
            host=self.host,
            status=0,
        )

    def _authenticate(self, response: requests.Response, deadline: _Deadline) -> bool:
        """Answer the registry's challenge (basic or bearer); True when the Authorization to
        send changed (then the request is worth repeating)."""
        header = response.headers.get("WWW-Authenticate", "")
        challenge = parse_challenge(header) if header else None
        if challenge is None or challenge.scheme == "basic":
            authorization = self._credentials.basic_header()
            if authorization is None:
                return False
        elif challenge.scheme == "bearer":
            token = fetch_bearer_token(
                challenge,
                self._credentials,
                self._scopes,
                host=self.host,
                insecure_registries=self._insecure_registries,
                session=self._session,
                timeout=max(deadline.remaining(), 0.001),
            )
            authorization = f"Bearer {token}"
        else:
            return False
        changed = authorization != self._authorization
        self._authorization = authorization
        return changed

    def _send(
        self,
        method: str,
        url: str,
        what: str,
        deadline: _Deadline,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        stream: bool = False,
        follow_redirects: bool = True,
    ) -> requests.Response:
        """One request: credentials only for this registry's host, redirects followed by
        hand (each hop checked), a 401 from the registry answered once. Raises typed
        errors; transient ones wrapped in ``_Retryable``. 404 and other statuses are
        returned for the caller to judge."""
        authenticated = False
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_url(url, what)
            same_host = _netloc(url) == self.host.lower()
            sent = dict(headers or {})
            if same_host and self._authorization:
                sent["Authorization"] = self._authorization
            remaining = deadline.remaining()
            if remaining <= 0:
                raise RegistryUnreachable(self._no_answer(what), host=self.host)
            # Streams wait up to the full timeout for each chunk once the answer started.
            timeout = (remaining, self._timeout if stream else remaining)
            try:
                response = self._session.request(
                    method,
                    url,
                    headers=sent,
                    data=data,
                    stream=stream,
                    timeout=timeout,
                    allow_redirects=False,
                )
            except requests.Timeout as error:
                raise _Retryable(
                    RegistryUnreachable(self._no_answer(what), host=self.host)
                ) from error
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
                raise _Retryable(
                    RegistryUnreachable(
                        f"{self.host}: {what}: registry unreachable ({_short(error)})",
                        host=self.host,
                    )
                ) from error
            if data is not None:
                self.bytes_uploaded += len(data)
            status = response.status_code
            if status == 401 and same_host and not authenticated:
                authenticated = True
                if self._authenticate(response, deadline):
                    response.close()
                    continue
            if status in (301, 302, 303, 307, 308) and follow_redirects:
                location = response.headers.get("Location")
                if location:
                    response.close()
                    url = urljoin(url, location)
                    if status == 303:
                        method, data = "GET", None
                    continue
            self._raise_for_status(response, what, url)
            return response
        raise RegistryServerError(
            f"{self.host}: {what}: more than {_MAX_REDIRECTS} redirects", host=self.host, status=0
        )

    def _no_answer(self, what: str) -> str:
        return (
            f"{self.host}: {what}: no answer within {self._timeout:g} s (registry timeout; "
            f"set registry_timeout or {TIMEOUT_ENV_VAR})"
        )

    def _raise_for_status(self, response: requests.Response, what: str, url: str) -> None:
        status = response.status_code
        if status < 400 or status == 404:
            return
        if status in (401, 403):
            response.close()
            raise self._auth_error(status, what, _netloc(url))
        error = RegistryServerError(
            f"{self.host}: {what}: the registry answered {status}" + _body_hint(response),
            host=self.host,
            status=status,
        )
        response.close()
        if status == 429 or status >= 500:
            raise _Retryable(error)
        raise error

    def _auth_error(self, status: int, what: str, netloc: str) -> AuthError:
        if netloc != self.host.lower():
            return AuthError(
                f"{netloc}: {what}: refused ({status}); fnjob sends the credentials for "
                f"{self.host} only to {self.host}, not to other hosts it is sent to",
                host=netloc,
                status=status,
            )
        source = self._credentials.source
        if status == 401:
            hint = (
                "no credentials were found (log in with docker login or podman login, or "
                "pass credentials=)"
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

    def _operation(self, what: str, attempt: Callable[[_Deadline], _T], *, retry: bool) -> _T:
        """Run attempt until it succeeds, retrying transient failures with backoff while the
        operation's deadline allows; the last failure is raised as its typed error."""
        deadline = self._deadline()
        delays = self._retry.delays() if retry else iter(())
        while True:
            try:
                return attempt(deadline)
            except _Retryable as failure:
                delay = next(delays, None)
                if delay is None or deadline.remaining() <= delay:
                    raise failure.error from failure.__cause__
                self._sleep(delay)

    def _url(self, path: str) -> str:
        return self._base + path

    # -- manifests ----------------------------------------------------------------------------

    def get_manifest(self, reference: str) -> tuple[bytes, str]:
        """The raw manifest (or index) bytes and media type. Raises ``ManifestNotFound``."""
        what = f"read manifest {reference}"

        def attempt(deadline: _Deadline) -> tuple[int, bytes, str]:
            response = self._send(
                "GET",
                self._url(f"manifests/{reference}"),
                what,
                deadline,
                headers={"Accept": _MANIFEST_ACCEPT},
            )
            with response:
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                return response.status_code, response.content, content_type

        status, data, media_type = self._operation(what, attempt, retry=True)
        if status == 404:
            raise ManifestNotFound(
                f"{self.host}/{self.repository}: no manifest {reference!r}", host=self.host
            )
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
        what = f"check manifest {reference}"

        def attempt(deadline: _Deadline) -> bool:
            url = self._url(f"manifests/{reference}")
            headers = {"Accept": _MANIFEST_ACCEPT}
            with self._send("HEAD", url, what, deadline, headers=headers) as response:
                return response.status_code != 404

        return self._operation(what, attempt, retry=True)

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> str:
        """Push a manifest under tag; returns its digest. Not retried: callers push it only
        after every blob it references is in the repository."""
        if _media_type_field(data) != media_type:
            raise ValueError(f"media_type: {media_type!r} differs from the manifest's mediaType")
        what = f"push manifest {tag}"

        def attempt(deadline: _Deadline) -> None:
            url = self._url(f"manifests/{tag}")
            headers = {"Content-Type": media_type}
            with self._send("PUT", url, what, deadline, headers=headers, data=data) as response:
                if response.status_code == 404:
                    raise RegistryServerError(
                        f"{self.host}: {what}: the registry answered 404" + _body_hint(response),
                        host=self.host,
                        status=404,
                    )

        self._operation(what, attempt, retry=False)
        return _digest(data)

    # -- blobs --------------------------------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        what = f"check blob {digest[:19]}"

        def attempt(deadline: _Deadline) -> bool:
            # A redirect (to blob storage) also means the blob exists; storage URLs are
            # often signed for GET only, so they are not followed.
            url = self._url(f"blobs/{digest}")
            with self._send("HEAD", url, what, deadline, follow_redirects=False) as response:
                return response.status_code != 404

        return self._operation(what, attempt, retry=True)

    def iter_blob(self, digest: str) -> Iterator[bytes]:
        """Stream a blob; its digest is checked at the end. Closing the iterator early stops
        the download. Raises ``BlobNotFound``, ``RegistryUnreachable`` (connection lost or no
        bytes within the timeout), ``RegistryServerError`` (digest mismatch)."""
        what = f"read blob {digest[:19]}"
        response = self._operation(
            what,
            lambda deadline: self._send(
                "GET", self._url(f"blobs/{digest}"), what, deadline, stream=True
            ),
            retry=True,
        )
        try:
            if response.status_code == 404:
                raise BlobNotFound(
                    f"{self.host}/{self.repository}: no blob {digest}", host=self.host
                )
            hasher = hashlib.sha256()
            try:
                for chunk in response.iter_content(1 << 20):
                    self.bytes_downloaded += len(chunk)
                    hasher.update(chunk)
                    yield chunk
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as error:
                raise RegistryUnreachable(
                    f"{self.host}: {what}: connection lost or no data within "
                    f"{self._timeout:g} s ({_short(error)})",
                    host=self.host,
                ) from error
            if "sha256:" + hasher.hexdigest() != digest:
                raise RegistryServerError(
                    f"{self.host}: blob {digest} arrived corrupted (its bytes hash to "
                    f"sha256:{hasher.hexdigest()})",
                    host=self.host,
                    status=0,
                )
        finally:
            response.close()

    def get_blob(self, digest: str) -> bytes:
        return b"".join(self.iter_blob(digest))

    def mount_blob(self, from_repository: str, digest: str) -> bool:
        """Ask the registry to link a blob from another repository; False when it refuses
        (then the caller copies the bytes)."""
        what = f"mount blob {digest[:19]} from {from_repository}"
        query = urlencode({"mount": digest, "from": from_repository})

        def attempt(deadline: _Deadline) -> bool:
            url = self._url(f"blobs/uploads/?{query}")
            with self._send("POST", url, what, deadline) as response:
                if response.status_code == 201:
                    return True
                location = response.headers.get("Location")
            if location:
                # 202: the registry opened an upload instead; close it (best effort).
                with contextlib.suppress(FnJobError, _Retryable):
                    self._send("DELETE", urljoin(url, location), what, deadline).close()
            return False

        try:
            return self._operation(what, attempt, retry=False)
        except RegistryServerError:
            return False

    def push_blob(
        self,
        digest: str,
        chunks: Callable[[], Iterable[bytes]],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload a blob: ``POST``, a ``PATCH`` per chunk but the last, and the last chunk
        with the closing ``PUT`` (one ``PUT`` for a blob of one chunk). ``chunks`` makes a
        fresh iterator of the blob's bytes (called again to resume after a failure).
        ``on_progress`` is told the number of bytes the registry has acknowledged, after
        each chunk. Callers check existence first (to report "skip")."""
        what = f"upload blob {digest[:19]}"
        report = on_progress or (lambda _done: None)
        delays = self._retry.delays()
        location = self._start_upload(what)
        offset = 0
        while True:
            try:
                pieces = _pieces(chunks(), self._chunk_size, offset)
                piece = next(pieces, b"")
                for following in pieces:
                    location, offset = self._send_chunk(what, location, piece, offset)
                    report(offset)
                    piece = following
                self._commit(what, location, digest, piece)
                report(offset + len(piece))
                return
            except _Retryable as failure:
                delay = next(delays, None)
                if delay is None:
                    raise failure.error from failure.__cause__
                self._sleep(delay)
            # Resume where the registry says the upload stands, or start a new one.
            if self.blob_exists(digest):
                report(offset)
                return
            acknowledged = self._upload_status(what, location)
            if acknowledged is None:
                location, offset = self._start_upload(what), 0
            else:
                offset = acknowledged
            report(offset)

    def _start_upload(self, what: str) -> str:
        def attempt(deadline: _Deadline) -> str:
            url = self._url("blobs/uploads/")
            with self._send("POST", url, what, deadline) as response:
                location = response.headers.get("Location")
                if response.status_code != 202 or not location:
                    raise RegistryServerError(
                        f"{self.host}: {what}: starting the upload answered "
                        f"{response.status_code}" + _body_hint(response),
                        host=self.host,
                        status=response.status_code,
                    )
                return urljoin(url, location)

        return self._operation(what, attempt, retry=True)

    def _send_chunk(self, what: str, location: str, piece: bytes, offset: int) -> tuple[str, int]:
        """PATCH one chunk; returns the next upload location and the acknowledged size."""
        end = offset + len(piece)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{end - 1}",
        }
        response = self._send(
            "PATCH", location, what, self._deadline(), headers=headers, data=piece
        )
        with response:
            if response.status_code != 202:
                raise RegistryServerError(
                    f"{self.host}: {what}: chunk {offset}-{end - 1} answered "
                    f"{response.status_code}" + _body_hint(response),
                    host=self.host,
                    status=response.status_code,
                )
            next_location = urljoin(location, response.headers.get("Location") or location)
            match = _RANGE.match(response.headers.get("Range", ""))
        acknowledged = int(match.group(1)) + 1 if match else end
        if acknowledged != end:
            raise _Retryable(
                RegistryServerError(
                    f"{self.host}: {what}: the registry acknowledged {acknowledged} of {end} bytes",
                    host=self.host,
                    status=0,
                )
            )
        return next_location, acknowledged

    def _commit(self, what: str, location: str, digest: str, piece: bytes) -> None:
        """The closing ``PUT``, carrying the last chunk."""
        parts = urlsplit(location)
        query = f"{parts.query}&" if parts.query else ""
        url = parts._replace(query=query + urlencode({"digest": digest})).geturl()
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(piece))}
        response = self._send("PUT", url, what, self._deadline(), headers=headers, data=piece)
        with response:
            if response.status_code != 201:
                raise RegistryServerError(
                    f"{self.host}: {what}: committing the upload answered "
                    f"{response.status_code}" + _body_hint(response),
                    host=self.host,
                    status=response.status_code,
                )

    def _upload_status(self, what: str, location: str) -> int | None:
        """Bytes the registry holds for an upload in progress, None when it lost it."""
        try:
            response = self._send("GET", location, what, self._deadline())
        except _Retryable:
            return None
        with response:
            if response.status_code not in (200, 204):
                return None
            match = _RANGE.match(response.headers.get("Range", ""))
        last = int(match.group(1)) if match else 0
        # "0-0" means 0 or 1 bytes depending on the registry's version: start afresh then.
        return last + 1 if last > 0 else None
