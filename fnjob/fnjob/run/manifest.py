"""Pure: the Kubernetes objects of one run, as plain dicts (no client, no I/O).

- ``build_job_manifest``: the batch/v1 Job. The image's own entrypoint runs the function
  (the same command the local deployer runs); the Job adds identity, resources, placement,
  a hardened security context and hygiene. It carries no argument: the pod mounts the
  run's Secret.
- ``build_run_secret``: that Secret, holding the pickled call and the key that signs the
  outcome. It is owned by the Job (``ownerReferences``), so deleting the Job with
  Foreground/Background propagation deletes it too.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fnjob.options import (
    RUN_DIR,
    SHM_PATH,
    Lifecycle,
    Resources,
    Scheduling,
    SecretEnv,
    Security,
    Volumes,
    check_env,
    check_labels,
    check_namespace,
    check_pieces,
    check_timeout,
)
from fnjob.run.gpugroups import GpuGroups, GpuPlacement, place_gpus
from fnjob.run.protocol import CALL_FILE, KEY_FILE

__all__ = [
    "CALLER_ANNOTATION",
    "CONTAINER_NAME",
    "CONTROLLER_UID_LABEL",
    "DEFAULT_REQUESTS",
    "RUN_ID_LABEL",
    "JobOptions",
    "RunSettings",
    "build_job_manifest",
    "build_run_secret",
    "run_secret_name",
]

# Who made the Job and which call it belongs to (for people and clean-up; the deployer
# finds the Job's pod by the Job's uid, which nobody else can choose).
RUN_ID_LABEL = "fnjob/run-id"
FUNCTION_LABEL = "fnjob/function"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# Who started the run (``fnjob.run.cleanup.caller_identity``), to find runs whose caller is gone.
CALLER_ANNOTATION = "fnjob/caller"
_FNJOB_LABELS = frozenset({RUN_ID_LABEL, FUNCTION_LABEL, MANAGED_BY_LABEL})
# Set by the Job controller on the pods it creates (Kubernetes 1.27+).
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
CONTAINER_NAME = "fnjob"
RUN_VOLUME = "fnjob-run"
SHM_VOLUME = "dshm"
# Requests when none are given: a pod without any is BestEffort (evicted first), and
# namespaces with a ResourceQuota refuse it. Only requests, so the pod may use more.
DEFAULT_REQUESTS: Mapping[str, str] = {"cpu": "500m", "memory": "1Gi"}
# Readable by the container's user whatever its uid; the volume is private to the pod.
_RUN_FILES_MODE = 0o444
# Reserved for fnjob's own use inside the container.
_RESERVED_ENV = frozenset({"FNJOB_RUN_DIR"})


# The defaults of the pieces ``fnjob.Job``'s shorthands build, compared by identity there:
# any other value was given by the caller.
DEFAULT_RESOURCES = Resources()
DEFAULT_SCHEDULING = Scheduling()


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a function runs: where, with what, as whom, for how long.

    Declared once, for the two classes that carry it: ``fnjob.Job`` (which adds what to
    build and which deployer) and ``JobOptions`` (which adds the GPU placement computed for
    the Kubernetes Job). ``namespace=None`` means the current one (the pod's own inside a
    cluster, else the kubeconfig context's). ``timeout`` (seconds) becomes
    ``activeDeadlineSeconds``; ``keep_job`` leaves a successful Job for inspection (its
    Secret is deleted anyway). ``gpu_groups`` are the cluster's GPU groups (see
    ``fnjob.run.gpugroups``).
    """

    namespace: str | None = None
    resources: Resources = DEFAULT_RESOURCES
    scheduling: Scheduling = DEFAULT_SCHEDULING
    security: Security = field(default_factory=Security)
    volumes: Volumes = field(default_factory=Volumes)
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: SecretEnv = field(default_factory=SecretEnv)
    labels: Mapping[str, str] = field(default_factory=dict)
    timeout: int | None = None
    keep_job: bool = False
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    gpu_groups: GpuGroups | None = None

    def __post_init__(self) -> None:
        self._check_run_settings()

    def _check_run_settings(self) -> None:
        """The checks every run's settings pass, whichever deployer runs them."""
        check_namespace(self.namespace)
        check_pieces(
            self,
            resources=Resources,
            scheduling=Scheduling,
            security=Security,
            volumes=Volumes,
            secret_env=SecretEnv,
            lifecycle=Lifecycle,
        )
        if self.gpu_groups is not None and not isinstance(self.gpu_groups, GpuGroups):
            raise ValueError(f"gpu_groups={self.gpu_groups!r} must be fnjob.GpuGroups or None")
        object.__setattr__(self, "env", check_env(self.env, reserved=_RESERVED_ENV))
        object.__setattr__(self, "labels", check_labels("labels", self.labels))
        check_timeout(self.timeout)
        if not isinstance(self.keep_job, bool):
            raise ValueError(f"keep_job={self.keep_job!r} must be True or False")

    def run_settings(self) -> dict[str, Any]:
        """These settings alone, as keyword arguments (of ``JobOptions``)."""
        return {item.name: getattr(self, item.name) for item in fields(RunSettings)}


