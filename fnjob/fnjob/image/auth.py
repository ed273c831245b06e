"""Where registry credentials come from, and the bearer-token flow.

Order, for a registry host:

1. credentials passed explicitly (``credentials={"host": Credentials(...)}``);
2. for an Amazon ECR host (``<account>.dkr.ecr.<region>.amazonaws.com``): a token from
   ``boto3``'s ``ecr.get_authorization_token`` (boto3 is imported only then);
3. the auth files ``podman login``, ``skopeo login`` and ``docker login`` write, read in the
   order containers-auth.json(5) documents, the first one with an entry for the registry
   winning: ``$REGISTRY_AUTH_FILE`` (else ``$XDG_RUNTIME_DIR/containers/auth.json``),
   ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config/containers/auth.json``), the
   Docker config ``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json``), ``~/.dockercfg``.
   Each may hold ``credHelpers``/``credsStore`` (``docker-credential-<name> get``) or
   ``auths`` entries (``auth``, ``username``/``password``, ``identitytoken``,
   ``registrytoken``) keyed by host or by ``host/namespace`` (the most specific wins);
4. anonymous.

Credentials are sent as HTTP basic auth when the registry asks for basic, or exchanged for a
bearer token at the realm the registry names. Plain HTTP is used only for loopback hosts
(``localhost``, ``127.0.0.0/8``, ``::1``) and hosts the caller marks insecure; a token realm
on plain HTTP is refused elsewhere.
"""

from __future__ import annotations

import base64
import importlib
import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from fnjob.errors import FnJobError

__all__ = [
    "AuthError",
    "Challenge",
    "Credentials",
    "auth_files",
    "credentials_from_auth_file",
    "docker_config_path",
    "ecr_credentials",
    "fetch_bearer_token",
    "find_credentials",
    "is_ecr_host",
    "is_loopback",
    "parse_challenge",
    "uses_plain_http",
]

_ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"
)
_DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}


class AuthError(FnJobError):
    """The registry refused the credentials (401), or refused access (403), or credentials
    could not be obtained. ``host`` names the registry, ``status`` the HTTP status or 0."""

    def __init__(self, message: str, *, host: str, status: int = 0) -> None:
        super().__init__(message)
        self.host = host
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """Registry credentials and where they were found (``source``, for error messages).

    ``identity_token`` is an OAuth2 refresh token (``docker login`` with an identity
    provider); ``registry_token`` a bearer token sent as-is.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    source: str = "anonymous"

    def __post_init__(self) -> None:
        if bool(self.username) != bool(self.password) and not self.identity_token:
            raise ValueError(
                f"credentials from {self.source}: username and password must be given together"
            )

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.identity_token or self.registry_token)

    def basic_header(self) -> str | None:
        if not self.username or not self.password:
            return None
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


ANONYMOUS = Credentials()


def _hostname(host: str) -> str:
    """The host part of ``host[:port]`` (IPv6 in brackets allowed)."""
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """Whether ``host[:port]`` is this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    name = _hostname(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def uses_plain_http(host: str, insecure_registries: Iterable[str] = ()) -> bool:
    """Plain HTTP only for loopback hosts and hosts listed as insecure (with or without
    port); everything else uses HTTPS with certificate checks."""
    insecure = set(insecure_registries)
    return is_loopback(host) or host in insecure or _hostname(host) in insecure


def is_ecr_host(host: str) -> bool:
    """Whether host is an Amazon ECR registry."""
    return _ECR_HOST.match(_hostname(host)) is not None


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    environ = os.environ if env is None else env
    folder = environ.get("DOCKER_CONFIG")
    if folder:
        return Path(folder) / "config.json"
    return Path(environ.get("HOME", str(Path.home()))) / ".docker" / "config.json"


def auth_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The registry auth files, in the order containers-auth.json(5) reads them."""
    environ = os.environ if env is None else env
    home = Path(environ.get("HOME", str(Path.home())))
    override = environ.get("REGISTRY_AUTH_FILE")
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if override:
        first = Path(override)
    elif runtime_dir:
        first = Path(runtime_dir) / "containers" / "auth.json"
    else:
        first = Path(f"/run/containers/{os.getuid()}/auth.json")
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    files = [
        first,
        config_home / "containers" / "auth.json",
        docker_config_path(environ),
        home / ".dockercfg",
    ]
    return list(dict.fromkeys(files))


def _config_key_host(key: str) -> str:
    """``https://host:port/v1/`` or ``host`` -> ``host:port`` (Docker Hub normalised)."""
    netloc = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
    return "index.docker.io" if netloc in _DOCKER_HUB_HOSTS else netloc


def _credential_helper(helper: str, host: str, config: Path) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        completed = subprocess.run(
            [program, "get"], input=host.encode(), capture_output=True, timeout=60, check=False
        )
    except FileNotFoundError as error:
        raise AuthError(
            f"{config} names credential helper {helper!r} for {host}, but {program} is not on PATH",
            host=host,
        ) from error
    except subprocess.TimeoutExpired as error:
        raise AuthError(f"{program} get did not answer within 60 s", host=host) from error
    if completed.returncode != 0:
        # Helpers exit non-zero with "credentials not found" for unknown hosts.
        return None
    try:
        answer = json.loads(completed.stdout)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError) as error:
        raise AuthError(f"{program} get returned unreadable output", host=host) from error
    source = f"credential helper {program} (from {config})"
    if username == "<token>":
        return Credentials(identity_token=secret, source=source)
    return Credentials(username=username, password=secret, source=source)


