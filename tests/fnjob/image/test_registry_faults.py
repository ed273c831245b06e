"""Faults against the real registry: stopped mid-push, 5xx answers, refused auth, tokens.

After every failure the target repository must hold no manifest that references a missing
blob (the manifest is pushed last, only after all its blobs).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from fnjob.image.auth import AuthError
from fnjob.image.builders import AppendBuilder
from fnjob.image.package import package_function
from fnjob.image.registry import RegistryServerError, RegistryUnreachable, RetryPolicy
from fnjob.progress import ProgressEvent
from tests.fnjob.buildkit import EventLog, import_sample
from tests.fnjob.conftest import (
    BASE_REPOSITORY,
    RegistryServer,
    copy_base_into,
    free_port,
    make_podman_config,
    require_tool,
    running_registry,
)
from tests.fnjob.registry_proxy import BasicGate, RegistryProxy, TokenGate, fail_n_times

pytestmark = pytest.mark.real

FAST_RETRY = RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.05)


@pytest.fixture
def own_registry(tmp_path: Path, base_layout: Path) -> Iterator[RegistryServer]:
    """A registry this test may stop and restart, with the base image in it."""
    with running_registry(tmp_path / "registry") as server:
        copy_base_into(base_layout, server.host, BASE_REPOSITORY)
        yield server


@pytest.fixture
def proxy(own_registry: RegistryServer) -> Iterator[RegistryProxy]:
    front = RegistryProxy(upstream=own_registry.host)
    front.start()
    yield front
    front.stop()


def _package():  # type: ignore[no-untyped-def]
    return package_function(import_sample("train_module").train)


def _assert_no_broken_manifest(server: RegistryServer) -> None:
    """Every tagged manifest in the registry has all its blobs."""
    catalog = requests.get(f"{server.url}/v2/_catalog", timeout=10).json()["repositories"]
    for repository in catalog:
        for tag in server.tags(repository):
            manifest = server.manifest(repository, tag).json()
            for descriptor in [manifest.get("config"), *manifest.get("layers", [])]:
                if descriptor:
                    assert server.blob_exists(repository, descriptor["digest"]), (
                        f"{repository}:{tag} references missing {descriptor['digest']}"
                    )


def test_registry_stopped_in_the_middle_of_a_push(
    own_registry: RegistryServer, tmp_path: Path
) -> None:
    def stop_on_first_upload(event: ProgressEvent) -> None:
        if event.stage == "upload" and own_registry.running:
            own_registry.stop()

    builder = AppendBuilder(
        f"{own_registry.host}/{BASE_REPOSITORY}:3.11",
        cache_dir=tmp_path / "cache",
        retry=FAST_RETRY,
        progress=stop_on_first_upload,
    )
    with pytest.raises(RegistryUnreachable, match=r"registry unreachable") as caught:
        builder.build(_package(), f"{own_registry.host}/team/interrupted:v1")
    assert caught.value.host == own_registry.host

    own_registry.start()
    assert own_registry.tags("team/interrupted") == []
    _assert_no_broken_manifest(own_registry)
    # The same build works once the registry is back.
    built = AppendBuilder(
        f"{own_registry.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path / "cache"
    ).build(_package(), f"{own_registry.host}/team/interrupted:v1")
    assert own_registry.tags("team/interrupted") == ["v1"]
    assert (
        built.digest
        == own_registry.manifest("team/interrupted", "v1").headers["Docker-Content-Digest"]
    )


def test_unreachable_registry_is_a_clear_error(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    builder = AppendBuilder(f"{host}/base/python:3.11", cache_dir=tmp_path, retry=FAST_RETRY)
    with pytest.raises(RegistryUnreachable, match=f"{host}: read manifest 3.11: registry"):
        builder.build(_package(), f"{host}/team/x")


def test_transient_5xx_answers_are_retried_and_the_push_completes(
    own_registry: RegistryServer, proxy: RegistryProxy, tmp_path: Path
) -> None:
    proxy.rules += [
        fail_n_times("PUT", "/blobs/uploads/", 2, status=503),
        fail_n_times("HEAD", "/blobs/", 1, status=500),
        fail_n_times("GET", "/manifests/3.11", 1, status=502),
    ]
    builder = AppendBuilder(
        f"{proxy.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path, retry=FAST_RETRY
    )
    built = builder.build(_package(), f"{proxy.host}/team/retried:v1")

    assert proxy.count("PUT", "/blobs/uploads/", 503) == 2
    assert proxy.count("HEAD", "/blobs/", 500) == 1
    assert proxy.count("GET", "/manifests/3.11", 502) == 1
    assert own_registry.manifest("team/retried", "v1").headers["Docker-Content-Digest"] == (
        built.digest
    )
    _assert_no_broken_manifest(own_registry)


def test_persistent_5xx_on_blob_upload_fails_typed_and_pushes_no_manifest(
    own_registry: RegistryServer, proxy: RegistryProxy, tmp_path: Path
) -> None:
    proxy.rules.append(fail_n_times("PUT", "/blobs/uploads/", 1000, status=500))
    builder = AppendBuilder(
        f"{proxy.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path, retry=FAST_RETRY
    )
    with pytest.raises(RegistryServerError, match=r"upload blob .* answered 500") as caught:
        builder.build(_package(), f"{proxy.host}/team/broken:v1")

    assert caught.value.status == 500
    assert proxy.count("PUT", "/blobs/uploads/") == FAST_RETRY.attempts
    assert proxy.count("PUT", "/manifests/") == 0
    assert own_registry.tags("team/broken") == []
    _assert_no_broken_manifest(own_registry)


def test_a_failed_manifest_push_is_not_retried(
    own_registry: RegistryServer, proxy: RegistryProxy, tmp_path: Path
) -> None:
    proxy.rules.append(fail_n_times("PUT", "/manifests/", 1000, status=500))
    builder = AppendBuilder(
        f"{proxy.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path, retry=FAST_RETRY
    )
    with pytest.raises(RegistryServerError, match=r"push manifest v1: the registry answered 500"):
        builder.build(_package(), f"{proxy.host}/team/no-manifest:v1")
    assert proxy.count("PUT", "/manifests/") == 1
    assert own_registry.tags("team/no-manifest") == []


@pytest.mark.parametrize(
    ("status", "message"),
    [(401, "authentication required; no credentials were found"), (403, "access denied")],
)
def test_refused_access_is_an_auth_error(
    own_registry: RegistryServer,
    proxy: RegistryProxy,
    tmp_path: Path,
    status: int,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    proxy.rules.append(fail_n_times("POST", "/blobs/uploads/", 1000, status=status))
    builder = AppendBuilder(
        f"{proxy.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path, retry=FAST_RETRY
    )
    with pytest.raises(AuthError, match=message) as caught:
        builder.build(_package(), f"{proxy.host}/team/refused:v1")
    assert caught.value.status == status
    assert own_registry.tags("team/refused") == []


# ---------------------------------------------------------------------------------------------
# A registry with htpasswd (basic) auth, credentials from a Docker config file


@pytest.fixture
def password_registry(tmp_path: Path, base_layout: Path) -> Iterator[RegistryServer]:
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=5)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    with running_registry(tmp_path / "registry", htpasswd=htpasswd) as server:
        skopeo = require_tool("skopeo")
        subprocess.run(
            [
                skopeo,
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds",
                "alice:s3cret-pass",
                f"oci:{base_layout}:3.11",
                f"docker://{server.host}/{BASE_REPOSITORY}:3.11",
            ],
            check=True,
            capture_output=True,
        )
        yield server


def _docker_config(folder: Path, host: str, user: str, password: str) -> Path:
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return folder


def test_password_registry_refuses_anonymous_pushes(
    password_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    builder = AppendBuilder(f"{password_registry.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path)
    with pytest.raises(AuthError, match=r"no credentials were found") as caught:
        builder.build(_package(), f"{password_registry.host}/team/private")
    assert caught.value.status == 401


def test_password_registry_refuses_a_wrong_password_naming_its_source(
    password_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _docker_config(tmp_path / "docker", password_registry.host, "alice", "wrong")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    builder = AppendBuilder(f"{password_registry.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path)
    with pytest.raises(AuthError, match=f"credentials from Docker config {config}") as caught:
        builder.build(_package(), f"{password_registry.host}/team/private")
    assert caught.value.status == 401


def test_password_registry_accepts_docker_config_credentials(
    password_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _docker_config(tmp_path / "docker", password_registry.host, "alice", "s3cret-pass")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    builder = AppendBuilder(f"{password_registry.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path)
    built = builder.build(_package(), f"{password_registry.host}/team/private:v1")

    check = requests.get(
        f"{password_registry.url}/v2/team/private/manifests/v1",
        auth=("alice", "s3cret-pass"),
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    assert check.headers["Docker-Content-Digest"] == built.digest


# ---------------------------------------------------------------------------------------------
# Bearer tokens (the flow Docker Hub, ECR-compatible and Harbor registries use)


def test_bearer_token_flow_with_docker_config_credentials(
    own_registry: RegistryServer,
    proxy: RegistryProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = TokenGate(username="bob", password="token-pass", proxy_host=proxy.host)
    proxy.rules.append(gate.rule)
    monkeypatch.setenv(
        "DOCKER_CONFIG", str(_docker_config(tmp_path / "docker", proxy.host, "bob", "token-pass"))
    )
    builder = AppendBuilder(f"{proxy.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path)
    built = builder.build(_package(), f"{proxy.host}/team/tokened:v1")

    assert own_registry.manifest("team/tokened", "v1").headers["Docker-Content-Digest"] == (
        built.digest
    )
    # Push scope on the target, and pull on the base's repository for the cross-repo mount.
    assert "repository:team/tokened:pull,push" in gate.requested_scopes
    assert f"repository:{BASE_REPOSITORY}:pull" in gate.requested_scopes
    # The base is only read: push access to it is never asked for.
    assert f"repository:{BASE_REPOSITORY}:pull,push" not in gate.requested_scopes


def test_bearer_token_refused_by_the_token_server(
    own_registry: RegistryServer,
    proxy: RegistryProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = TokenGate(username="bob", password="token-pass", proxy_host=proxy.host)
    proxy.rules.append(gate.rule)
    monkeypatch.setenv(
        "DOCKER_CONFIG", str(_docker_config(tmp_path / "docker", proxy.host, "bob", "nope"))
    )
    builder = AppendBuilder(f"{proxy.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path)
    with pytest.raises(AuthError, match=r"token server refused the credentials") as caught:
        builder.build(_package(), f"{proxy.host}/team/tokened")
    assert caught.value.status == 401
    assert own_registry.tags("team/tokened") == []


def test_refused_mount_falls_back_to_copying_the_base_layer(
    own_registry: RegistryServer, proxy: RegistryProxy, tmp_path: Path
) -> None:
    def refuse_mounts(method: str, path: str, headers: dict[str, str]):  # type: ignore[no-untyped-def]
        if method == "POST" and "mount=" in path:
            return 202, {"Content-Type": "text/plain"}, b""
        return None

    proxy.rules.append(refuse_mounts)
    uploads: list[str] = []
    builder = AppendBuilder(
        f"{proxy.host}/{BASE_REPOSITORY}:3.11",
        cache_dir=tmp_path,
        progress=lambda e: uploads.append(e.detail) if e.stage == "upload" else None,
    )
    built = builder.build(_package(), f"{proxy.host}/team/copied:v1")

    manifest = own_registry.manifest("team/copied", "v1").json()
    base_layer = manifest["layers"][0]
    assert proxy.count("POST", "mount=", 202) == 1
    assert base_layer["digest"] in uploads
    assert built.bytes_uploaded is not None and built.bytes_uploaded > base_layer["size"]
    assert own_registry.blob_exists("team/copied", base_layer["digest"])
    _assert_no_broken_manifest(own_registry)


def test_base_on_another_registry_is_copied_across(
    own_registry: RegistryServer, registry: RegistryServer, tmp_path: Path
) -> None:
    events: list[ProgressEvent] = []
    built = AppendBuilder(
        f"{own_registry.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path, progress=events.append
    ).build(_package(), f"{registry.host}/team/cross-registry:v1")

    manifest = registry.manifest("team/cross-registry", "v1").json()
    assert [e for e in events if e.stage == "mount"] == []
    assert built.bytes_uploaded is not None and built.bytes_uploaded > manifest["layers"][0]["size"]
    _assert_no_broken_manifest(registry)


# ---------------------------------------------------------------------------------------------
# Where credentials go: only to the registry host, and plain HTTP only to loopback / insecure


@pytest.fixture
def storage_proxy(own_registry: RegistryServer) -> Iterator[RegistryProxy]:
    """A second server (another port) standing in for blob storage an upload is sent to."""
    front = RegistryProxy(upstream=own_registry.host)
    front.start()
    yield front
    front.stop()


def test_basic_credentials_go_only_to_the_host_that_challenged(
    own_registry: RegistryServer,
    proxy: RegistryProxy,
    storage_proxy: RegistryProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy.rules.append(BasicGate("alice", "s3cret-pass").rule)
    # The registry sends uploads to another host (as registries backed by S3 do).
    storage_port = storage_proxy.host.rsplit(":", 1)[1]
    proxy.rewrite_location = lambda url: url.replace(proxy.host, f"localhost:{storage_port}")
    monkeypatch.setenv(
        "DOCKER_CONFIG",
        str(_docker_config(tmp_path / "docker", proxy.host, "alice", "s3cret-pass")),
    )
    built = AppendBuilder(f"{proxy.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path).build(
        _package(), f"{proxy.host}/team/elsewhere:v1"
    )

    assert own_registry.manifest("team/elsewhere", "v1").headers["Docker-Content-Digest"] == (
        built.digest
    )
    assert storage_proxy.count("PUT", "/blobs/uploads/") >= 2  # code layer and config
    assert all("Authorization" not in seen.headers for seen in storage_proxy.seen)
    # The registry itself got them once it had asked.
    assert any("Authorization" in seen.headers for seen in proxy.seen)


def test_plain_http_to_a_host_that_is_not_loopback_is_refused(
    own_registry: RegistryServer,
    proxy: RegistryProxy,
    storage_proxy: RegistryProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy.rules.append(BasicGate("alice", "s3cret-pass").rule)
    # This machine's name: not a loopback name, so plain HTTP to it is not allowed.
    name = socket.gethostname()
    storage_port = storage_proxy.host.rsplit(":", 1)[1]
    proxy.rewrite_location = lambda url: url.replace(proxy.host, f"{name}:{storage_port}")
    monkeypatch.setenv(
        "DOCKER_CONFIG",
        str(_docker_config(tmp_path / "docker", proxy.host, "alice", "s3cret-pass")),
    )
    builder = AppendBuilder(f"{proxy.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path)
    with pytest.raises(RegistryServerError, match=rf"{name}:{storage_port}.*refusing plain HTTP"):
        builder.build(_package(), f"{proxy.host}/team/plain:v1")
    assert storage_proxy.seen == []
    assert own_registry.tags("team/plain") == []


# ---------------------------------------------------------------------------------------------
# A registry that accepts connections and never answers


class HungServer:
    """Accepts TCP connections on 127.0.0.1 and never answers; counts the connections."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self._socket.close()
        for connection in self.accepted:
            connection.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def test_hung_registry_gives_a_typed_error_naming_the_host_within_the_timeout(
    hung: HungServer, tmp_path: Path
) -> None:
    builder = AppendBuilder(
        f"{hung.host}/base/python:3.11", cache_dir=tmp_path, registry_timeout=0.5
    )
    with pytest.raises(RegistryUnreachable, match=r"no answer within 0.5 s") as caught:
        builder.build(_package(), f"{hung.host}/team/x")
    assert caught.value.host == hung.host
    assert str(caught.value).startswith(f"{hung.host}: read manifest 3.11")
    # The wait is bounded in total: a request that got no answer is not tried again.
    assert len(hung.accepted) == 1


