"""Run a built image as a Kubernetes Job and get the function's outcome back.

Two halves, kept apart so most of the logic is tested without a cluster:

* ``JobOptions`` + ``build_job_manifest``: pure, returns the batch/v1 Job as a plain dict.
* ``JobDeployer``: the I/O through the official ``kubernetes`` client: create the Job,
  wait for its pod, stream the logs live, wait for the ``Complete``/``Failed`` condition,
  turn the runner's protocol line into the return value (or the remote exception), and
  delete the Job, always when something goes wrong (Ctrl-C included).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fnjob.errors import FnJobError
from fnjob.protocol import CALL_ENV_VAR

# Who made the Job and which call it belongs to; also how the pod is found again.
RUN_ID_LABEL = "fnjob/run-id"
FUNCTION_LABEL = "fnjob/function"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
CONTAINER_NAME = "fnjob"
CALL_ENV = CALL_ENV_VAR
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    MappingProxyType({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}),
)
DEFAULT_GPU_NODE_SELECTOR: Mapping[str, str] = MappingProxyType({"nvidia.com/gpu.present": "true"})
LAST_LOG_LINES = 20

# Container waiting reasons that will not fix themselves: fail fast with the kubelet's message.
_HOPELESS_WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)

LogSink = Callable[[str], None]
StatusSink = Callable[[str], None]


# ---------------------------------------------------------------------------------------
# Errors


class ClusterError(FnJobError):
    """The Kubernetes API refused or failed a request (status and the API's message)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClusterAccessDenied(ClusterError):
    """401/403 from the API: credentials missing, expired, or lacking RBAC permission."""


class ClusterConfigError(ClusterError):
    """No way to reach a cluster: not inside a pod and no usable kubeconfig."""


class JobFailed(FnJobError):
    """The Job failed without the function reporting an exception of its own.

    ``reason`` is what Kubernetes said (``OOMKilled``, ``ImagePullBackOff``,
    ``Unschedulable``, ``DeadlineExceeded``, ``Error``...), ``exit_code`` the container's
    exit code when it ran, ``last_logs`` the final lines it printed.
    """

    def __init__(
        self,
        job_name: str,
        *,
        reason: str,
        message: str = "",
        exit_code: int | None = None,
        last_logs: Sequence[str] = (),
    ) -> None:
        self.job_name = job_name
        self.reason = reason
        self.detail = message
        self.exit_code = exit_code
        self.last_logs = tuple(last_logs)
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"job {self.job_name} failed: {self.reason}"
        if self.exit_code is not None:
            text += f" (exit code {self.exit_code})"
        if self.detail:
            text += f": {self.detail}"
        hint = _REASON_HINTS.get(self.reason)
        if hint:
            text += f"\nhint: {hint}"
        if self.last_logs:
            text += "\nlast log lines:\n  " + "\n  ".join(self.last_logs)
        return text


class JobTimeout(JobFailed):
    """The Job ran past its deadline (``activeDeadlineSeconds``) and Kubernetes stopped it."""


_REASON_HINTS = {
    "OOMKilled": "the container ran out of memory; ask for more (memory=...)",
    "ImagePullBackOff": "the node cannot pull the image: check the registry name and that the "
    "service account has an imagePullSecret for it (or the nodes have registry access)",
    "ErrImagePull": "the node cannot pull the image: check the registry name and that the "
    "service account has an imagePullSecret for it (or the nodes have registry access)",
    "Unschedulable": "no node can take the pod: lower cpu/memory/gpus, or add GPU nodes",
    "DeadlineExceeded": "raise timeout=... or make the function faster",
}


# ---------------------------------------------------------------------------------------
# Pure: quantities and the Job manifest

_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_SUFFIX_FACTOR = {
    None: 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def _quantity_value(text: str) -> float | None:
    """The numeric value of a Kubernetes quantity string, or None when it is not one."""
    match = _QUANTITY.match(text)
    if match is None:
        return None
    suffix = match.group("suffix")
    number = float(match.group("number"))
    if suffix and suffix[0] in "eE":
        return number * 10.0 ** int(suffix[1:])
    return number * _SUFFIX_FACTOR[suffix]


def cpu_quantity(value: str | float | int, *, field_name: str = "cpu") -> str:
    """Normalise a CPU amount: a number of cores (0.5, 2) or a quantity ("500m", "2")."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(
            f"{field_name}={value!r} is not a CPU amount; use cores as a number (0.5, 2) "
            'or a Kubernetes quantity ("500m", "2")'
        )
    if isinstance(value, str):
        amount = _quantity_value(value.strip())
        if amount is None:
            raise ValueError(
                f"{field_name}={value!r} is not a Kubernetes quantity; "
                'use e.g. "500m", "2" or a number of cores'
            )
        text = value.strip()
    else:
        amount = float(value)
        millicores = round(amount * 1000)
        text = str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"
    if amount < 0.001:
        raise ValueError(f"{field_name}={value!r} is below the smallest CPU amount (1m)")
    return text


def memory_quantity(value: str | float | int, *, field_name: str = "memory") -> str:
    """Normalise a memory amount: a quantity ("8Gi", "512Mi") or a number of GiB (0.5, 8)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(
            f"{field_name}={value!r} is not a memory amount; use a Kubernetes quantity "
            '("8Gi", "512Mi") or a number of GiB (0.5, 8)'
        )
    if isinstance(value, str):
        text = value.strip()
        amount = _quantity_value(text)
        if amount is None:
            raise ValueError(
                f"{field_name}={value!r} is not a Kubernetes quantity; "
                'use e.g. "8Gi", "512Mi", or a number of GiB'
            )
    else:
        mebibytes = round(float(value) * 1024)
        text = f"{mebibytes}Mi"
        amount = mebibytes * 2.0**20
    if amount < 2.0**20:
        raise ValueError(
            f"{field_name}={value!r} is less than 1Mi (a bare number in a string is bytes); "
            'write the unit, e.g. "8Gi"'
        )
    return text


def _dns_label(text: str, *, max_length: int) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:max_length].rstrip("-")


@dataclass(frozen=True)
class JobOptions:
    """How the Job runs: where, with which resources and identity, for how long.

    ``cpu``/``memory`` take Kubernetes quantities or numbers (cores, GiB); ``gpus`` asks
    for ``nvidia.com/gpu`` and, by default, tolerates the GPU taint and selects GPU nodes.
    ``namespace=None`` means the current one (the pod's own inside a cluster, else the
    kubeconfig context's).
    """

    namespace: str | None = None
    cpu: str | float | int | None = None
    memory: str | float | int | None = None
    gpus: int = 0
    service_account: str | None = "default-editor"
    image_pull_secrets: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: int | None = None
    backoff_limit: int = 0
    ttl_seconds_after_finished: int | None = 3600
    delete_on_completion: bool = True
    gpu_tolerations: tuple[Mapping[str, str], ...] = DEFAULT_GPU_TOLERATIONS
    gpu_node_selector: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_GPU_NODE_SELECTOR)
    )
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, str], ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    # Kubeflow namespaces inject an Istio sidecar, which never exits: the Job would never
    # complete. Off unless asked for.
    istio_sidecar: bool = False
    # How long a pod may stay unschedulable before giving up (GPU nodes scaling up from
    # zero take minutes). None waits until the Job's own deadline.
    unschedulable_timeout_seconds: float | None = 600.0
    poll_interval_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.namespace is not None and not re.fullmatch(
            r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.namespace
        ):
            raise ValueError(
                f"namespace={self.namespace!r} is not a valid namespace name "
                "(lowercase letters, digits and '-')"
            )
        if self.cpu is not None:
            object.__setattr__(self, "cpu", cpu_quantity(self.cpu))
        if self.memory is not None:
            object.__setattr__(self, "memory", memory_quantity(self.memory))
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"gpus={self.gpus!r} must be a whole number >= 0")
        for name in ("timeout_seconds", "ttl_seconds_after_finished"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ValueError(f"{name}={value!r} must be a whole number of seconds > 0")
        if (
            isinstance(self.backoff_limit, bool)
            or not isinstance(self.backoff_limit, int)
            or self.backoff_limit < 0
        ):
            raise ValueError(f"backoff_limit={self.backoff_limit!r} must be a whole number >= 0")
        if isinstance(self.image_pull_secrets, str):
            raise ValueError(
                f"image_pull_secrets={self.image_pull_secrets!r} must be a list of secret names"
            )
        object.__setattr__(self, "image_pull_secrets", tuple(self.image_pull_secrets))
        for name in ("env", "node_selector", "gpu_node_selector", "labels"):
            object.__setattr__(self, name, _frozen_str_mapping(name, getattr(self, name)))
        if CALL_ENV in self.env:
            raise ValueError(f"env may not set {CALL_ENV}: fnjob passes the call arguments in it")
        for name in ("tolerations", "gpu_tolerations"):
            object.__setattr__(
                self, name, tuple(MappingProxyType(dict(t)) for t in getattr(self, name))
            )
        if self.poll_interval_seconds <= 0:
            raise ValueError(
                f"poll_interval_seconds={self.poll_interval_seconds!r} must be > 0 seconds"
            )


def _frozen_str_mapping(name: str, value: Mapping[str, str]) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}={value!r} must be a mapping of strings to strings")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError(f"{name}[{key!r}]={item!r}: keys and values must be strings")
    return MappingProxyType(dict(value))


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def build_job_manifest(
    *, image: str, call: str, function_name: str, run_id: str, options: JobOptions
) -> dict[str, Any]:
    """The batch/v1 Job that runs ``image`` once with the encoded call in ``FNJOB_CALL``.

    The image's own entrypoint runs the function (the same command the local deployer
    runs); the Job adds only identity, resources, placement and hygiene.
    """
    prefix = _dns_label(f"fnjob-{function_name}", max_length=52) or "fnjob"
    labels = {
        **options.labels,
        MANAGED_BY_LABEL: "fnjob",
        RUN_ID_LABEL: run_id,
        FUNCTION_LABEL: _dns_label(function_name, max_length=63) or "function",
    }
    env = [{"name": CALL_ENV, "value": call}]
    env += [{"name": key, "value": value} for key, value in options.env.items()]
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": image, "env": env}
    resources = _resources(options)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if options.service_account:
        pod_spec["serviceAccountName"] = options.service_account
    if options.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in options.image_pull_secrets]
    node_selector = dict(options.node_selector)
    tolerations = [dict(t) for t in options.tolerations]
    if options.gpus > 0:
        node_selector = {**options.gpu_node_selector, **node_selector}
        tolerations = [dict(t) for t in options.gpu_tolerations] + tolerations
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    pod_metadata: dict[str, Any] = {"labels": dict(labels)}
    if not options.istio_sidecar:
        pod_metadata["annotations"] = {"sidecar.istio.io/inject": "false"}
    spec: dict[str, Any] = {
        "backoffLimit": options.backoff_limit,
        "template": {"metadata": pod_metadata, "spec": pod_spec},
    }
    if options.timeout_seconds is not None:
        spec["activeDeadlineSeconds"] = options.timeout_seconds
    if options.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = options.ttl_seconds_after_finished
    metadata: dict[str, Any] = {"generateName": f"{prefix}-", "labels": labels}
    if options.namespace is not None:
        metadata["namespace"] = options.namespace
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _resources(options: JobOptions) -> dict[str, dict[str, str]]:
    amounts: dict[str, str] = {}
    if options.cpu is not None:
        amounts["cpu"] = str(options.cpu)
    if options.memory is not None:
        amounts["memory"] = str(options.memory)
    if options.gpus > 0:
        amounts[GPU_RESOURCE] = str(options.gpus)
    if not amounts:
        return {}
    # Requests equal limits: predictable placement, and GPUs must be in limits anyway.
    return {"requests": dict(amounts), "limits": dict(amounts)}


