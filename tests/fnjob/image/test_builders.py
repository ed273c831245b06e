"""The append builder against the real registry, and its images run with real podman."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from fnjob.image.builders import AppendBuilder, BaseImageNotFound, BasePython
from fnjob.image.layer import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_MANIFEST
from fnjob.image.package import package_function
from fnjob.image.pythonversion import PythonVersionMismatch
from fnjob.run.protocol import RemoteError
from tests.fnjob.buildkit import EventLog, import_sample, run_image
from tests.fnjob.conftest import PodmanConfig, RegistryServer

pytestmark = pytest.mark.real


@pytest.fixture
def builder_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(base: str, **options):  # type: ignore[no-untyped-def]
        return AppendBuilder(base, cache_dir=tmp_path / "cache", **options)

    return make


def test_appended_function_runs_in_podman_and_returns_its_value(
    registry: RegistryServer, python_base: str, podman: PodmanConfig, builder_for
) -> None:
    train_module = import_sample("train_module")
    built = builder_for(python_base).build(
        package_function(train_module.train), f"{registry.host}/team/train"
    )
    assert built.ref.startswith(f"{registry.host}/team/train@sha256:")
    assert built.python_version == "3.11"

    run = run_image(podman, built.ref, 0.5, epochs=3)

    assert run.exit_code == 0, run.stderr
    assert "training with lr=0.5" in run.user_lines
    # helper_module (a sibling import) was shipped too, or this would be ModuleNotFoundError.
    assert run.unwrap() == {"loss": round(1 / (1 + 0.5 * 3), 6), "epochs": 3.0}


def test_raised_exception_comes_back_as_itself_with_remote_traceback(
    registry: RegistryServer, python_base: str, podman: PodmanConfig, builder_for
) -> None:
    train_module = import_sample("train_module")
    built = builder_for(python_base).build(
        package_function(train_module.diverge), f"{registry.host}/team/diverge"
    )

    run = run_image(podman, built.ref, 7.0)

    assert run.exit_code == 1
    assert "about to diverge" in run.user_lines
    with pytest.raises(train_module.TrainingDiverged, match=r"loss exploded at lr=7.0") as caught:
        run.unwrap()
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "/fnjob/app/train_module.py" in notes
    assert "in diverge" in notes


def test_pickled_closure_runs_on_a_base_with_the_same_python(
    registry: RegistryServer, python_base: str, podman: PodmanConfig, builder_for
) -> None:
    offset = 40

    def add_offset(value: int) -> int:
        return value + offset

    package = package_function(add_offset)
    assert package.needs_exact_python
    built = builder_for(python_base).build(package, f"{registry.host}/team/closure")

    assert run_image(podman, built.ref, 2).unwrap() == 42


def test_exception_of_a_class_unknown_locally_comes_back_as_remote_error(
    registry: RegistryServer, python_base: str, podman: PodmanConfig, builder_for, tmp_path: Path
) -> None:
    extra = tmp_path / "remote_only_errors.py"
    extra.write_text("class OnlyThereError(Exception):\n    pass\n")
    train_module = import_sample("train_module")
    built = builder_for(python_base).build(
        package_function(train_module.raise_remote_only, extra_files=[extra]),
        f"{registry.host}/team/remote-only",
    )

    run = run_image(podman, built.ref)

    assert run.exit_code == 1
    with pytest.raises(RemoteError) as caught:
        run.unwrap()
    assert caught.value.type_name == "remote_only_errors.OnlyThereError"
    assert caught.value.remote_message == "raised from a module the caller does not have"
    assert "in raise_remote_only" in caught.value.remote_traceback


def test_same_code_gives_the_same_digest_and_a_repush_uploads_no_blob(
    registry: RegistryServer, python_base: str, builder_for
) -> None:
    train_module = import_sample("train_module")
    target = f"{registry.host}/team/repeat"
    first = builder_for(python_base).build(package_function(train_module.train), target)
    events = EventLog()
    second = builder_for(python_base, progress=events).build(
        package_function(train_module.train), target
    )

    assert second.digest == first.digest
    assert second.tag_ref == first.tag_ref
    assert events.stages("upload") == []
    manifest = registry.manifest("team/repeat", first.digest).content
    # Only the manifest itself is sent again.
    assert second.bytes_uploaded == len(manifest)


def test_new_repository_mounts_base_layers_instead_of_uploading_them(
    registry: RegistryServer, python_base: str, builder_for
) -> None:
    train_module = import_sample("train_module")
    events = EventLog()
    built = builder_for(python_base, progress=events).build(
        package_function(train_module.train), f"{registry.host}/fresh/mounted"
    )

    manifest = registry.manifest("fresh/mounted", built.digest).json()
    base_layer, code_layer = manifest["layers"]
    assert [event.detail for event in events.stages("mount")] == [base_layer["digest"]]
    assert registry.blob_exists("fresh/mounted", base_layer["digest"])
    new_bytes = (
        code_layer["size"]
        + manifest["config"]["size"]
        + len(registry.manifest("fresh/mounted", built.digest).content)
    )
    assert built.bytes_uploaded == new_bytes
    assert base_layer["size"] > 20 * 1024 * 1024  # the base really is big


def test_docker_schema2_base_gets_a_docker_manifest_that_podman_runs(
    registry: RegistryServer, python_base_docker: str, podman: PodmanConfig, builder_for
) -> None:
    train_module = import_sample("train_module")
    built = builder_for(python_base_docker).build(
        package_function(train_module.train), f"{registry.host}/team/docker-format"
    )

    response = registry.manifest("team/docker-format", built.digest)
    manifest = response.json()
    assert response.headers["Content-Type"] == DOCKER_MANIFEST
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert {layer["mediaType"] for layer in manifest["layers"]} == {DOCKER_LAYER}
    assert run_image(podman, built.ref, 1.0, epochs=1).unwrap()["loss"] == 0.5


def test_missing_base_image_is_a_clear_error_and_pushes_nothing(
    registry: RegistryServer, python_base: str, builder_for
) -> None:
    train_module = import_sample("train_module")
    with pytest.raises(BaseImageNotFound, match=r"no-such/base:1.0 not found"):
        builder_for(f"{registry.host}/no-such/base:1.0").build(
            package_function(train_module.train), f"{registry.host}/team/never"
        )
    assert registry.tags("team/never") == []


def _push_variant_of_base(
    registry: RegistryServer, python_base: str, repository: str, env: list[str]
) -> str:
    """Push the base's layers with a config whose Env is changed; returns the reference."""
    source_repo = python_base.split("/", 1)[1].rsplit(":", 1)[0]
    manifest = registry.manifest(source_repo, "3.11").json()
    config = requests.get(
        f"{registry.url}/v2/{source_repo}/blobs/{manifest['config']['digest']}", timeout=10
    ).json()
    config["config"]["Env"] = env
    config_bytes = json.dumps(config).encode()
    from hashlib import sha256

    config_digest = "sha256:" + sha256(config_bytes).hexdigest()
    for layer in manifest["layers"]:
        requests.post(
            f"{registry.url}/v2/{repository}/blobs/uploads/",
            params={"mount": layer["digest"], "from": source_repo},
            timeout=10,
        ).raise_for_status()
    upload = requests.post(f"{registry.url}/v2/{repository}/blobs/uploads/", timeout=10)
    location = upload.headers["Location"]
    requests.put(
        location if location.startswith("http") else registry.url + location,
        params={"digest": config_digest},
        data=config_bytes,
        timeout=10,
    ).raise_for_status()
    manifest["config"] = {**manifest["config"], "digest": config_digest, "size": len(config_bytes)}
    requests.put(
        f"{registry.url}/v2/{repository}/manifests/1",
        data=json.dumps(manifest),
        headers={"Content-Type": OCI_MANIFEST},
        timeout=10,
    ).raise_for_status()
    return f"{registry.host}/{repository}:1"