def test_registry_timeout_comes_from_the_environment(
    hung: HungServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FNJOB_REGISTRY_TIMEOUT", "0.5")
    builder = AppendBuilder(f"{hung.host}/base/python:3.11", cache_dir=tmp_path)
    with pytest.raises(RegistryUnreachable, match=r"no answer within 0.5 s"):
        builder.build(_package(), f"{hung.host}/team/x")
    monkeypatch.setenv("FNJOB_REGISTRY_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"FNJOB_REGISTRY_TIMEOUT='soon' must be a number"):
        AppendBuilder(f"{hung.host}/base/python:3.11")


# ---------------------------------------------------------------------------------------------
# Push progress: bytes the registry acknowledged, mounts reported as mounts


def test_push_progress_counts_only_acknowledged_bytes_and_never_twice(
    own_registry: RegistryServer, proxy: RegistryProxy, tmp_path: Path
) -> None:
    chunk = 4096
    proxy.rules.append(fail_n_times("PATCH", "/blobs/uploads/", 1, status=503))
    seen_when: list[tuple[str, int, int]] = []

    def record(event: ProgressEvent) -> None:
        if event.stage == "upload":
            acknowledged_patches = proxy.count("PATCH", "/blobs/uploads/", 202)
            seen_when.append((event.detail, event.bytes_done, acknowledged_patches))

    events = EventLog()
    builder = AppendBuilder(
        f"{proxy.host}/{BASE_REPOSITORY}:3.11",
        cache_dir=tmp_path,
        retry=FAST_RETRY,
        upload_chunk_size=chunk,
        progress=lambda event: (events(event), record(event)),
    )
    built = builder.build(_package(), f"{proxy.host}/team/progress:v1")
    manifest = own_registry.manifest("team/progress", "v1").json()
    base_layer, code_layer = manifest["layers"]

    # The base layer was mounted: reported as such, with no bytes transferred.
    (mount,) = events.stages("mount")
    assert (mount.detail, mount.bytes_done, mount.bytes_total) == (
        base_layer["digest"],
        0,
        base_layer["size"],
    )
    code = [event for event in events.stages("upload") if event.detail == code_layer["digest"]]
    done = [event.bytes_done for event in code]
    assert code_layer["size"] > 3 * chunk
    # Chunk by chunk, never backwards past what the registry holds, never above the size.
    assert done == sorted(done) and done[0] == 0 and done[-1] == code_layer["size"]
    assert all(d % chunk == 0 or d == code_layer["size"] for d in done)
    # Each figure was reported only once the registry had acknowledged that many bytes.
    patches_before = min(n for digest, _d, n in seen_when if digest == code_layer["digest"])
    for digest, bytes_done, acknowledged in seen_when:
        if digest == code_layer["digest"]:
            assert acknowledged - patches_before + 1 >= -(-bytes_done // chunk)
    # The failed chunk was sent again, but the progress did not count it twice.
    assert proxy.count("PATCH", "/blobs/uploads/", 503) == 1
    assert built.bytes_uploaded is not None and built.bytes_uploaded > code_layer["size"]


def test_podman_login_credentials_are_used(
    password_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    podman = make_podman_config(tmp_path / "podman", [password_registry.host])
    auth_file = tmp_path / "podman-auth.json"
    login = subprocess.run(
        [
            require_tool("podman"),
            "login",
            "--tls-verify=false",
            "--authfile",
            str(auth_file),
            "--username",
            "alice",
            "--password-stdin",
            password_registry.host,
        ],
        input="s3cret-pass",
        env=podman.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert login.returncode == 0, login.stderr
    # Nothing in the Docker config: only what podman login wrote.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    builder = AppendBuilder(f"{password_registry.host}/{BASE_REPOSITORY}:3.11", cache_dir=tmp_path)
    built = builder.build(_package(), f"{password_registry.host}/team/podman-login:v1")

    check = requests.get(
        f"{password_registry.url}/v2/team/podman-login/manifests/v1",
        auth=("alice", "s3cret-pass"),
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=10,
    )
    assert check.headers["Docker-Content-Digest"] == built.digest
