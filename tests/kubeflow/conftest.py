"""Shared fixtures: our Kustomize fixture rendered once with the real pinned kustomize."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.kubeflow.component import bcrypt_hash_with_seed
from components.kubeflow.manifests import RenderedManifests, render_manifests
from components.kubeflow.transform import KubeflowArgs, KubeflowCredentials, ProfileSpec
from stack.model import EksGpuGroup, Taint

FIXTURE_SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "kubeflow-manifests"
ADMIN_EMAIL = "ada@research.example.org"
ADMIN_PASSWORD = "a-long-admin-password"
DOCKER_CONFIG = json.dumps({"auths": {"registry.corp.example": {"auth": "dXNlcjpwYXNzd29yZA=="}}})


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
        docker_config_json=DOCKER_CONFIG,
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
    values: dict[str, object] = {
        "admin_email": ADMIN_EMAIL,
        "source": str(FIXTURE_SOURCE),
        "http_mode": True,
        "gpu_groups": (GPU_A10, GPU_BOTTLEROCKET),
        "notebook_images": ("registry.corp.example/notebooks/torch:2.5",),
        "profiles": (ProfileSpec("team-vision", "lin@research.example.org"),),
        "registry_access": "docker-config",
    }
    values.update(overrides)
    return KubeflowArgs(**values)  # type: ignore[arg-type]