def test_pickled_function_on_a_base_with_another_python_fails_before_any_push(
    registry: RegistryServer, python_base: str, builder_for
) -> None:
    other_python = _push_variant_of_base(
        registry, python_base, "fnjob-base/py39", ["PATH=/usr/bin:/bin", "PYTHON_VERSION=3.9.18"]
    )
    package = package_function(lambda: 1)

    with pytest.raises(
        PythonVersionMismatch, match=r"pickled with Python 3.11 but base image"
    ) as e:
        builder_for(other_python).build(package, f"{registry.host}/team/mismatch")
    assert e.value.base_python == "3.9"
    assert registry.tags("team/mismatch") == []


def test_source_function_using_newer_syntax_than_the_base_fails_before_any_push(
    registry: RegistryServer, python_base: str, builder_for, tmp_path: Path
) -> None:
    other_python = _push_variant_of_base(
        registry, python_base, "fnjob-base/py39b", ["PYTHON_VERSION=3.9.18"]
    )
    from fnjob.image.package import package_file

    script = tmp_path / "uses_match.py"
    script.write_text("def kind(x):\n    match x:\n        case 1:\n            return 'one'\n")

    with pytest.raises(
        PythonVersionMismatch,
        match=r"uses_match.py:\d+: Pattern matching is only supported in Python 3.10",
    ):
        builder_for(other_python).build(
            package_file(script, function="kind"), f"{registry.host}/team/syntax"
        )
    assert registry.tags("team/syntax") == []


