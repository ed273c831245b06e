"""Image references, retry policy, and the registry client against the real registry."""

from __future__ import annotations

import hashlib

import pytest

from fnjob.image.auth import Credentials
from fnjob.image.registry import (
    BlobNotFound,
    ImageReference,
    ManifestNotFound,
    RegistryClient,
    RetryPolicy,
    parse_reference,
)
from tests.fnjob.conftest import RegistryServer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("python:3.11", ImageReference("registry-1.docker.io", "library/python", "3.11")),
        ("kubeflow/notebook", ImageReference("registry-1.docker.io", "kubeflow/notebook")),
        ("localhost/ml", ImageReference("localhost", "ml")),
        ("127.0.0.1:5000/team/train:v1", ImageReference("127.0.0.1:5000", "team/train", "v1")),
        (
            "reg.example.com/a/b@sha256:" + "e" * 64,
            ImageReference("reg.example.com", "a/b", "", "sha256:" + "e" * 64),
        ),
    ],
)
def test_references_are_parsed(text: str, expected: ImageReference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("reg.example.com/Team/train", "repository"),
        ("reg.example.com/train:bad tag", "tag"),
        ("reg.example.com/train@sha256:short", "digest"),
    ],
)
def test_bad_references_name_the_bad_part(text: str, field: str) -> None:
    with pytest.raises(ValueError, match=f"{field}:"):
        parse_reference(text)


def test_retry_policy_backs_off_exponentially_with_a_cap() -> None:
    assert list(RetryPolicy(attempts=5, first_delay=0.5, max_delay=1.5).delays()) == [
        0.5,
        1.0,
        1.5,
        1.5,
    ]
    assert list(RetryPolicy(attempts=1).delays()) == []
    with pytest.raises(ValueError, match=r"attempts: 0"):
        RetryPolicy(attempts=0)


@pytest.mark.real
def test_client_pushes_checks_and_reads_blobs(registry: RegistryServer) -> None:
    data = b"fnjob registry client test blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with RegistryClient(registry.host, "client/test", credentials=Credentials()) as client:
        assert not client.blob_exists(digest)
        client.push_blob(digest, lambda: iter([data[:10], data[10:]]))
        assert client.blob_exists(digest)
        assert client.get_blob(digest) == data
        assert client.bytes_uploaded == len(data)
        with pytest.raises(BlobNotFound):
            client.get_blob("sha256:" + "0" * 64)
        with pytest.raises(ManifestNotFound, match=r"no manifest 'nope'"):
            client.get_manifest("nope")
    # A mount from a repository that lacks the blob is refused, not an error.
    with RegistryClient(registry.host, "client/other", credentials=Credentials()) as other:
        assert other.mount_blob("client/test", digest)
        assert not other.mount_blob("client/test", "sha256:" + "0" * 64)
