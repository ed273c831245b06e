"""The Fairing facade: its settings and errors, then the seed's HOSTNAME example for real."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fnjob import Resources, fairing
from fnjob.fairing import (
    FairingConfig,
    FairingConfigError,
    FairingNotSupported,
    ResourceMutator,
    config,
    get_resource_mutator,
)
from tests.fnjob.run_fixtures import fnjob_containers, with_fnjob_importable
from tests.tutorial import migrated

REGISTRY = "ghcr.io/ddung1203"


@pytest.fixture
def facade() -> FairingConfig:
    """A fresh facade per test (the module-level ``config`` is one such object)."""
    return FairingConfig()


def test_module_exposes_the_fairing_names() -> None:
    assert fairing.config is config
    assert isinstance(config, FairingConfig)
    assert fairing.get_resource_mutator is get_resource_mutator


def test_resource_mutator_reads_memory_in_gb_like_fairing(facade: FairingConfig) -> None:
    facade.set_builder(
        "append", image_name="fairing-job", registry=REGISTRY, base_image="python:3.11", push=True
    )
    facade.set_deployer("job", pod_spec_mutators=[get_resource_mutator(cpu=0.5, memory=0.5)])
    description = facade.job()
    # Fairing's conversion: GB / 1.073741824, rounded to 2 places, in Gi.
    assert description.resources.cpu == "500m"
    assert description.resources.memory == "0.47Gi"
    assert description.target == "ghcr.io/ddung1203/fairing-job"
    assert description.deployer == "job"
    assert description.building.builder == "append"
    assert description.security.service_account == "default-editor"
    limits = description.job_manifest("r/x:1")["spec"]["template"]["spec"]["containers"][0]
    assert limits["resources"]["requests"] == limits["resources"]["limits"]


@pytest.mark.parametrize(
    ("memory", "expected"),
    [(0.5, "0.47Gi"), (8, "7.45Gi"), (16, "14.9Gi"), ("8Gi", "8Gi"), ("512Mi", "512Mi")],
)
def test_memory_in_gb_becomes_gi_once_and_quantities_pass_through(
    memory: Any, expected: str
) -> None:
    assert get_resource_mutator(memory=memory).resources.memory == expected


def test_a_bad_resource_fails_where_the_mutator_is_made() -> None:
    with pytest.raises(ValueError, match="memory='8GB' is not a Kubernetes quantity"):
        get_resource_mutator(memory="8GB")


def test_gpu_namespace_and_cleanup_map_to_the_job(facade: FairingConfig) -> None:
    facade.set_builder("append", registry=REGISTRY, base_image="python:3.11")
    facade.set_deployer(
        "job",
        namespace="kubeflow-user",
        cleanup=False,
        pod_spec_mutators=[get_resource_mutator(gpu=2)],
    )
    description = facade.job()
    assert (description.resources.gpus, description.namespace, description.keep_job) == (
        2,
        "kubeflow-user",
        True,
    )
    assert description.image_name == "fairing-job"


def test_the_pytorchjob_deployer_is_a_distributed_run_on_master_and_workers(
    facade: FairingConfig,
) -> None:
    facade.set_builder("append", registry=REGISTRY, base_image="python:3.11")
    facade.set_deployer("pytorchjob", master_count=1, worker_count=3)
    description = facade.job()
    assert (description.deployer, description.nodes) == ("job", 4)
    with pytest.raises(FairingConfigError, match="master_count=2"):
        facade.set_deployer("pytorchjob", master_count=2, worker_count=1)
    with pytest.raises(FairingConfigError, match="worker_count=-1"):
        facade.set_deployer("pytorchjob", worker_count=-1)


def test_unknown_builder_and_deployer_list_the_allowed_ones(facade: FairingConfig) -> None:
    allowed_builders = "builder 'cluster' is not supported in fnjob; use one of: append, docker"
    with pytest.raises(FairingConfigError, match=allowed_builders):
        facade.set_builder("cluster", registry=REGISTRY)
    allowed_deployers = (
        "deployer 'tfjob' is not supported in fnjob; use one of: job, local, pytorchjob"
    )
    with pytest.raises(FairingConfigError, match=allowed_deployers):
        facade.set_deployer("tfjob")
    with pytest.raises(FairingConfigError, match="does not take dockerfile_path"):
        facade.set_builder("append", registry=REGISTRY, dockerfile_path="Dockerfile")
    with pytest.raises(FairingConfigError, match="push=False is not supported"):
        facade.set_builder("append", registry=REGISTRY, base_image="python:3.11", push=False)


def test_running_without_a_builder_says_what_to_call(
    facade: FairingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FNJOB_REGISTRY", raising=False)
    monkeypatch.delenv("FNJOB_BASE_IMAGE", raising=False)
    remote = facade.fn(print)
    with pytest.raises(FairingConfigError, match=r"call fairing.config.set_builder\('append'"):
        remote("hello")


def test_in_a_notebook_the_environment_is_the_builder(
    facade: FairingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the stack's PodDefault sets in every notebook of a profile.
    monkeypatch.setenv("FNJOB_REGISTRY", "123456789012.dkr.ecr.us-west-2.amazonaws.com/team-ml")
    monkeypatch.setenv("FNJOB_BASE_IMAGE", "ghcr.io/kubeflow/notebook@sha256:" + "b" * 64)
    description = facade.job()
    assert description.target == "123456789012.dkr.ecr.us-west-2.amazonaws.com/team-ml/fairing-job"
    assert description.base_image == "ghcr.io/kubeflow/notebook@sha256:" + "b" * 64
    # set_builder without registry/base_image takes them from there too.
    facade.set_builder("append", image_name="train")
    assert facade.job().target.endswith("/team-ml/train")


def test_other_pod_spec_mutators_are_refused_with_the_alternative(facade: FairingConfig) -> None:
    def add_volume(kube_manager: Any, pod_spec: Any, namespace: str) -> None:
        pass

    with pytest.raises(FairingConfigError, match="only get_resource_mutator"):
        facade.set_deployer("job", pod_spec_mutators=[add_volume])


def test_facades_do_not_share_state(facade: FairingConfig) -> None:
    other = FairingConfig()
    facade.set_builder("append", registry=REGISTRY, base_image="python:3.11")
    with pytest.raises(FairingConfigError):
        other.job()
    facade.reset()
    with pytest.raises(FairingConfigError):
        facade.job()
    assert get_resource_mutator(cpu=1) == ResourceMutator(Resources(cpu=1))


# -- Fairing's other entry points --------------------------------------------------------


def test_the_kubernetes_utils_import_path_works() -> None:
    from fnjob.fairing.kubernetes.utils import get_resource_mutator as from_utils

    assert from_utils is get_resource_mutator


@pytest.mark.parametrize(
    ("name", "alternative"),
    [
        ("TrainJob", r"fnjob.Job\(base_image"),
        ("cloud", "docker/podman login"),
        ("nope", "docs/fnjob.md"),
    ],
)
def test_fairing_names_fnjob_lacks_raise_a_typed_error_not_attribute_error(
    name: str, alternative: str
) -> None:
    with pytest.raises(
        FairingNotSupported, match=rf"fairing.{name} is not supported.*{alternative}"
    ):
        getattr(fairing, name)
    with pytest.raises(FairingNotSupported, match=rf"fairing.config.{name} is not supported"):
        getattr(config, name)
    with pytest.raises(FairingNotSupported, match=r"builder 'cluster'.*kaniko"):
        FairingConfig().set_builder("cluster")


def test_registry_and_base_image_default_to_the_notebook_environment(
    facade: FairingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FNJOB_REGISTRY", "123456789012.dkr.ecr.us-west-2.amazonaws.com/team")
    monkeypatch.setenv("FNJOB_BASE_IMAGE", "python:3.11")
    description = facade.job()
    assert description.registry == "123456789012.dkr.ecr.us-west-2.amazonaws.com/team"
    assert description.base_image == "python:3.11"


def test_preprocessor_input_files_and_requirements_reach_the_job(
    facade: FairingConfig, tmp_path: Path
) -> None:
    (tmp_path / "labels.txt").write_text("cat\n")
    (tmp_path / "requirements.txt").write_text("six==1.17.0\n")
    facade.set_builder("append", registry=REGISTRY, base_image="python:3.11", base_python="3.11")
    facade.set_preprocessor(
        "function",
        input_files=[str(tmp_path / "labels.txt"), str(tmp_path / "requirements.txt")],
    )
    description = facade.job()
    assert description.building.extra_files == (str(tmp_path / "labels.txt"),)
    assert description.building.requirements == str(tmp_path / "requirements.txt")
    assert description.building.base_python == "3.11"
    with pytest.raises(FairingConfigError, match="does not take output_map"):
        facade.set_preprocessor("python", output_map={})
    with pytest.raises(FairingNotSupported, match="preprocessor 'converted_notebook'"):
        facade.set_preprocessor("converted_notebook")


def test_config_run_needs_a_file_or_notebook_preprocessor(facade: FairingConfig) -> None:
    facade.set_builder("append", registry=REGISTRY, base_image="python:3.11")
    with pytest.raises(FairingConfigError, match=r"set_preprocessor\('python', executable="):
        facade.run()
    facade.set_preprocessor("notebook")
    with pytest.raises(FairingConfigError, match="needs notebook_file="):
        facade.run()


# -- the seed's example, for real --------------------------------------------------------

# The tutorial's script (seed, "fairing.config" section) with only the import lines changed,
# plus what this machine needs: a registry/base image that exist here, and the local
# deployer instead of a cluster.


@pytest.mark.real
def test_seed_hostname_example_runs_through_the_facade_with_the_local_deployer(
    tmp_path: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    script = tmp_path / "fairing_example.py"
    source = migrated(
        registry=f"{registry.host}/ddung1203", base_image=python_base, deployer="local"
    )
    script.write_text(source)
    # The engine's private config reaches podman through the inherited environment.
    env = with_fnjob_importable({**podman_env, "HOSTNAME": socket.gethostname()})
    completed = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[:3] == ["local show_hostname()", socket.gethostname(), "remote show_hostname()"]
    (remote_hostname,) = lines[3:]
    # podman names the container's host after the container: a different, non-empty name.
    assert remote_hostname and remote_hostname != socket.gethostname()
    assert fnjob_containers(podman_env) == []
    assert registry.tags("ddung1203/fairing-job")


# -- what ``import fnjob`` gives inside the image ---------------------------------------------


def _load_in_image_fnjob(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Import fnjob.run.inimage the way the image does: as the top-level ``fnjob``."""
    import importlib.util

    from fnjob.run import inimage

    for name in [n for n in sys.modules if n == "fnjob" or n.startswith("fnjob.")]:
        monkeypatch.delitem(sys.modules, name)
    spec = importlib.util.spec_from_file_location(
        "fnjob", inimage.__file__, submodule_search_locations=[]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fnjob", module)
    spec.loader.exec_module(module)
    return module


def test_in_image_fnjob_runs_functions_here_and_covers_fnjob_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fnjob as real

    names = set(real.__all__)
    errors = {
        name
        for name in names
        if isinstance(getattr(real, name), type) and issubclass(getattr(real, name), Exception)
    }
    image_fnjob = _load_in_image_fnjob(monkeypatch)
    from fnjob import fairing as image_fairing  # type: ignore[attr-defined]
    from fnjob.fairing.kubernetes.utils import get_resource_mutator as mutator

    assert image_fnjob.Job(base_image="b", registry="r").run(lambda x: x * 2, 21) == 42
    assert image_fnjob.job(gpus=1)(len)("abc") == 3
    image_fairing.config.set_builder("append", registry="r", base_image="b", push=True)
    image_fairing.config.set_deployer("job", pod_spec_mutators=[mutator(cpu=1, memory=2)])
    assert image_fairing.config.fn(lambda: "here")() == "here"
    # A module that describes its Job with the pieces at its top imports here too.
    pieces = image_fnjob.Job(
        resources=image_fnjob.Resources(gpus=1),
        scheduling=image_fnjob.Scheduling(gpu_group="gpu-spot"),
        volumes=image_fnjob.Volumes(claims=(image_fnjob.ClaimMount.parse("ws:/data"),)),
    )
    assert pieces.run(len, "ab") == 2
    with pytest.raises(image_fnjob.FnJobError, match="not available inside"):
        _ = image_fnjob.Resources(gpus=1).memory_bytes
    # Every name the real fnjob exports either works here or says why it does not.
    provided = {
        "Job",
        "job",
        "FnJobError",
        "Terminated",
        *image_fnjob.ERROR_NAMES,
        *image_fnjob.PIECE_NAMES,
    }
    assert errors <= provided
    assert set(image_fnjob.PIECE_NAMES) <= names
    # ``except fnjob.ClusterError`` catches the same errors in the image as here.
    for name in errors:
        for parent in errors:
            assert issubclass(getattr(image_fnjob, name), getattr(image_fnjob, parent)) == (
                issubclass(getattr(real, name), getattr(real, parent))
            ), (name, parent)
        assert issubclass(getattr(image_fnjob, name), ValueError) == (
            issubclass(getattr(real, name), ValueError)
        ), name
    for name in sorted(names - provided - {"__version__"}):
        with pytest.raises(image_fnjob.FnJobError, match="not available inside"):
            getattr(image_fnjob, name)
    assert issubclass(image_fnjob.JobFailed, image_fnjob.FnJobError)