def _from_auths_entry(entry: Mapping[str, Any], source: str) -> Credentials | None:
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    encoded = entry.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ValueError(f"{source}: the 'auth' value is not base64 of 'user:password'")
    identity_token = str(entry.get("identitytoken") or "")
    registry_token = str(entry.get("registrytoken") or "")
    if not (username or identity_token or registry_token):
        return None
    if identity_token:
        username, password = "", ""
    return Credentials(
        username=username,
        password=password,
        identity_token=identity_token,
        registry_token=registry_token,
        source=source,
    )


def _key_specificity(key: str, host: str, repository: str) -> int:
    """How well an auths key matches ``host/repository``: -1 not at all, else the length of
    the namespace it names (0 for a bare host)."""
    if _config_key_host(key) != _config_key_host(host):
        return -1
    path = key.split("://", 1)[-1].partition("/")[2].strip("/")
    if path in ("", "v1", "v2"):
        return 0
    return len(path) if repository == path or repository.startswith(path + "/") else -1


def credentials_from_auth_file(host: str, config: Path, repository: str = "") -> Credentials | None:
    """Credentials for host (and repository, for ``host/namespace`` keys) from one auth file
    (Docker ``config.json``, containers ``auth.json`` or legacy ``.dockercfg``), or None when
    it has none. Raises ``AuthError`` when the file is unreadable or a named credential
    helper fails. An empty file (or one of whitespace only) counts as absent: a file mounted
    over a missing Secret key, or touched by a tool, holds no credentials and is no error."""
    if not config.is_file():
        return None
    kind = "Docker config" if config.name in ("config.json", ".dockercfg") else "auth file"
    try:
        text = config.read_text()
        if not text.strip():
            return None
        document = json.loads(text)
    except (OSError, ValueError) as error:
        raise AuthError(f"cannot read {kind} {config}: {error}", host=host) from error
    if not isinstance(document, dict):
        raise AuthError(f"cannot read {kind} {config}: not a JSON object", host=host)
    wanted = _config_key_host(host)
    helpers = document.get("credHelpers") or {}
    for key, helper in helpers.items():
        if _config_key_host(key) == wanted:
            return _credential_helper(str(helper), host, config)
    # The legacy ~/.dockercfg holds the entries at the top level.
    auths = document.get("auths") if "auths" in document else document
    candidates = sorted(
        (
            (_key_specificity(str(key), host, repository), str(key), entry)
            for key, entry in (auths or {}).items()
            if isinstance(entry, dict)
        ),
        key=lambda item: -item[0],
    )
    for specificity, key, entry in candidates:
        if specificity < 0:
            continue
        try:
            found = _from_auths_entry(entry, f"{kind} {config} (auths.{key})")
        except ValueError as error:
            raise AuthError(str(error), host=host) from error
        if found is not None:
            return found
    store = document.get("credsStore")
    if store:
        return _credential_helper(str(store), host, config)
    return None