@dataclass(frozen=True)
class JobOptions(RunSettings):
    """The settings of a Kubernetes Job run, with its GPU placement (computed from
    ``gpu_groups``, ``scheduling`` and ``resources.gpus``)."""

    placement: GpuPlacement | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        clashes = sorted(set(self.env) & set(self.secret_env.keys))
        if clashes:
            raise ValueError(f"env and secret_env both set {clashes}; set each variable once")
        taken = sorted(
            key for key in self.labels if key in _FNJOB_LABELS or key.startswith("fnjob/")
        )
        if taken:
            raise ValueError(f"labels may not set {taken}: fnjob sets them to find its runs")
        placement = place_gpus(self.resources.gpus, self.scheduling, self.gpu_groups)
        object.__setattr__(self, "placement", placement)


def _dns_label(text: str, *, max_length: int) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:max_length].rstrip("-")


def run_secret_name(run_id: str) -> str:
    """The name of the run's Secret (known before the Job exists: the pod mounts it)."""
    return f"fnjob-run-{run_id}"


def _resources(options: JobOptions) -> dict[str, dict[str, str]]:
    given: dict[str, str] = {}
    if options.resources.cpu is not None:
        given["cpu"] = str(options.resources.cpu)
    if options.resources.memory is not None:
        given["memory"] = str(options.resources.memory)
    if options.placement is not None:
        given[options.placement.resource] = str(options.resources.gpus)
    # Given amounts are requests and limits: predictable placement, and GPUs (extended
    # resources) must be limits anyway.
    requests = {**DEFAULT_REQUESTS, **given}
    return {"requests": requests, "limits": given} if given else {"requests": requests}


def _security_contexts(security: Security) -> tuple[dict[str, Any], dict[str, Any]]:
    pod: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if security.run_as_user is not None:
        pod["runAsUser"] = security.run_as_user
        if security.run_as_user != 0:
            pod["runAsNonRoot"] = True
    if security.run_as_group is not None:
        pod["runAsGroup"] = security.run_as_group
    if security.fs_group is not None:
        pod["fsGroup"] = security.fs_group
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod, container


def _env(options: JobOptions) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in options.env.items()]
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.key}}}
        for name, ref in options.secret_env.keys.items()
    ]
    return env


