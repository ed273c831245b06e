"""Pure: the Kubernetes objects of a multi-node run, as plain dicts (no client, no I/O).

Both shapes start from the single-pod Job of ``fnjob.run.manifest`` (same image, entrypoint,
resources, hardening, run Secret volume, placement on the GPU group) and make its pod one
node of N:

- without Trainer: ``build_indexed_job`` (``completionMode: Indexed``, parallelism =
  completions = N, no retry) and ``build_headless_service``, which gives pod ``i`` the name
  ``<job>-<i>.<service>``; node rank is the completion index (``JOB_COMPLETION_INDEX``);
- with Trainer: ``build_train_job``, a ``trainer.kubeflow.org/v1alpha1`` TrainJob on a
  ClusterTrainingRuntime the stack owns (``FNJOB_TRAINING_RUNTIME``). Trainer sets node rank
  and master address (``PET_*``); placement (nodeSelector and tolerations of the GPU group),
  the service account, the run Secret's volume and the no-sidecar annotation go through
  ``spec.podTemplateOverrides`` on the runtime's ``node`` job, the field the 26.03 CRD has
  for per-job pod overrides (the runtimes tolerate GPU taints; the TrainJob picks the group).
"""

from __future__ import annotations

import copy
from typing import Any

from fnjob.image.layer import ENTRYPOINT
from fnjob.run.manifest import CALLER_ANNOTATION, CONTAINER_NAME, RUN_ID_LABEL
from fnjob.run.ranks import DEFAULT_MASTER_PORT, launcher_env
from fnjob.run.runner import JOIN_PORT_OFFSET

__all__ = [
    "TRAINER_API_VERSION",
    "TRAINER_NODE_JOB",
    "build_headless_service",
    "build_indexed_job",
    "build_train_job",
    "distributed_name",
]

TRAINER_API_VERSION = "trainer.kubeflow.org/v1alpha1"
# The replicated job of the stack's torch runtimes whose pods run the training.
TRAINER_NODE_JOB = "node"
# Pod hostnames (``<job>-<index>``) are DNS labels: leave room for the index.
_NAME_LENGTH = 52


def distributed_name(job_manifest: dict[str, Any], run_id: str) -> str:
    """A fixed name for the run's objects (pods must know node 0's name before it exists):
    the single-pod Job's generateName prefix, cut to fit, and the run id."""
    prefix = str(job_manifest["metadata"]["generateName"]).rstrip("-")
    return f"{prefix[: _NAME_LENGTH - len(run_id) - 1].rstrip('-')}-{run_id}"


def _container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod_spec["containers"] if c["name"] == CONTAINER_NAME]
    return container


def build_indexed_job(
    job_manifest: dict[str, Any],
    *,
    run_id: str,
    nodes: int,
    nproc: int,
    rendezvous_timeout: float,
) -> dict[str, Any]:
    """The single-pod Job made into N indexed pods behind the run's headless Service."""
    job = copy.deepcopy(job_manifest)
    name = distributed_name(job_manifest, run_id)
    metadata = job["metadata"]
    del metadata["generateName"]
    metadata["name"] = name
    spec = job["spec"]
    spec.update(completionMode="Indexed", completions=nodes, parallelism=nodes, backoffLimit=0)
    pod_spec = spec["template"]["spec"]
    pod_spec["subdomain"] = name
    container = _container(pod_spec)
    env = launcher_env(
        nodes=nodes,
        nproc=nproc,
        rendezvous_timeout=rendezvous_timeout,
        master_addr=f"{name}-0.{name}",
    )
    container["env"] = [
        *container.get("env", []),
        *({"name": k, "value": v} for k, v in env.items()),
    ]
    return job


def build_headless_service(
    job: dict[str, Any], *, run_id: str, job_uid: str, master_port: int = DEFAULT_MASTER_PORT
) -> dict[str, Any]:
    """The headless Service naming the indexed Job's pods, owned by (deleted with) the Job.
    Addresses are published before pods are ready: ranks meet while starting."""
    name = job["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": job["metadata"]["namespace"],
            "labels": dict(job["metadata"]["labels"]),
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uid}
            ],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {RUN_ID_LABEL: run_id},
            "ports": [
                {"name": "torch", "port": master_port},
                {"name": "fnjob-join", "port": master_port + JOIN_PORT_OFFSET},
            ],
        },
    }


def build_train_job(
    job_manifest: dict[str, Any],
    *,
    run_id: str,
    runtime: str,
    nodes: int,
    nproc: int,
    rendezvous_timeout: float,
) -> dict[str, Any]:
    """The TrainJob running the single-pod Job's container on ``nodes`` nodes of ``runtime``."""
    pod_template = job_manifest["spec"]["template"]
    pod_spec = pod_template["spec"]
    container = _container(pod_spec)
    env = launcher_env(
        nodes=nodes,
        nproc=nproc,
        rendezvous_timeout=rendezvous_timeout,
        master_addr=None,
        master_port=None,
    )
    trainer: dict[str, Any] = {
        "image": container["image"],
        "command": list(ENTRYPOINT),
        "numNodes": nodes,
        "numProcPerNode": nproc,
        "resourcesPerNode": copy.deepcopy(container["resources"]),
        "env": [
            *copy.deepcopy(container.get("env", [])),
            *({"name": k, "value": v} for k, v in env.items()),
        ],
    }
    override_spec: dict[str, Any] = {
        "volumes": copy.deepcopy(pod_spec["volumes"]),
        "containers": [
            {"name": TRAINER_NODE_JOB, "volumeMounts": copy.deepcopy(container["volumeMounts"])}
        ],
    }
    for key in ("serviceAccountName", "nodeSelector", "tolerations", "imagePullSecrets"):
        if key in pod_spec:
            override_spec[key] = copy.deepcopy(pod_spec[key])
    labels = dict(job_manifest["metadata"]["labels"])
    metadata: dict[str, Any] = {
        "name": distributed_name(job_manifest, run_id),
        "namespace": job_manifest["metadata"]["namespace"],
        "labels": labels,
    }
    caller = job_manifest["metadata"].get("annotations", {}).get(CALLER_ANNOTATION)
    if caller is not None:
        metadata["annotations"] = {CALLER_ANNOTATION: caller}
    return {
        "apiVersion": TRAINER_API_VERSION,
        "kind": "TrainJob",
        "metadata": metadata,
        "spec": {
            "runtimeRef": {
                "apiGroup": "trainer.kubeflow.org",
                "kind": "ClusterTrainingRuntime",
                "name": runtime,
            },
            "labels": dict(labels),
            "trainer": trainer,
            "podTemplateOverrides": [
                {
                    "targetJobs": [{"name": TRAINER_NODE_JOB}],
                    "metadata": copy.deepcopy(pod_template["metadata"]),
                    "spec": override_spec,
                }
            ],
        },
    }