def ecr_credentials(host: str) -> Credentials:
    """A 12-hour ECR token for host via boto3 (imported here, only for ECR hosts).

    Raises ``AuthError`` when boto3 is missing or AWS refuses (no credentials, no access).
    """
    match = _ECR_HOST.match(_hostname(host))
    if match is None:
        raise ValueError(f"host: {host!r} is not an ECR registry host")
    try:
        boto3 = importlib.import_module("boto3")
    except ImportError as error:
        raise AuthError(
            f"{host} is an Amazon ECR registry; install boto3 (pip install 'fnjob[ecr]') "
            "or put credentials for it in your Docker config",
            host=host,
        ) from error
    try:
        client = boto3.client("ecr", region_name=match.group("region"))
        answer = client.get_authorization_token(registryIds=[match.group("account")])
        token = answer["authorizationData"][0]["authorizationToken"]
        username, _, password = base64.b64decode(token).decode("utf-8").partition(":")
    except Exception as error:  # botocore raises many unrelated types; all mean "no token"
        raise AuthError(
            f"could not get an ECR token for {host} from AWS: {error}", host=host
        ) from error
    return Credentials(username=username, password=password, source="Amazon ECR (boto3)")


def find_credentials(
    host: str,
    repository: str = "",
    *,
    explicit: Mapping[str, Credentials] | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials:
    """Credentials for host (and repository), in the order described in this module's
    docstring."""
    if explicit and host in explicit:
        return explicit[host]

    def from_files() -> Credentials | None:
        for path in auth_files(env):
            found = credentials_from_auth_file(host, path, repository)
            if found is not None:
                return found
        return None

    if is_ecr_host(host):
        try:
            return ecr_credentials(host)
        except AuthError:
            found = from_files()
            if found is None:
                raise
            return found
    found = from_files()
    return found if found is not None else ANONYMOUS


# ---------------------------------------------------------------------------------------------
# Challenges and tokens


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: scheme (lower case) and its parameters."""

    scheme: str
    params: Mapping[str, str]


_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> Challenge:
    """Parse ``Bearer realm="...",service="...",scope="..."`` or ``Basic realm="..."``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        match.group(1).lower(): match.group(2) if match.group(2) is not None else match.group(3)
        for match in _CHALLENGE_PARAM.finditer(rest)
    }
    return Challenge(scheme=scheme.lower(), params=params)


def fetch_bearer_token(
    challenge: Challenge,
    credentials: Credentials,
    scopes: Iterable[str],
    *,
    host: str,
    insecure_registries: Iterable[str] = (),
    session: requests.Session | None = None,
    timeout: float = 30.0,
) -> str:
    """Exchange credentials (or nothing, for anonymous pulls) for a bearer token at the
    challenge's realm. Raises ``AuthError`` when the token server refuses."""
    if credentials.registry_token:
        return credentials.registry_token
    realm = challenge.params.get("realm", "")
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AuthError(f"{host} named an unusable token realm {realm!r}", host=host)
    if parts.scheme == "http" and not uses_plain_http(parts.netloc, insecure_registries):
        raise AuthError(
            f"{host} asks for credentials at {realm} over plain HTTP; refusing to send them "
            "(mark the host insecure only if you trust the network)",
            host=host,
        )
    query: list[tuple[str, str]] = []
    if "service" in challenge.params:
        query.append(("service", challenge.params["service"]))
    wanted = list(dict.fromkeys([*challenge.params.get("scope", "").split(), *scopes]))
    query.extend(("scope", scope) for scope in wanted if scope)
    http = session or requests.Session()
    try:
        if credentials.identity_token:
            form = dict(query[:1])
            form.update(
                grant_type="refresh_token",
                refresh_token=credentials.identity_token,
                client_id="fnjob",
                scope=" ".join(wanted),
            )
            response = http.post(realm, data=form, timeout=timeout)
        else:
            headers = {}
            basic = credentials.basic_header()
            if basic:
                headers["Authorization"] = basic
            response = http.get(realm, params=query, headers=headers, timeout=timeout)
    except requests.RequestException as error:
        raise AuthError(f"token server {realm} for {host} unreachable: {error}", host=host) from (
            error
        )
    if response.status_code in (401, 403):
        raise AuthError(
            f"{host}: the token server refused the credentials from {credentials.source} "
            f"({response.status_code})",
            host=host,
            status=response.status_code,
        )
    if not response.ok:
        raise AuthError(
            f"{host}: the token server {realm} answered {response.status_code}",
            host=host,
            status=response.status_code,
        )
    try:
        answer = response.json()
        token = answer.get("access_token") or answer["token"]
    except (ValueError, KeyError, AttributeError) as error:
        raise AuthError(f"{host}: the token server sent no token", host=host) from error
    return str(token)