# ---------------------------------------------------------------------------------------
# Cluster connection

_SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def connect(*, context: str | None = None) -> Any:
    """An ``ApiClient``: in-cluster config inside a pod, the kubeconfig elsewhere."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as error:
            raise ClusterConfigError(
                f"inside a pod but cannot use its service account: {error}"
            ) from None
        return client.ApiClient(configuration)
    try:
        # KUBECONFIG is read here, not at import: a notebook may set it after importing.
        return config.new_client_from_config(config_file=_kubeconfig_path(), context=context)
    except (config.ConfigException, OSError) as error:
        raise ClusterConfigError(
            f"no usable kubeconfig ({error}); set KUBECONFIG or run inside the cluster"
        ) from None


def _kubeconfig_path() -> str | None:
    return os.environ.get("KUBECONFIG") or None


def current_namespace(*, context: str | None = None) -> str:
    """The namespace a Job goes to when none is given."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        namespace_file = _SERVICE_ACCOUNT_DIR / "namespace"
        if namespace_file.is_file():
            return namespace_file.read_text().strip()
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=_kubeconfig_path())
    except (config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def _cluster_error(error: Any, action: str) -> ClusterError:
    """Turn an ``ApiException`` into a typed error carrying the API's own message."""
    import json

    status = getattr(error, "status", None)
    message = getattr(error, "reason", "") or ""
    body = getattr(error, "body", None)
    if body:
        try:
            message = json.loads(body).get("message") or message
        except (ValueError, AttributeError):
            message = str(body)[:500]
    text = f"cannot {action}: {status} {message}".rstrip()
    if status in (401, 403):
        hint = (
            "the credentials were rejected; refresh your kubeconfig"
            if status == 401
            else "the service account or user lacks permission (RBAC); in Kubeflow run from "
            "your profile namespace as default-editor"
        )
        return ClusterAccessDenied(f"{text}\nhint: {hint}", status=status)
    return ClusterError(text, status=status)


# ---------------------------------------------------------------------------------------
# I/O: the deployer


@dataclass
class _RunState:
    job_name: str
    namespace: str
    protocol_lines: list[str] = field(default_factory=list)
    last_logs: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=LAST_LOG_LINES)
    )
    streamed_pods: set[str] = field(default_factory=set)
    last_pod: str | None = None