def test_python_version_is_found_from_the_layers_and_cached_per_base_digest(
    registry: RegistryServer, python_base: str, tmp_path: Path
) -> None:
    builder = AppendBuilder(python_base, cache_dir=tmp_path)
    base, python = builder.resolve_base()

    assert (python.version, python.found_in) == ("3.11", "layers")
    assert python.bytes_read > 0
    cached = tmp_path / "python-versions" / base.manifest_digest.replace(":", "-")
    assert cached.read_text() == "3.11"
    # A cached answer is used as-is (a planted one proves the layers are not read again).
    cached.write_text("3.8")
    assert builder.resolve_base()[1].version == "3.8"


def test_multi_platform_index_selects_the_requested_platform(
    registry: RegistryServer, python_base: str, podman: PodmanConfig, builder_for
) -> None:
    source_repo = python_base.split("/", 1)[1].rsplit(":", 1)[0]
    response = registry.manifest(source_repo, "3.11")
    amd64 = {
        "mediaType": OCI_MANIFEST,
        "digest": response.headers["Docker-Content-Digest"],
        "size": len(response.content),
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{**amd64, "platform": {"os": "linux", "architecture": "arm64"}}, amd64],
    }
    requests.put(
        f"{registry.url}/v2/{source_repo}/manifests/multi",
        data=json.dumps(index),
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        timeout=10,
    ).raise_for_status()
    base = f"{registry.host}/{source_repo}:multi"
    train_module = import_sample("train_module")

    built = builder_for(base).build(
        package_function(train_module.train), f"{registry.host}/team/from-index"
    )
    assert run_image(podman, built.ref, 1.0, epochs=1).exit_code == 0
    with pytest.raises(BaseImageNotFound, match=r"offers linux/arm64, linux/amd64"):
        builder_for(base, platform="linux/s390x").build(
            package_function(train_module.train), f"{registry.host}/team/from-index"
        )


def test_notebook_function_runs_in_podman(
    registry: RegistryServer, python_base: str, podman: PodmanConfig, builder_for, tmp_path: Path
) -> None:
    from fnjob.image.package import package_notebook

    notebook = tmp_path / "experiment.ipynb"
    cells = [
        {"cell_type": "code", "source": ["%matplotlib inline\n", "import statistics\n"]},
        {
            "cell_type": "code",
            "source": ["def summarize(xs):\n", "    return statistics.mean(xs)\n"],
        },
        {"cell_type": "code", "source": ["summarize([1, 2])\n"]},
    ]
    notebook.write_text(json.dumps({"nbformat": 4, "cells": cells}))
    built = builder_for(python_base).build(
        package_notebook(notebook, function="summarize"), f"{registry.host}/team/notebook"
    )
    assert run_image(podman, built.ref, [1, 2, 3, 6]).unwrap() == 3


def test_requirements_are_installed_at_build_time_and_the_job_needs_no_network(
    registry: RegistryServer, python_base: str, podman: PodmanConfig, builder_for, tmp_path: Path
) -> None:
    import gzip
    import io
    import tarfile

    from fnjob.image.package import package_file

    script = tmp_path / "uses_six.py"
    script.write_text("import six\n\n\ndef version():\n    return six.__version__\n")
    events = EventLog()
    # A pure-Python wheel from PyPI, on a base image that has no pip at all.
    built = builder_for(python_base, progress=events).build(
        package_file(script, function="version", requirements=["six==1.17.0"]),
        f"{registry.host}/team/with-six",
    )
    assert [event.detail for event in events.stages("install-requirements")] == ["six==1.17.0"]
    manifest = registry.manifest("team/with-six", built.digest).json()
    layer = requests.get(
        f"{registry.url}/v2/team/with-six/blobs/{manifest['layers'][-1]['digest']}", timeout=30
    ).content
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as archive:
        names = archive.getnames()
    assert "fnjob/site/six.py" in names
    assert "fnjob/requirements.txt" not in names

    run = run_image(podman, built.ref, podman_args=("--network", "none"))
    assert run.exit_code == 0, run.stderr
    assert run.unwrap() == "1.17.0"


def test_requirements_pip_cannot_install_fail_before_any_push(
    registry: RegistryServer, python_base: str, builder_for
) -> None:
    from fnjob.image.requirements import RequirementsNotInstallable

    train_module = import_sample("train_module")
    with pytest.raises(RequirementsNotInstallable, match=r"pip could not install six==0\.0\.0"):
        builder_for(python_base).build(
            package_function(train_module.train, requirements=["six==0.0.0"]),
            f"{registry.host}/team/no-such-version",
        )
    assert registry.tags("team/no-such-version") == []


