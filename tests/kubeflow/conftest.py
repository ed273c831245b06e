"""Shared fixtures: our small Kustomize fixture (unit tests) and upstream's real release.

Upstream Kubeflow 26.03, prepared for offline use, lives beside the project in
`../shared/upstream/` (a tarball of the whole tree and its plain `kustomize build example`
output; its README says how it was made). The tarball is unpacked once per test session.
`KUBEFLOW_UPSTREAM_DATA` names another folder holding those files; `KUBEFLOW_UPSTREAM_DIR`
names an already unpacked checkout instead. Without either, the tests that need it skip.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from components.kubeflow.component import bcrypt_hash_with_seed
from components.kubeflow.manifests import RenderedManifests, render_manifests
from components.kubeflow.transform import KubeflowArgs, KubeflowCredentials
from model import EksGpuGroup, Taint
from model.kubeflow import Kubeflow, Profile, Quota

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_SOURCE = REPO_ROOT / "tests" / "fixtures" / "kubeflow-manifests"
UPSTREAM_DATA = REPO_ROOT.parent / "shared" / "upstream"
UPSTREAM_TARBALL = "kubeflow-manifests-26.03-offline.tar.gz"
UPSTREAM_EXAMPLE_OUTPUT = "kubeflow-26.03-example.yaml.gz"
UPSTREAM_TOP_FOLDER = "kubeflow-manifests-26.03"
ADMIN_EMAIL = "ada@research.example.org"
ADMIN_PASSWORD = "a-long-admin-password"
DOCKER_CONFIG = json.dumps({"auths": {"registry.corp.example": {"auth": "dXNlcjpwYXNzd29yZA=="}}})
# Each profile has its own credentials; the admin's must never reach team-vision.
ADMIN_DOCKER_CONFIG = json.dumps({"auths": {"registry.corp.example": {"auth": "YWRtaW46c2VjcmV0"}}})


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> RenderedManifests:
    cache = tmp_path_factory.mktemp("kubeflow-cache")
    return render_manifests(str(FIXTURE_SOURCE), cache_dir=cache)


@pytest.fixture(scope="session")
def credentials() -> KubeflowCredentials:
    return KubeflowCredentials(
        admin_password_hash=bcrypt_hash_with_seed(ADMIN_PASSWORD, "seed-1", rounds=4),
        oidc_client_secret="oidc-Qx7pL2mN9vR4tY8wZ3kJ6hF1",
        oauth2_proxy_cookie_secret="c" * 16 + "K" * 16,
        katib_db_password="katib-db-Hs83jdP2",
        pipelines_db_password="kfp-db-Ue92kdL1",
        pipelines_object_store_access_key="AKIAKFPSTACKACCESS1",
        pipelines_object_store_secret_key="kfp-object-store-secret-8d7f6g5h4j3k2l1",
        docker_configs={
            "team-vision": DOCKER_CONFIG,
            "kubeflow-user-example-com": ADMIN_DOCKER_CONFIG,
        },
    )


GPU_TAINT = Taint(key="nvidia.com/gpu", value="true", effect="NoSchedule")
GPU_A10 = EksGpuGroup(
    name="a10g", instance_types=("g5.xlarge",), labels={"team": "vision"}, taints=(GPU_TAINT,)
)
GPU_BOTTLEROCKET = EksGpuGroup(
    name="l4-bottlerocket",
    instance_types=("g6.xlarge",),
    ami_type="BOTTLEROCKET_x86_64_NVIDIA",
    taints=(GPU_TAINT, Taint(key="dedicated", value="ml", effect="NoExecute")),
)


def make_args(**overrides: object) -> KubeflowArgs:
    """The unit tests' arguments: keywords of the model's ``Kubeflow`` (the stack file's
    kubeflow section), and ``gpu_groups`` and ``access`` of ``KubeflowArgs``."""
    outer: dict[str, object] = {"gpu_groups": (GPU_A10, GPU_BOTTLEROCKET)}
    outer.update({k: overrides.pop(k) for k in ("gpu_groups", "access") if k in overrides})
    values: dict[str, object] = {
        "admin_email": ADMIN_EMAIL,
        "local_path": str(FIXTURE_SOURCE),
        "protocol": "http",
        "notebook_images": ("registry.corp.example/notebooks/torch:2.5",),
        "profiles": (Profile(name="team-vision", owner="lin@research.example.org"),),
        "registry_access": "docker-config",
        "default_quota": Quota(),
    }
    values.update(overrides)
    return KubeflowArgs(Kubeflow(**values), **outer)  # type: ignore[arg-type]


# --- upstream's real release ----------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamRelease:
    """An unpacked kubeflow/manifests 26.03 tree, and its plain kustomize output if known."""

    source: Path
    example_output: Path | None


def find_upstream_release(unpack_into: Path) -> UpstreamRelease | str:
    """The release, unpacked into `unpack_into` when it comes as the tarball; else why not."""
    checkout = os.environ.get("KUBEFLOW_UPSTREAM_DIR")
    data = Path(os.environ.get("KUBEFLOW_UPSTREAM_DATA") or UPSTREAM_DATA)
    output = data / UPSTREAM_EXAMPLE_OUTPUT
    example_output = output if output.is_file() else None
    if checkout:
        source = Path(checkout)
        if not (source / "example" / "kustomization.yaml").is_file():
            return f"KUBEFLOW_UPSTREAM_DIR={checkout} has no example/kustomization.yaml"
        return UpstreamRelease(source.resolve(), example_output)
    tarball = data / UPSTREAM_TARBALL
    if not tarball.is_file():
        return (
            f"upstream Kubeflow 26.03 test data not found: no {UPSTREAM_TARBALL} in {data} "
            "(set KUBEFLOW_UPSTREAM_DATA to the folder holding it), and KUBEFLOW_UPSTREAM_DIR "
            "(an unpacked kubeflow/manifests 26.03 checkout) is not set"
        )
    with tarfile.open(tarball) as archive:
        archive.extractall(unpack_into, filter="data")
    return UpstreamRelease(unpack_into / UPSTREAM_TOP_FOLDER, example_output)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> UpstreamRelease:
    found = find_upstream_release(tmp_path_factory.mktemp("upstream"))
    if isinstance(found, str):
        pytest.skip(found)
    return found


PREVIOUS_TARBALL = "kubeflow-manifests-v1.10.2-offline.tar.gz"
PREVIOUS_EXAMPLE_OUTPUT = "kubeflow-v1.10.2-example.yaml.gz"
PREVIOUS_TOP_FOLDER = "kubeflow-manifests-v1.10.2"


@pytest.fixture(scope="session")
def previous_upstream(tmp_path_factory: pytest.TempPathFactory) -> UpstreamRelease:
    """Upstream v1.10.2, the release before 26.03 (the older side of upgrade tests)."""
    data = Path(os.environ.get("KUBEFLOW_UPSTREAM_DATA") or UPSTREAM_DATA)
    tarball = data / PREVIOUS_TARBALL
    if not tarball.is_file():
        pytest.skip(f"upstream Kubeflow v1.10.2 test data not found: {tarball} is missing")
    unpack_into = tmp_path_factory.mktemp("previous-upstream")
    with tarfile.open(tarball) as archive:
        archive.extractall(unpack_into, filter="data")
    output = data / PREVIOUS_EXAMPLE_OUTPUT
    return UpstreamRelease(unpack_into / PREVIOUS_TOP_FOLDER, output if output.is_file() else None)


def load_example_output(path: Path) -> list[dict[str, object]]:
    """The objects of a gzipped `kustomize build example` output."""
    with gzip.open(path, "rt") as stream:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        return [d for d in yaml.load_all(stream, Loader=loader) if d]


@pytest.fixture(scope="session")
def upstream_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upstream-render-cache")


@pytest.fixture(scope="session")
def upstream_rendered(upstream: UpstreamRelease, upstream_cache: Path) -> RenderedManifests:
    """upstream's whole example (Trainer included), rendered the way the stack renders it."""
    return render_manifests(str(upstream.source), cache_dir=upstream_cache)


@pytest.fixture(scope="session")
def upstream_example_objects(upstream: UpstreamRelease) -> list[dict[str, object]]:
    """The objects of upstream's own `kustomize build example` output."""
    if upstream.example_output is None:
        pytest.skip(f"{UPSTREAM_EXAMPLE_OUTPUT} is not beside the upstream data")
    return load_example_output(upstream.example_output)


def make_upstream_args(source: Path, **overrides: object) -> KubeflowArgs:
    """The unit-test arguments, pointed at the real release."""
    return make_args(local_path=str(source), **overrides)
