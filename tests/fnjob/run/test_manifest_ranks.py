"""The objects of a multi-node cluster run: an indexed Job and its headless Service, or a
TrainJob that survives the 26.03 TrainJob CRD the way the API server prunes it."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from fnjob import GpuGroups, Job, Lifecycle
from fnjob.run.gpugroups import load_gpu_groups
from tests.crd_schema import crd_errors, pruned
from tests.fnjob.conftest import GPU_SPOT_GROUPS
from tests.kubeflow.conftest import UPSTREAM_DATA, UPSTREAM_EXAMPLE_OUTPUT

IMAGE = "127.0.0.1:5000/fnjob@sha256:" + "a" * 64


@pytest.fixture
def gpu_groups(tmp_path: Path) -> GpuGroups:
    import json

    path = tmp_path / "gpu-groups.json"
    path.write_text(json.dumps(GPU_SPOT_GROUPS))
    return load_gpu_groups(path)


def job(gpu_groups: GpuGroups, **settings: Any) -> Job:
    return Job(
        base_image="b",
        registry="127.0.0.1:5000",
        gpus=1,
        gpu_group="gpu-spot",
        gpu_groups=gpu_groups,
        lifecycle=Lifecycle(rendezvous_timeout=300),
        **settings,
    )


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_without_trainer_the_run_is_an_indexed_job_behind_a_headless_service(
    gpu_groups: GpuGroups,
) -> None:
    indexed, service = job(gpu_groups, nodes=3).distributed_manifests(IMAGE, function_name="train")
    spec = indexed["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["backoffLimit"] == 0
    name = indexed["metadata"]["name"]
    pod = spec["template"]["spec"]
    # Pod i is <job>-<i>.<service>: node 0 is the master every rank dials.
    assert pod["subdomain"] == service["metadata"]["name"] == name
    env = env_of(pod["containers"][0])
    assert env["FNJOB_MASTER_ADDR"] == f"{name}-0.{name}"
    assert (env["FNJOB_NNODES"], env["FNJOB_NPROC_PER_NODE"]) == ("3", "1")
    assert env["FNJOB_RENDEZVOUS_TIMEOUT"] == "300"
    # Placed on the GPU group, without the Istio sidecar.
    assert pod["nodeSelector"] == {"kubeflow-eks.io/gpu-group": "gpu-spot"}
    assert {"key": "capacity", "operator": "Equal", "value": "spot", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert spec["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"fnjob/run-id": "000000000000"}
    assert len(f"{name}-2") <= 63


def test_with_a_runtime_the_run_is_a_trainjob_placing_its_nodes_on_the_gpu_group(
    gpu_groups: GpuGroups,
) -> None:
    [train_job] = job(gpu_groups, nodes=2, training_runtime="fnjob-torch").distributed_manifests(
        IMAGE
    )
    spec = train_job["spec"]
    assert spec["runtimeRef"]["name"] == "fnjob-torch"
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 1)
    assert trainer["command"] == ["python3", "/fnjob/runner.py"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "1"
    assert env_of(trainer)["FNJOB_NNODES"] == "2"
    [override] = spec["podTemplateOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]
    assert override["spec"]["nodeSelector"] == {"kubeflow-eks.io/gpu-group": "gpu-spot"}
    assert override["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    # The run's Secret (call and key) reaches the node container.
    [mount] = override["spec"]["containers"][0]["volumeMounts"]
    assert mount["mountPath"] == "/var/run/fnjob"


@pytest.fixture(scope="module")
def trainjob_crd() -> dict[str, Any]:
    data = Path(os.environ.get("KUBEFLOW_UPSTREAM_DATA") or UPSTREAM_DATA)
    output = data / UPSTREAM_EXAMPLE_OUTPUT
    if not output.is_file():
        pytest.skip(f"{UPSTREAM_EXAMPLE_OUTPUT} not found in {data} (KUBEFLOW_UPSTREAM_DATA)")
    with gzip.open(output, "rt") as stream:
        for text in stream.read().split("\n---\n"):
            if "name: trainjobs.trainer.kubeflow.org" in text:
                crd: dict[str, Any] = yaml.safe_load(text)
                return crd
    raise AssertionError("the 26.03 render has no TrainJob CRD")


def test_the_trainjob_keeps_every_field_through_the_26_03_crd(
    gpu_groups: GpuGroups, trainjob_crd: dict[str, Any]
) -> None:
    [train_job] = job(gpu_groups, nodes=2, training_runtime="fnjob-torch").distributed_manifests(
        IMAGE
    )
    stored, dropped = pruned(train_job, trainjob_crd)
    assert dropped == []
    assert stored == train_job
    assert crd_errors(train_job, trainjob_crd) == []


def test_the_prune_check_would_catch_a_placement_in_a_field_the_crd_lacks(
    gpu_groups: GpuGroups, trainjob_crd: dict[str, Any]
) -> None:
    [train_job] = job(gpu_groups, nodes=2, training_runtime="fnjob-torch").distributed_manifests(
        IMAGE
    )
    # Where older SDKs wrote placement: the deployed API drops it silently.
    train_job["spec"]["runtimePatches"] = [{"nodeSelector": {"a": "b"}}]
    _, dropped = pruned(train_job, trainjob_crd)
    assert dropped == [".spec.runtimePatches"]