def test_function_pickled_by_value_finds_its_shipped_sibling_modules(
    registry: RegistryServer, python_base: str, podman: PodmanConfig, builder_for
) -> None:
    train_module = import_sample("train_module")
    built = builder_for(python_base).build(
        package_function(train_module.train, by_value=True), f"{registry.host}/team/by-value"
    )
    run = run_image(podman, built.ref, 1.0, epochs=1)
    assert run.unwrap() == {"loss": 0.5, "epochs": 1.0}


# ---------------------------------------------------------------------------------------------
# Finding the base's Python reads as little as it can


def _small_layer(members: dict[str, str]) -> tuple[bytes, str]:
    """A gzip layer of symlinks (name -> target) and its diff_id."""
    import gzip
    import hashlib
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, target in members.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    tar = buffer.getvalue()
    return gzip.compress(tar, mtime=0), "sha256:" + hashlib.sha256(tar).hexdigest()


def _push_stacked_base(registry: RegistryServer, python_base: str) -> tuple[str, dict, bytes]:  # type: ignore[type-arg]
    """``fnjob-base/stacked:v1``: the Debian layer (54 MB) with a small layer on top that
    installs a Python 3.12 in /usr/local (as CUDA images get Python on top of big layers)."""
    from fnjob.image.auth import Credentials
    from fnjob.image.layer import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256_digest
    from fnjob.image.registry import RegistryClient

    base_manifest = registry.manifest("fnjob-base/python", "3.11").json()
    base_config = requests.get(
        f"{registry.url}/v2/fnjob-base/python/blobs/{base_manifest['config']['digest']}",
        timeout=10,
    ).json()
    top, top_diff_id = _small_layer({"usr/local/bin/python3": "python3.12"})
    config = dict(base_config)
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": [*base_config["rootfs"]["diff_ids"], top_diff_id],
    }
    config.pop("history", None)
    config_data = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": sha256_digest(config_data),
            "size": len(config_data),
        },
        "layers": [
            base_manifest["layers"][0],
            {"mediaType": OCI_LAYER, "digest": sha256_digest(top), "size": len(top)},
        ],
    }
    with RegistryClient(registry.host, "fnjob-base/stacked", credentials=Credentials()) as client:
        assert client.mount_blob("fnjob-base/python", base_manifest["layers"][0]["digest"])
        client.push_blob(sha256_digest(top), lambda: iter([top]))
        client.push_blob(sha256_digest(config_data), lambda: iter([config_data]))
        client.put_manifest("v1", json.dumps(manifest).encode(), OCI_MANIFEST)
    return f"{registry.host}/fnjob-base/stacked:v1", manifest, top


def test_python_on_top_of_big_layers_is_found_without_downloading_them(
    registry: RegistryServer, python_base: str, tmp_path: Path
) -> None:
    from tests.fnjob.registry_proxy import RegistryProxy

    reference, manifest, top = _push_stacked_base(registry, python_base)
    front = RegistryProxy(upstream=registry.host)
    front.start()
    try:
        events = EventLog()
        builder = AppendBuilder(
            reference.replace(registry.host, front.host), cache_dir=tmp_path, progress=events
        )
        _, python = builder.resolve_base()
    finally:
        front.stop()

    assert python.version == "3.12"  # the newest layer's /usr/local/bin/python3
    big, small = manifest["layers"]
    assert front.count("GET", f"/blobs/{small['digest']}") == 1
    assert front.count("GET", f"/blobs/{big['digest']}") == 0
    read = max(event.bytes_done for event in events.stages("check-python"))
    assert read == len(top) == python.bytes_read


def test_python_in_a_single_big_layer_is_found_without_reading_all_of_it(
    registry: RegistryServer, python_base: str, tmp_path: Path
) -> None:
    events = EventLog()
    base, python = AppendBuilder(python_base, cache_dir=tmp_path, progress=events).resolve_base()

    assert python.version == "3.11"
    (layer,) = base.manifest["layers"]
    read = max(event.bytes_done for event in events.stages("check-python"))
    # /usr/bin/python3 -> python3.11 sits in the first tenth of Debian's layer.
    assert 0 < read < layer["size"] / 2


def test_given_base_python_skips_reading_the_layers(
    registry: RegistryServer, python_base: str, tmp_path: Path
) -> None:
    events = EventLog()
    builder = AppendBuilder(python_base, base_python="3.11", cache_dir=tmp_path, progress=events)
    assert builder.resolve_base()[1] == BasePython("3.11", "base_python", 0)
    assert events.stages("check-python") == []
    assert not (tmp_path / "python-versions").exists()
    with pytest.raises(ValueError, match=r"base_python='3' is not like '3.11'"):
        AppendBuilder(python_base, base_python="3")