def _volumes(options: JobOptions, secret_name: str) -> tuple[list[Any], list[Any]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": RUN_VOLUME,
            "secret": {"secretName": secret_name, "defaultMode": _RUN_FILES_MODE},
        }
    ]
    mounts: list[dict[str, Any]] = [{"name": RUN_VOLUME, "mountPath": RUN_DIR, "readOnly": True}]
    for index, claim in enumerate(options.volumes.claims):
        name = f"claim-{index}"
        source: dict[str, Any] = {"claimName": claim.claim}
        if claim.read_only:
            source["readOnly"] = True
        volumes.append({"name": name, "persistentVolumeClaim": source})
        mounts.append({"name": name, "mountPath": claim.mount_path, "readOnly": claim.read_only})
    if options.volumes.shm_size is not None:
        volumes.append(
            {
                "name": SHM_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": str(options.volumes.shm_size)},
            }
        )
        mounts.append({"name": SHM_VOLUME, "mountPath": SHM_PATH})
    return volumes, mounts


def build_job_manifest(
    *,
    image: str,
    function_name: str,
    run_id: str,
    namespace: str,
    options: JobOptions,
    caller: str | None = None,
) -> dict[str, Any]:
    """The batch/v1 Job that runs ``image`` once, reading its call from the run's Secret;
    ``caller`` (who started it) becomes an annotation."""
    prefix = _dns_label(f"fnjob-{function_name}", max_length=52) or "fnjob"
    labels = {
        **options.labels,
        MANAGED_BY_LABEL: "fnjob",
        RUN_ID_LABEL: run_id,
        FUNCTION_LABEL: _dns_label(function_name, max_length=63) or "function",
    }
    pod_security, container_security = _security_contexts(options.security)
    volumes, mounts = _volumes(options, run_secret_name(run_id))
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "resources": _resources(options),
        "securityContext": container_security,
        "volumeMounts": mounts,
    }
    env = _env(options)
    if env:
        container["env"] = env
    if options.secret_env.secrets:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in options.secret_env.secrets]
    security = options.security
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": security.service_account_token,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": volumes,
    }
    if security.service_account:
        pod_spec["serviceAccountName"] = security.service_account
    if security.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in security.image_pull_secrets]
    node_selector = dict(options.scheduling.node_selector)
    tolerations = [dict(t) for t in options.scheduling.tolerations]
    if options.placement is not None:
        node_selector = {**options.placement.node_selector, **node_selector}
        tolerations = [dict(t) for t in options.placement.tolerations] + tolerations
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    pod_metadata: dict[str, Any] = {"labels": dict(labels)}
    if not options.lifecycle.istio_sidecar:
        pod_metadata["annotations"] = {"sidecar.istio.io/inject": "false"}
    spec: dict[str, Any] = {
        "backoffLimit": options.lifecycle.backoff_limit,
        "template": {"metadata": pod_metadata, "spec": pod_spec},
    }
    if options.timeout is not None:
        spec["activeDeadlineSeconds"] = options.timeout
    if options.lifecycle.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = options.lifecycle.ttl_seconds_after_finished
    metadata: dict[str, Any] = {
        "generateName": f"{prefix}-",
        "namespace": namespace,
        "labels": labels,
    }
    if caller is not None:
        metadata["annotations"] = {CALLER_ANNOTATION: caller}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def build_run_secret(
    *,
    run_id: str,
    namespace: str,
    job_name: str,
    job_uid: str,
    call: bytes,
    key: bytes,
    owner: tuple[str, str] = ("batch/v1", "Job"),
) -> dict[str, Any]:
    """The run's Secret: ``call`` and ``key`` for the runner, owned by (deleted with) the Job
    (or the ``owner`` (apiVersion, kind) named ``job_name``, e.g. a TrainJob)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": run_secret_name(run_id),
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: "fnjob", RUN_ID_LABEL: run_id},
            "ownerReferences": [
                {"apiVersion": owner[0], "kind": owner[1], "name": job_name, "uid": job_uid}
            ],
        },
        "type": "Opaque",
        # Nobody can swap the call or the key once the pod may read them.
        "immutable": True,
        "data": {
            CALL_FILE: base64.b64encode(call).decode("ascii"),
            KEY_FILE: base64.b64encode(key).decode("ascii"),
        },
    }
