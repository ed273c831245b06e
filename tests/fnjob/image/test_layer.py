"""Pure image code: deterministic layer, config, manifest media types, platform choice."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from typing import Any

import pytest

from fnjob.image.layer import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    ImageFormatError,
    append_layer,
    code_layer,
    parse_platform,
    select_platform,
    sha256_digest,
)
from fnjob.image.package import CodePackage

BASE_DIFF_ID = "sha256:" + "a" * 64
BASE_LAYER = {"mediaType": OCI_LAYER, "digest": "sha256:" + "b" * 64, "size": 1234}


def _package(**changes: Any) -> CodePackage:
    fields: dict[str, Any] = {
        "files": {"train.py": b"def train():\n    return 1\n", "data/config.yaml": b"lr: 1\n"},
        "entry": "module:train:train",
        "needs_exact_python": False,
        "source_python": "3.11",
        "description": "train.train (source)",
    }
    fields.update(changes)
    return CodePackage(**fields)


def _base(media_type: str = OCI_MANIFEST) -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + "c" * 64, "size": 10},
        "layers": [dict(BASE_LAYER)],
    }
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "PYTHONPATH=/opt/lib"],
            "Cmd": ["python3"],
            "User": "1000",
            "Labels": {"team": "ml"},
        },
        "rootfs": {"type": "layers", "diff_ids": [BASE_DIFF_ID]},
        "history": [{"created_by": "base"}],
    }
    return manifest, config


def _members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
        return archive.getmembers()


def test_same_package_gives_byte_identical_layer_config_and_manifest() -> None:
    manifest, config = _base()
    first = append_layer(manifest, config, _package())
    second = append_layer(manifest, config, _package())
    assert first.layer.blob.read_bytes() == second.layer.blob.read_bytes()
    assert first.config.data == second.config.data
    assert first.digest == second.digest


def test_changed_code_changes_the_digest() -> None:
    manifest, config = _base()
    changed = _package(files={"train.py": b"def train():\n    return 2\n"})
    assert (
        append_layer(manifest, config, _package()).digest
        != append_layer(manifest, config, changed).digest
    )


def test_layer_entries_are_sorted_owned_by_root_with_fixed_times() -> None:
    members = _members(code_layer(_package()).blob.read_bytes())
    names = [member.name for member in members]
    assert names == sorted(names)
    assert "fnjob/app/train.py" in names
    assert "fnjob/app/data/config.yaml" in names
    assert "fnjob/runner.py" in names
    assert "fnjob/vendor/cloudpickle/cloudpickle.py" in names
    # Parent folders are explicit entries so extraction creates them with known modes.
    assert {"fnjob", "fnjob/app", "fnjob/app/data", "fnjob/vendor"} <= set(names)
    for member in members:
        assert (member.uid, member.gid, member.mtime) == (0, 0, 0)
        assert member.mode == (0o755 if member.isdir() else 0o644)


def test_layer_diff_id_is_the_digest_of_the_uncompressed_tar() -> None:
    layer = code_layer(_package())
    assert layer.diff_id == sha256_digest(gzip.decompress(layer.blob.read_bytes()))


def test_config_appends_diff_id_and_sets_entrypoint_env_and_workdir() -> None:
    manifest, config = _base()
    site = ({"/fnjob/site/six.py": b"# six\n"}, {})
    image = append_layer(manifest, config, _package(requirements=("six==1.17.0",)), site)
    new_config = json.loads(image.config.data)
    container = new_config["config"]

    assert new_config["rootfs"]["diff_ids"] == [BASE_DIFF_ID, image.layer.diff_id]
    assert container["Entrypoint"] == ["python3", "/fnjob/runner.py"]
    assert "Cmd" not in container  # the base's Cmd would become the runner's arguments
    assert container["WorkingDir"] == "/fnjob/app"
    env = dict(item.split("=", 1) for item in container["Env"])
    assert env["PYTHONPATH"] == "/fnjob/app:/fnjob/vendor:/fnjob/site:/opt/lib"
    assert env["FNJOB_ENTRY"] == "module:train:train"
    # Requirements are in the layer already: nothing is installed when the job starts.
    assert "FNJOB_REQUIREMENTS" not in env
    assert env["PATH"] == "/usr/bin:/bin"
    # The base's other settings survive.
    assert container["User"] == "1000"
    assert container["Labels"] == {"team": "ml"}
    assert len(new_config["history"]) == 2
    # The caller's base config is not modified.
    assert config["rootfs"]["diff_ids"] == [BASE_DIFF_ID]


def test_oci_base_gives_oci_manifest_with_exact_config_size() -> None:
    manifest, config = _base(OCI_MANIFEST)
    image = append_layer(manifest, config, _package())
    document = json.loads(image.manifest.data)

    assert image.manifest.media_type == OCI_MANIFEST
    assert document["mediaType"] == OCI_MANIFEST
    assert document["config"] == {
        "mediaType": OCI_CONFIG,
        "digest": sha256_digest(image.config.data),
        "size": len(image.config.data),
    }
    assert document["layers"][0] == BASE_LAYER
    assert document["layers"][1]["mediaType"] == OCI_LAYER
    assert document["layers"][1]["size"] == len(image.layer.blob.read_bytes())


def test_docker_base_gives_docker_media_types() -> None:
    manifest, config = _base(DOCKER_MANIFEST)
    document = json.loads(append_layer(manifest, config, _package()).manifest.data)
    assert document["mediaType"] == DOCKER_MANIFEST
    assert document["config"]["mediaType"] == DOCKER_CONFIG
    assert document["layers"][1]["mediaType"] == DOCKER_LAYER


def test_schema1_or_index_manifests_are_refused() -> None:
    manifest, config = _base("application/vnd.docker.distribution.manifest.v1+json")
    with pytest.raises(ImageFormatError, match=r"fnjob appends to"):
        append_layer(manifest, config, _package())


def test_layers_and_diff_ids_must_agree() -> None:
    manifest, config = _base()
    config["rootfs"]["diff_ids"] = []
    with pytest.raises(ImageFormatError, match=r"1 layers but its config 0 diff_ids"):
        append_layer(manifest, config, _package())


INDEX = {
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {
            "mediaType": OCI_MANIFEST,
            "digest": "sha256:" + "1" * 64,
            "size": 1,
            "platform": {"os": "linux", "architecture": "amd64"},
        },
        {
            "mediaType": OCI_MANIFEST,
            "digest": "sha256:" + "2" * 64,
            "size": 1,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
        {
            "mediaType": "application/vnd.in-toto+json",
            "digest": "sha256:" + "3" * 64,
            "size": 1,
            "platform": {"os": "unknown", "architecture": "unknown"},
        },
    ],
}


@pytest.mark.parametrize(
    ("platform", "digit"), [("linux/amd64", "1"), ("linux/arm64", "2"), ("linux/arm64/v8", "2")]
)
def test_index_selects_the_requested_platform(platform: str, digit: str) -> None:
    assert select_platform(INDEX, parse_platform(platform))["digest"] == "sha256:" + digit * 64


def test_index_without_the_platform_names_what_it_offers() -> None:
    with pytest.raises(ImageFormatError, match=r"no linux/s390x variant; it offers linux/amd64"):
        select_platform(INDEX, parse_platform("linux/s390x"))


@pytest.mark.parametrize("text", ["linux", "linux/", "a/b/c/d", "Linux/amd64"])
def test_bad_platform_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"platform"):
        parse_platform(text)
