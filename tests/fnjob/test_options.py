"""The pieces a run is described with: quantities parsed once, bad values named."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fnjob.image.auth import Credentials
from fnjob.options import (
    MAX_ENV_VARIABLE_BYTES,
    Build,
    ClaimMount,
    Lifecycle,
    Resources,
    Scheduling,
    SecretEnv,
    SecretKey,
    Security,
    Volumes,
)
from fnjob.run.local import LocalOptions
from fnjob.run.manifest import JobOptions, build_job_manifest


@pytest.mark.parametrize(
    ("cpu", "text", "cores"),
    [(0.5, "500m", "0.5"), (2, "2", "2"), ("250m", "250m", "0.25"), (1.25, "1250m", "1.25")],
)
def test_cpu_is_cores_or_a_quantity(cpu: Any, text: str, cores: str) -> None:
    resources = Resources(cpu=cpu)
    assert resources.cpu == text
    assert resources.cpu_cores == Decimal(cores)


@pytest.mark.parametrize(
    ("memory", "text", "size"),
    [
        # A number is GiB (binary), like the Gi suffix.
        (0.5, "512Mi", 2**29),
        (8, "8Gi", 8 * 2**30),
        # A quantity is taken as written: "8Gi" stays "8Gi" (it once became "8GiGi").
        ("8Gi", "8Gi", 8 * 2**30),
        ("1.5G", "1.5G", 1_500_000_000),
        ("512Mi", "512Mi", 2**29),
    ],
)
def test_memory_is_a_quantity_or_gib(memory: Any, text: str, size: int) -> None:
    resources = Resources(memory=memory)
    assert resources.memory == text
    assert resources.memory_bytes == size


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"cpu": "two"}, "cpu='two' is not a Kubernetes quantity"),
        ({"cpu": True}, "cpu=True is not a number of cores"),
        ({"cpu": 0.0001}, "below the smallest CPU amount"),
        ({"memory": "8"}, "write the unit"),
        ({"memory": "8GB"}, "memory='8GB' is not a Kubernetes quantity"),
        ({"memory": "8 Gi"}, "memory='8 Gi' is not a Kubernetes quantity"),
        ({"memory": "-1Gi"}, "must be a positive amount"),
        ({"gpus": -1}, "gpus=-1 must be a whole number >= 0"),
        ({"gpus": 1.5}, "gpus=1.5"),
    ],
)
def test_bad_resources_name_the_field_and_the_value(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError) as caught:
        Resources(**settings)
    assert words in str(caught.value)


def test_volume_specs_parse_like_the_cli_writes_them() -> None:
    assert ClaimMount.parse("workspace-nb:/home/jovyan/data:ro") == ClaimMount(
        "workspace-nb", "/home/jovyan/data", read_only=True
    )
    assert ClaimMount.parse("datasets:/data") == ClaimMount("datasets", "/data")


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("workspace", "must look like CLAIM:/mount/path"),
        ("workspace:/data:rx", "must look like CLAIM:/mount/path"),
        ("workspace:data", "must be an absolute, normalised path"),
        ("workspace:/data/../etc", "must be an absolute, normalised path"),
        ("Workspace:/data", "'Workspace' is not a PersistentVolumeClaim name"),
        ("workspace:/fnjob/app/data", "would hide /fnjob"),
        ("workspace:/", "would hide /fnjob"),
        ("workspace:/var/run/fnjob", "would hide /var/run/fnjob"),
    ],
)
def test_bad_volume_specs_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        ClaimMount.parse(spec)
    assert words in str(caught.value)


def test_volumes_refuse_overlapping_mounts_and_take_a_shm_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Volumes(claims=(ClaimMount("a", "/data"), ClaimMount("b", "/data/raw")))
    with pytest.raises(ValueError, match="overlaps /dev/shm"):
        Volumes(claims=(ClaimMount("a", "/dev/shm"),), shm_size="1Gi")
    volumes = Volumes(shm_size="2Gi")
    assert (volumes.shm_size, volumes.shm_bytes) == ("2Gi", 2 * 2**30)
    with pytest.raises(ValueError, match="shm_size='lots' is not a Kubernetes quantity"):
        Volumes(shm_size="lots")


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda: Security(run_as_user=-1), "run_as_user=-1 must be a numeric id"),
        (lambda: Security(fs_group="100"), "fs_group='100' must be a numeric id"),
        (lambda: Security(image_pull_secrets="ecr"), "must be a list of Secret names"),
        (lambda: Security(service_account="Default Editor"), "is not a valid name"),
        (lambda: SecretEnv(secrets="wandb"), "must be a list of Secret names"),
        (lambda: SecretEnv(keys={"1X": SecretKey("s", "k")}), "not a valid environment"),
        (lambda: SecretEnv(keys={"X": ("s", "k")}), "must be a SecretKey"),
        (lambda: SecretKey("wandb", "api key"), "key='api key' is not a valid Secret key"),
        (lambda: Scheduling(tolerations=({"key": "a", "operator": "Is"},)), "operator 'Is'"),
        (lambda: Scheduling(node_selector={"zone": 1}), "keys and values must be strings"),
        (lambda: Lifecycle(pod_creation_timeout=0), "pod_creation_timeout=0 must be"),
        (lambda: Lifecycle(backoff_limit=-1), "backoff_limit=-1"),
        (lambda: Build(builder="kaniko"), "builder='kaniko' is not one of ('append', 'docker')"),
        (lambda: Build(extra_files="data.csv"), "extra_files='data.csv' must be a list"),
        (lambda: Build(requirements=[b"six"]), "must be a requirements file or a list"),
        (lambda: Build(base_python="3"), "base_python='3' is not like '3.11'"),
        (lambda: Build(platform="amd64"), "platform='amd64' is not 'os/arch'"),
        (lambda: Build(registry_timeout=0), "registry_timeout=0 must be a number of seconds"),
        (lambda: Build(insecure_registries="reg.lan"), "must be a list of hosts"),
        (lambda: Build(credentials={"r": ("u", "p")}), "map registry hosts to fnjob.Credentials"),
    ],
)
def test_bad_pieces_name_the_field(build: Any, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        build()
    assert words in str(caught.value)


def test_pieces_are_frozen_copies() -> None:
    selector = {"pool": "a"}
    scheduling = Scheduling(node_selector=selector)
    selector["pool"] = "b"
    assert scheduling.node_selector == {"pool": "a"}
    with pytest.raises(AttributeError):
        scheduling.gpu_group = "x"  # type: ignore[misc]


def test_build_holds_read_only_copies_of_what_it_was_given(tmp_path: Path) -> None:
    files = [tmp_path / "labels.txt"]
    credentials = {"reg.lan": Credentials(username="u", password="p")}
    build = Build(
        extra_files=files,
        requirements=["six==1.17.0"],
        insecure_registries=["reg.lan"],
        credentials=credentials,
        cache_dir=str(tmp_path),
    )
    files.append(tmp_path / "more.txt")
    credentials.clear()
    assert build.extra_files == (str(tmp_path / "labels.txt"),)
    assert build.requirements == ("six==1.17.0",)
    assert build.insecure_registries == ("reg.lan",)
    assert dict(build.credentials or {}) == {"reg.lan": Credentials(username="u", password="p")}
    assert build.cache_dir == tmp_path
    # A requirements file stays a path; registry_timeout None means "from the environment".
    assert Build(requirements=str(tmp_path / "requirements.txt")).requirements == str(
        tmp_path / "requirements.txt"
    )
    assert Build().registry_timeout is None
    with pytest.raises(AttributeError):
        build.builder = "docker"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        # Python's Decimal reads these; the API server does not.
        ({"memory": "1e3Gi"}, "memory='1e3Gi' is not a Kubernetes quantity"),
        ({"memory": "NaN"}, "memory='NaN' is not a Kubernetes quantity"),
        ({"memory": "1_000Mi"}, "memory='1_000Mi' is not a Kubernetes quantity"),
        ({"cpu": "2 "}, "cpu='2 ' is not a Kubernetes quantity"),
        # Past what the API's 64-bit quantities hold.
        ({"memory": "1e400"}, "memory='1e400' is larger than Kubernetes can hold"),
        ({"memory": 1e30}, "memory=1e+30 is larger than Kubernetes can hold"),
        ({"cpu": "1e20"}, "cpu='1e20' is larger than Kubernetes can hold"),
    ],
)
def test_quantities_the_api_server_would_refuse_are_refused_here(
    settings: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(words)):
        Resources(**settings)


def test_quantities_the_api_server_takes_are_taken() -> None:
    assert Resources(memory="1e9").memory_bytes == 10**9
    assert Resources(memory="1.5Gi").memory_bytes == 3 * 2**29
    assert Resources(cpu="+1.").cpu_cores == 1


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ({"team name": "ml"}, "labels: key 'team name' is not a label key"),
        ({"a/b/c": "x"}, "labels: key 'a/b/c' is not a label key"),
        ({"Example.COM/team": "x"}, "key 'Example.COM/team' is not a label key"),
        ({"x" * 64: "x"}, "is not a label key"),
        ({"team": "-ml"}, "labels['team']='-ml' is not a label value"),
        ({"team": "m" * 64}, "is not a label value"),
        ({"team": "ml/vision"}, "labels['team']='ml/vision' is not a label value"),
        ({"fnjob/run-id": "x"}, "labels may not set ['fnjob/run-id']: fnjob sets them"),
    ],
)
def test_invalid_labels_are_refused_naming_the_key_or_value(
    labels: dict[str, str], words: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        JobOptions(labels=labels)


def test_valid_labels_reach_the_job() -> None:
    labels = {"example.com/team": "ml-vision", "cost-centre": "", "run": "A_1.b"}
    manifest = build_job_manifest(
        image="i", function_name="f", run_id="r", namespace="n", options=JobOptions(labels=labels)
    )
    assert manifest["metadata"]["labels"].items() >= labels.items()


def test_node_selectors_follow_the_label_rules() -> None:
    with pytest.raises(ValueError, match=re.escape("node_selector: key 'gpu type'")):
        Scheduling(node_selector={"gpu type": "a100"})


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"TOKEN": "abc\0def"}, "env['TOKEN'] contains a NUL byte"),
        ({"DATA": "x" * 10_000_000}, "env['DATA'] is 10,000,005 bytes; a variable can be at most"),
        # Each small enough, the sum too large for one Job object.
        ({f"PART{i}": "x" * 100_000 for i in range(12)}, "env adds up to 1,200,074 bytes"),
    ],
)
def test_env_the_kernel_or_the_api_would_refuse_is_refused(env: dict[str, str], words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        JobOptions(env=env)
    with pytest.raises(ValueError, match=re.escape(words)):
        LocalOptions(env=env)


def test_an_env_variable_just_under_the_kernels_limit_is_taken() -> None:
    value = "x" * (MAX_ENV_VARIABLE_BYTES - len("BIG="))
    assert JobOptions(env={"BIG": value}).env["BIG"] == value


def test_every_builder_name_has_a_builder_and_every_builder_a_name() -> None:
    from fnjob.image.builders import BUILDER_TYPES
    from fnjob.options import BUILDERS

    assert set(BUILDER_TYPES) == set(BUILDERS)
