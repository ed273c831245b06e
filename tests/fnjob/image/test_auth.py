"""Where credentials come from; when plain HTTP is allowed; ECR tokens."""

from __future__ import annotations

import base64
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from fnjob.image.auth import (
    AuthError,
    Credentials,
    auth_files,
    credentials_from_auth_file,
    docker_config_path,
    fetch_bearer_token,
    find_credentials,
    is_ecr_host,
    parse_challenge,
    uses_plain_http,
)

ECR_HOST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def _write_config(folder: Path, document: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("host", "insecure", "plain"),
    [
        ("127.0.0.1:5000", (), True),
        ("127.5.5.5", (), True),
        ("localhost:5000", (), True),
        ("[::1]:5000", (), True),
        ("registry.example.com", (), False),
        ("10.0.0.5:5000", (), False),
        ("10.0.0.5:5000", ("10.0.0.5",), True),
        ("10.0.0.5:5000", ("10.0.0.5:5000",), True),
        ("10.0.0.5:5001", ("10.0.0.5:5000",), False),
    ],
)
def test_plain_http_only_for_loopback_or_hosts_marked_insecure(
    host: str, insecure: tuple[str, ...], plain: bool
) -> None:
    assert uses_plain_http(host, insecure) is plain


def test_docker_config_location_follows_docker_config_env(tmp_path: Path) -> None:
    assert docker_config_path({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    assert docker_config_path({"HOME": "/home/ds"}) == Path("/home/ds/.docker/config.json")


def test_auths_entry_with_encoded_auth_and_url_style_key(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"alice:pa:ss").decode()
    config = _write_config(
        tmp_path, {"auths": {"https://reg.example.com:5000/v1/": {"auth": encoded}}}
    )
    found = credentials_from_auth_file("reg.example.com:5000", config)
    assert found is not None
    assert (found.username, found.password) == ("alice", "pa:ss")
    assert str(config) in found.source
    assert credentials_from_auth_file("other.example.com", config) is None


def test_identity_token_entry(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"auths": {"reg.example.com": {"identitytoken": "refresh"}}})
    found = credentials_from_auth_file("reg.example.com", config)
    assert found is not None and found.identity_token == "refresh" and not found.username


def test_docker_hub_keys_are_normalised(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"hubuser:hubpass").decode()
    config = _write_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": encoded}}})
    found = credentials_from_auth_file("registry-1.docker.io", config)
    assert found is not None and found.username == "hubuser"


def test_credential_helper_is_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-teststore"
    helper.write_text(
        "#!/bin/sh\nread host\n"
        'if [ "$host" = "reg.example.com" ]; then\n'
        '  echo \'{"ServerURL":"reg.example.com","Username":"carol","Secret":"from-helper"}\'\n'
        "else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    config = _write_config(tmp_path / "docker", {"credsStore": "teststore"})

    found = credentials_from_auth_file("reg.example.com", config)
    assert found is not None
    assert (found.username, found.password) == ("carol", "from-helper")
    assert "docker-credential-teststore" in found.source
    assert credentials_from_auth_file("unknown.example.com", config) is None


def test_missing_credential_helper_is_a_clear_error(tmp_path: Path) -> None:
    config = _write_config(tmp_path, {"credHelpers": {"reg.example.com": "nonexistent-xyz"}})
    with pytest.raises(AuthError, match=r"docker-credential-nonexistent-xyz is not on PATH"):
        credentials_from_auth_file("reg.example.com", config)


def test_unreadable_docker_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(AuthError, match=r"cannot read Docker config"):
        credentials_from_auth_file("reg.example.com", tmp_path / "config.json")


def test_an_empty_auth_file_counts_as_absent_and_the_next_one_answers(tmp_path: Path) -> None:
    # What a subPath mount of a missing key, or a tool's touch, leaves behind: an empty
    # file first in the search order, before the profile's real credentials.
    home = tmp_path / "home"
    empty = tmp_path / "empty-auth.json"
    empty.write_text("")
    (home / ".dockercfg").parent.mkdir(parents=True)
    (home / ".dockercfg").write_text(" \n")
    assert credentials_from_auth_file("reg.example.com", empty) is None
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    assert find_credentials(
        "reg.example.com", env={**env, "REGISTRY_AUTH_FILE": str(empty)}
    ).anonymous
    _auth_file(home / ".docker" / "config.json", "docker-user")
    found = find_credentials("reg.example.com", env={**env, "REGISTRY_AUTH_FILE": str(empty)})
    assert found.username == "docker-user"


def test_explicit_credentials_win_and_anonymous_is_the_fallback(tmp_path: Path) -> None:
    explicit = Credentials(username="u", password="p", source="explicit")
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert find_credentials("reg.example.com", explicit={"reg.example.com": explicit}, env=env) is (
        explicit
    )
    assert find_credentials("reg.example.com", env=env).anonymous


def test_ecr_hosts_are_recognised() -> None:
    assert is_ecr_host(ECR_HOST)
    assert is_ecr_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com")
    assert is_ecr_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn")
    assert not is_ecr_host("dkr.ecr.eu-west-1.amazonaws.com")
    assert not is_ecr_host("registry.example.com")


def _fake_boto3(calls: list[Any], token: bytes | None) -> types.ModuleType:
    """boto3 stand-in: there is no AWS here; records the call and returns a token."""

    class Client:
        def get_authorization_token(self, registryIds: list[str]) -> dict[str, Any]:
            calls.append(("get_authorization_token", registryIds))
            if token is None:
                raise RuntimeError("Unable to locate credentials")
            return {"authorizationData": [{"authorizationToken": base64.b64encode(token).decode()}]}

    def client(service: str, region_name: str) -> Client:
        calls.append((service, region_name))
        return Client()

    module = types.ModuleType("boto3")
    module.client = client  # type: ignore[attr-defined]
    return module


def test_ecr_token_comes_from_boto3_for_the_hosts_account_and_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setitem(sys.modules, "boto3", _fake_boto3(calls, b"AWS:ecr-password"))
    found = find_credentials(ECR_HOST, env={"DOCKER_CONFIG": str(tmp_path)})
    assert (found.username, found.password) == ("AWS", "ecr-password")
    assert calls == [("ecr", "eu-west-1"), ("get_authorization_token", ["123456789012"])]


def test_ecr_without_aws_credentials_is_an_auth_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", _fake_boto3([], None))
    with pytest.raises(AuthError, match=r"could not get an ECR token .* Unable to locate"):
        find_credentials(ECR_HOST, env={"DOCKER_CONFIG": str(tmp_path)})


def test_ecr_without_boto3_falls_back_to_docker_config_or_says_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # makes "import boto3" fail
    with pytest.raises(AuthError, match=r"install boto3"):
        find_credentials(ECR_HOST, env={"DOCKER_CONFIG": str(tmp_path)})
    encoded = base64.b64encode(b"AWS:from-docker-login").decode()
    _write_config(tmp_path, {"auths": {ECR_HOST: {"auth": encoded}}})
    found = find_credentials(ECR_HOST, env={"DOCKER_CONFIG": str(tmp_path)})
    assert found.password == "from-docker-login"


def test_non_ecr_hosts_never_import_boto3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setitem(sys.modules, "boto3", _fake_boto3(calls, b"AWS:x"))
    find_credentials("registry.example.com", env={"DOCKER_CONFIG": str(tmp_path)})
    assert calls == []


def test_challenge_parsing() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:ml/train:pull,push"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:ml/train:pull,push",
    }
    assert parse_challenge('Basic realm="Registry"').scheme == "basic"


def test_token_realm_over_plain_http_is_refused_for_remote_hosts() -> None:
    challenge = parse_challenge('Bearer realm="http://auth.example.com/token"')
    with pytest.raises(AuthError, match=r"over plain HTTP; refusing to send them"):
        fetch_bearer_token(
            challenge,
            Credentials(username="u", password="p", source="test"),
            [],
            host="registry.example.com",
        )


def test_credentials_never_show_secrets_in_repr() -> None:
    text = repr(Credentials(username="u", password="hunter2", identity_token="tok", source="x"))
    assert "hunter2" not in text and "tok'" not in text


# -- podman / skopeo auth files ----------------------------------------------------------------


def _auth_file(path: Path, user: str, key: str = "reg.example.com") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = base64.b64encode(f"{user}:pw-{user}".encode()).decode()
    path.write_text(json.dumps({"auths": {key: {"auth": encoded}}}))
    return path


def test_podman_auth_files_are_read_in_the_documented_order(tmp_path: Path) -> None:
    home, runtime = tmp_path / "home", tmp_path / "run"
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    assert auth_files(env) == [
        runtime / "containers" / "auth.json",
        home / ".config" / "containers" / "auth.json",
        home / ".docker" / "config.json",
        home / ".dockercfg",
    ]
    _auth_file(home / ".docker" / "config.json", "docker-user")
    assert find_credentials("reg.example.com", env=env).username == "docker-user"
    # podman login without --authfile writes ~/.config/containers/auth.json or the runtime one.
    _auth_file(home / ".config" / "containers" / "auth.json", "config-user")
    assert find_credentials("reg.example.com", env=env).username == "config-user"
    primary = _auth_file(runtime / "containers" / "auth.json", "runtime-user")
    found = find_credentials("reg.example.com", env=env)
    assert (found.username, found.password) == ("runtime-user", "pw-runtime-user")
    assert str(primary) in found.source
    # $REGISTRY_AUTH_FILE replaces the runtime file; the others still follow it.
    override = _auth_file(tmp_path / "ci-auth.json", "override-user")
    with_override = {**env, "REGISTRY_AUTH_FILE": str(override)}
    assert auth_files(with_override)[0] == override
    assert find_credentials("reg.example.com", env=with_override).username == "override-user"
    other_host = {**with_override, "REGISTRY_AUTH_FILE": str(_auth_file(override, "x", "other.io"))}
    assert find_credentials("reg.example.com", env=other_host).username == "config-user"


def test_namespace_keys_pick_the_most_specific_entry(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    entries = {
        "reg.example.com": {"auth": base64.b64encode(b"host-user:a").decode()},
        "reg.example.com/team-ml": {"auth": base64.b64encode(b"team-user:b").decode()},
    }
    path.write_text(json.dumps({"auths": entries}))
    found = credentials_from_auth_file("reg.example.com", path, "team-ml/train")
    assert found is not None and found.username == "team-user"
    found = credentials_from_auth_file("reg.example.com", path, "team-other/train")
    assert found is not None and found.username == "host-user"