class JobDeployer:
    """Runs an image as a Kubernetes Job and returns what the function returned.

    ``api_client`` is a ``kubernetes.client.ApiClient``; without one, the in-cluster
    config or the kubeconfig is used (``connect``).
    """

    def __init__(self, options: JobOptions | None = None, *, api_client: Any = None) -> None:
        self.options = options or JobOptions()
        self._api_client = api_client

    def run(
        self,
        image: str,
        call: str,
        *,
        function_name: str,
        on_log: LogSink,
        on_status: StatusSink | None = None,
    ) -> Any:
        """Create the Job, stream its logs to ``on_log``, return the function's value.

        Raises the function's own exception (rebuilt from the protocol line), ``JobFailed``
        / ``JobTimeout`` when the Job fails without one, ``ClusterError`` for API errors.
        The Job is deleted when it fails, on Ctrl-C, and on success unless
        ``delete_on_completion=False``.
        """
        from kubernetes import client

        api_client = self._api_client or connect()
        # Typed as Any: the generated models make every field Optional.
        batch: Any = client.BatchV1Api(api_client)
        core: Any = client.CoreV1Api(api_client)
        namespace = self.options.namespace or current_namespace()
        status = on_status or (lambda _text: None)
        run_id = new_run_id()
        manifest = build_job_manifest(
            image=image,
            call=call,
            function_name=function_name,
            run_id=run_id,
            options=self.options,
        )
        manifest["metadata"]["namespace"] = namespace
        try:
            created = batch.create_namespaced_job(namespace, client.V1Job.from_dict(manifest))
        except client.ApiException as error:
            raise _cluster_error(error, f"create a Job in namespace {namespace!r}") from None
        except BaseException:
            # Ctrl-C while the request was in flight: the Job may exist without us knowing
            # its name; find it by its run id.
            self._delete_by_run_id(batch, namespace, run_id)
            raise
        state = _RunState(job_name=created.metadata.name, namespace=namespace)
        status(f"job {state.job_name} created in namespace {namespace}")
        finished = False
        try:
            value = self._follow(batch, core, run_id, state, on_log, status)
            finished = True
            return value
        except client.ApiException as error:
            raise _cluster_error(error, f"follow job {state.job_name}") from None
        finally:
            if not finished or self.options.delete_on_completion:
                self._delete(batch, state, status, quiet=not finished)

    # -- following a running Job ---------------------------------------------------------

    def _follow(
        self,
        batch: Any,
        core: Any,
        run_id: str,
        state: _RunState,
        on_log: LogSink,
        status: StatusSink,
    ) -> Any:
        from fnjob import protocol

        while True:
            pod = self._wait_for_started_pod(batch, core, run_id, state, status)
            if pod is not None:
                status(f"pod {pod.metadata.name} running")
                self._stream_logs(core, pod.metadata.name, state, on_log)
                state.streamed_pods.add(pod.metadata.name)
                state.last_pod = pod.metadata.name
            condition = self._finished_condition(batch, core, run_id, state)
            if condition is None:
                # Logs ended but the Job goes on (a retry pod under backoffLimit > 0).
                continue
            if not state.protocol_lines and state.last_pod is not None:
                # A log stream can be cut (API server or proxy timeouts on long runs); the
                # outcome line is at the end of the container's log, so read the tail again.
                self._read_log_tail(core, state)
            if condition.type == "Complete":
                status(f"job {state.job_name} complete")
                return protocol.parse_outcome(state.protocol_lines).unwrap()
            if state.protocol_lines:
                # The function raised: its own exception is the error to show.
                return protocol.parse_outcome(state.protocol_lines).unwrap()
            raise self._failure(core, run_id, state, condition)

    def _finished_condition(self, batch: Any, core: Any, run_id: str, state: _RunState) -> Any:
        """Poll until the Job has Complete/Failed (returned), or a retry pod appears (None)."""
        while True:
            job = batch.read_namespaced_job_status(state.job_name, state.namespace)
            for condition in (job.status and job.status.conditions) or []:
                if condition.type in ("Complete", "Failed") and condition.status == "True":
                    return condition
            # Only with backoffLimit > 0 can a second pod appear to be followed.
            if self.options.backoff_limit > 0:
                pods = core.list_namespaced_pod(
                    state.namespace, label_selector=f"{RUN_ID_LABEL}={run_id}"
                ).items
                if any(p.metadata.name not in state.streamed_pods for p in pods):
                    return None
            time.sleep(self.options.poll_interval_seconds)

    def _wait_for_started_pod(
        self, batch: Any, core: Any, run_id: str, state: _RunState, status: StatusSink
    ) -> Any:
        """The newest pod whose container has started, or None when the Job finished first."""
        pending_since: float | None = None
        last_message = ""
        while True:
            pods = core.list_namespaced_pod(
                state.namespace, label_selector=f"{RUN_ID_LABEL}={run_id}"
            ).items
            fresh = [p for p in pods if p.metadata.name not in state.streamed_pods]
            fresh.sort(key=lambda p: p.metadata.creation_timestamp or 0)
            pod = fresh[-1] if fresh else None
            if pod is not None:
                container = _container_status(pod)
                if container is not None and container.state is not None:
                    if container.state.running or container.state.terminated:
                        return pod
                    waiting = container.state.waiting
                    if waiting is not None and waiting.reason in _HOPELESS_WAITING_REASONS:
                        raise JobFailed(
                            state.job_name,
                            reason=waiting.reason,
                            message=waiting.message or f"image {container.image}",
                        )
                unschedulable = _unschedulable_message(core, pod)
                if unschedulable is not None:
                    pending_since = pending_since or time.monotonic()
                    if unschedulable != last_message:
                        status(f"pod {pod.metadata.name} pending: {unschedulable}")
                        last_message = unschedulable
                    limit = self.options.unschedulable_timeout_seconds
                    if limit is not None and time.monotonic() - pending_since >= limit:
                        raise JobFailed(
                            state.job_name, reason="Unschedulable", message=unschedulable
                        )
                if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
                    return pod
            job = batch.read_namespaced_job_status(state.job_name, state.namespace)
            for condition in (job.status and job.status.conditions) or []:
                if condition.type in ("Complete", "Failed") and condition.status == "True":
                    if condition.reason == "DeadlineExceeded" and last_message:
                        raise JobTimeout(
                            state.job_name,
                            reason="DeadlineExceeded",
                            message=f"{condition.message or ''} while the pod was "
                            f"unschedulable: {last_message}".strip(),
                        )
                    return None
            time.sleep(self.options.poll_interval_seconds)

    def _stream_logs(self, core: Any, pod_name: str, state: _RunState, on_log: LogSink) -> None:
        from fnjob import protocol

        response = core.read_namespaced_pod_log(
            pod_name,
            state.namespace,
            container=CONTAINER_NAME,
            follow=True,
            _preload_content=False,
        )
        try:
            for line in _lines(_available_chunks(response)):
                if protocol.is_protocol_line(line):
                    state.protocol_lines.append(line)
                    continue
                state.last_logs.append(line)
                on_log(line)
        finally:
            # Close, never release: a half-read stream (Ctrl-C) must not go back to the
            # pool, or the DELETE that follows would be queued behind it.
            response.close()

    def _read_log_tail(self, core: Any, state: _RunState) -> None:
        from fnjob import protocol

        try:
            text = core.read_namespaced_pod_log(
                state.last_pod, state.namespace, container=CONTAINER_NAME, tail_lines=LAST_LOG_LINES
            )
        except Exception:
            return  # the pod may be gone already; the caller reports what it has
        state.protocol_lines.extend(
            line for line in str(text or "").splitlines() if protocol.is_protocol_line(line)
        )

    def _delete_by_run_id(self, batch: Any, namespace: str, run_id: str) -> None:
        # Best effort while already failing; ttlSecondsAfterFinished is the backstop.
        with contextlib.suppress(Exception):
            batch.delete_collection_namespaced_job(
                namespace,
                label_selector=f"{RUN_ID_LABEL}={run_id}",
                propagation_policy="Foreground",
            )

    def _failure(self, core: Any, run_id: str, state: _RunState, condition: Any) -> JobFailed:
        reason = condition.reason or "Failed"
        message = condition.message or ""
        exit_code: int | None = None
        pods = core.list_namespaced_pod(
            state.namespace, label_selector=f"{RUN_ID_LABEL}={run_id}"
        ).items
        for pod in pods:
            container = _container_status(pod)
            terminated = container and container.state and container.state.terminated
            if terminated:
                exit_code = terminated.exit_code
                if reason != "DeadlineExceeded":
                    reason = terminated.reason or reason
                    message = terminated.message or message
        error_type = JobTimeout if reason == "DeadlineExceeded" else JobFailed
        return error_type(
            state.job_name,
            reason=reason,
            message=message,
            exit_code=exit_code,
            last_logs=tuple(state.last_logs),
        )

    def _delete(self, batch: Any, state: _RunState, status: StatusSink, *, quiet: bool) -> None:
        from kubernetes import client

        try:
            batch.delete_namespaced_job(
                state.job_name,
                state.namespace,
                propagation_policy="Foreground",
                body=client.V1DeleteOptions(propagation_policy="Foreground"),
            )
            status(f"job {state.job_name} deleted")
        except client.ApiException as error:
            if error.status == 404:
                return
            if not quiet:
                raise _cluster_error(error, f"delete job {state.job_name}") from None
            status(f"could not delete job {state.job_name}: {error.status} {error.reason}")


def _container_status(pod: Any) -> Any:
    statuses = (pod.status and pod.status.container_statuses) or []
    return next((s for s in statuses if s.name == CONTAINER_NAME), None)


def _unschedulable_message(core: Any, pod: Any) -> str | None:
    """The scheduler's explanation when the pod cannot be placed, else None."""
    for condition in (pod.status and pod.status.conditions) or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            if condition.message:
                return str(condition.message)
            events = core.list_namespaced_event(
                pod.metadata.namespace or "default",
                field_selector=f"involvedObject.name={pod.metadata.name},reason=FailedScheduling",
            ).items
            if events:
                return str(events[-1].message)
            return "no node fits the pod"
    return None


def _available_chunks(response: Any) -> Iterator[bytes]:
    """What the server has sent so far, chunk by chunk, until the stream ends.

    ``read1`` returns as soon as any bytes arrive (``stream(n)`` would wait for n bytes,
    holding log lines back), and it understands chunked transfer encoding.
    """
    while True:
        data = response.read1(8192)
        if not data:
            return
        yield data


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Split a byte stream into text lines, keeping a trailing partial line."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", errors="replace").rstrip("\r")
