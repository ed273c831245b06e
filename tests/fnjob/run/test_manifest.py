"""The Job and the run's Secret, pure: what gets submitted, validated (strict) against the
Kubernetes schema."""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes_validate
import pytest

from fnjob.options import (
    ClaimMount,
    Lifecycle,
    Resources,
    Scheduling,
    SecretEnv,
    SecretKey,
    Security,
    Volumes,
)
from fnjob.run.gpugroups import GpuGroups
from fnjob.run.manifest import JobOptions, build_job_manifest, build_run_secret
from tests.fnjob.conftest import GPU_SPOT_GROUPS

K8S_VERSION = "1.34"
IMAGE = "registry.example:5000/team/fnjob-train@sha256:" + "a" * 64


def manifest(**options: Any) -> dict[str, Any]:
    return build_job_manifest(
        image=IMAGE,
        function_name="train_model",
        run_id="abc123def456",
        namespace="team-a",
        options=JobOptions(**options),
    )


def assert_valid(obj: dict[str, Any]) -> None:
    # Raises ValidationError on any unknown field or wrong type (strict).
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def test_cpu_job_carries_resources_hygiene_and_no_argument() -> None:
    job = manifest(namespace="team-a", resources=Resources(cpu=2, memory="8Gi"), timeout=600)
    assert_valid(job)
    spec = job["spec"]
    pod = pod_of(job)
    container = pod["containers"][0]
    assert job["metadata"]["generateName"] == "fnjob-train-model-"
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["labels"]["fnjob/run-id"] == "abc123def456"
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "default-editor"
    assert container["image"] == IMAGE
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    # No GPU asked: no GPU placement either.
    assert "tolerations" not in pod and "nodeSelector" not in pod
    # Kubeflow namespaces inject Istio; a sidecar would keep the Job running forever.
    assert spec["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # Nothing of the call is in the Job: anyone who can read Jobs or pods reads the spec.
    assert "FNJOB_CALL" not in json.dumps(job)
    assert "env" not in container


def test_the_pod_is_hardened_by_default() -> None:
    job = manifest()
    assert_valid(job)
    pod = pod_of(job)
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    # Without resources asked for, default requests (and no limits).
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}}
    assert "activeDeadlineSeconds" not in job["spec"]


def test_identity_options_reach_the_pod() -> None:
    job = manifest(
        security=Security(
            run_as_user=1000,
            run_as_group=100,
            fs_group=100,
            service_account_token=True,
            service_account=None,
            image_pull_secrets=("ecr-pull",),
        )
    )
    assert_valid(job)
    pod = pod_of(job)
    assert pod["securityContext"] == {
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 1000,
        "runAsNonRoot": True,
        "runAsGroup": 100,
        "fsGroup": 100,
    }
    assert pod["automountServiceAccountToken"] is True
    assert "serviceAccountName" not in pod
    assert pod["imagePullSecrets"] == [{"name": "ecr-pull"}]


def test_the_run_secret_is_mounted_read_only_where_the_runner_reads_it() -> None:
    job = manifest()
    pod = pod_of(job)
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "fnjob-run-abc123def456"
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": "/var/run/fnjob", "readOnly": True}


def test_the_run_secret_holds_call_and_key_and_is_owned_by_the_job() -> None:
    secret = build_run_secret(
        run_id="abc123def456",
        namespace="team-a",
        job_name="fnjob-train-x7k2p",
        job_uid="0b8e6c5e-1111-2222-3333-444455556666",
        call=b"pickled call",
        key=b"k" * 32,
    )
    assert_valid(secret)
    assert secret["metadata"]["name"] == "fnjob-run-abc123def456"
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "fnjob-train-x7k2p",
            "uid": "0b8e6c5e-1111-2222-3333-444455556666",
        }
    ]
    assert secret["immutable"] is True
    assert base64.b64decode(secret["data"]["call"]) == b"pickled call"
    assert base64.b64decode(secret["data"]["key"]) == b"k" * 32


def test_gpu_job_without_groups_file_gets_the_default_placement() -> None:
    job = manifest(resources=Resources(gpus=2), env={"WANDB_MODE": "offline"})
    assert_valid(job)
    pod = pod_of(job)
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == {
        "cpu": "500m",
        "memory": "1Gi",
        "nvidia.com/gpu": "2",
    }
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert container["env"] == [{"name": "WANDB_MODE", "value": "offline"}]


def test_gpu_job_in_a_group_uses_the_groups_placement_not_the_defaults() -> None:
    groups = GpuGroups.from_document(
        GPU_SPOT_GROUPS,
        source="gpu-groups.json",
    )
    job = manifest(
        resources=Resources(gpus=1),
        scheduling=Scheduling(node_selector={"topology.kubernetes.io/zone": "us-west-2a"}),
        gpu_groups=groups,
    )
    assert_valid(job)
    pod = pod_of(job)
    assert pod["nodeSelector"] == {
        "kubeflow-eks.io/gpu-group": "gpu-spot",
        "topology.kubernetes.io/zone": "us-west-2a",
    }
    assert pod["tolerations"] == [
        {"key": "capacity", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}
    ]
    assert "nvidia.com/gpu.present" not in json.dumps(pod)


def test_claims_shm_and_secret_env_are_in_the_pod() -> None:
    job = manifest(
        volumes=Volumes(
            claims=(
                ClaimMount("workspace-nb", "/home/jovyan", read_only=True),
                ClaimMount("datasets", "/data"),
            ),
            shm_size="2Gi",
        ),
        secret_env=SecretEnv(
            secrets=("wandb",), keys={"HF_TOKEN": SecretKey("huggingface", "token")}
        ),
    )
    assert_valid(job)
    pod = pod_of(job)
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    workspace = volumes[mounts["/home/jovyan"]["name"]]
    assert workspace["persistentVolumeClaim"] == {"claimName": "workspace-nb", "readOnly": True}
    assert mounts["/home/jovyan"]["readOnly"] is True
    data = volumes[mounts["/data"]["name"]]
    assert data["persistentVolumeClaim"] == {"claimName": "datasets"}
    assert mounts["/data"]["readOnly"] is False
    shm = volumes[mounts["/dev/shm"]["name"]]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert container["envFrom"] == [{"secretRef": {"name": "wandb"}}]
    assert container["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "huggingface", "key": "token"}}}
    ]


def test_lifecycle_options_reach_the_job() -> None:
    job = manifest(
        labels={"team": "vision"},
        lifecycle=Lifecycle(backoff_limit=2, ttl_seconds_after_finished=60, istio_sidecar=True),
    )
    assert_valid(job)
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert "annotations" not in job["spec"]["template"]["metadata"]
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "vision"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"namespace": "Team_A"}, "not a valid namespace"),
        ({"timeout": 0}, "timeout=0 must be a whole number of seconds > 0"),
        ({"env": {"FNJOB_RUN_DIR": "/tmp"}}, "may not set FNJOB_RUN_DIR"),
        ({"env": {"A B": "x"}}, "not a valid environment variable name"),
        ({"resources": {"cpu": 1}}, "must be a fnjob.Resources(...)"),
        (
            {"env": {"TOKEN": "x"}, "secret_env": SecretEnv(keys={"TOKEN": SecretKey("s", "k")})},
            "both set ['TOKEN']",
        ),
        ({"scheduling": Scheduling(gpu_group="gpu-spot")}, "needs GPUs"),
    ],
)
def test_bad_options_name_the_field_and_the_value(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError) as caught:
        JobOptions(**options)
    assert words in str(caught.value)
