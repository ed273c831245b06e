"""Kubernetes API access: finding the cluster, and the few calls fnjob makes, typed.

``connect`` / ``current_namespace`` find the cluster the way kubectl does (the pod's service
account inside a pod, else the kubeconfig). ``Cluster`` wraps the official client's calls:
each has a bounded request time, and every failure becomes a ``ClusterError`` carrying the
API's own message (``ClusterAccessDenied`` for 401/403, ``ClusterUnreachable`` when the
server does not answer at all).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from fnjob.errors import FnJobError
from fnjob.run.manifest import CONTAINER_NAME, CONTROLLER_UID_LABEL, RUN_ID_LABEL

__all__ = [
    "API_CALLS",
    "Cluster",
    "ClusterAccessDenied",
    "ClusterConfigError",
    "ClusterError",
    "ClusterUnreachable",
    "LogStreamStalled",
    "connect",
    "current_namespace",
]

# Who creates a Job's pods, and how it says so (kubernetes pkg/controller: RealPodControl).
JOB_CONTROLLER = "job-controller"
_CREATED_POD = re.compile(r"Created pod: (\S+)")
_MULTI_ATTACH_VOLUME = re.compile(r'[Vv]olume "([^"]+)"')
_SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# (connect, read) seconds for every call but the log stream, which may stay silent as long
# as the function prints nothing (its read timeout is Lifecycle.log_stall_timeout).
REQUEST_TIMEOUT = (10.0, 60.0)
# Bytes asked for per read of a log stream.
LOG_READ_BYTES = 1 << 16
T = TypeVar("T")
# (group, version, plural) of Trainer's TrainJobs (the 26.03 release serves v1alpha1).
TRAIN_JOBS = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")

# Every request a run or ``fnjob cleanup`` sends, as RBAC sees it: (verb, API group,
# resource), all in the caller's namespace. The platform must grant each of them to the
# notebooks' ServiceAccount; tests check the table both ways: every request the fake API
# server receives is in it, and a Kubeflow profile's default-editor (ClusterRole
# kubeflow-edit, aggregated, on the real render) may make every one.
API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("create", "batch", "jobs"),
        ("get", "batch", "jobs/status"),
        ("list", "batch", "jobs"),
        ("delete", "batch", "jobs"),
        ("deletecollection", "batch", "jobs"),
        ("create", "", "secrets"),
        ("list", "", "secrets"),
        ("delete", "", "secrets"),
        ("create", "", "services"),
        ("list", "", "pods"),
        ("get", "", "pods/log"),
        ("list", "", "events"),
        ("get", "", "persistentvolumeclaims"),
        ("create", TRAIN_JOBS[0], TRAIN_JOBS[2]),
        ("get", TRAIN_JOBS[0], TRAIN_JOBS[2]),
        ("list", TRAIN_JOBS[0], TRAIN_JOBS[2]),
        ("delete", TRAIN_JOBS[0], TRAIN_JOBS[2]),
    }
)


class ClusterError(FnJobError):
    """The Kubernetes API refused or failed a request (status and the API's message)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClusterAccessDenied(ClusterError):
    """401/403 from the API: credentials missing, expired, or lacking RBAC permission."""


class ClusterConfigError(ClusterError):
    """No way to reach a cluster: not inside a pod and no usable kubeconfig."""


class LogStreamStalled(ClusterError):
    """A pod's log stream sent nothing for ``seconds`` (a stuck proxy or API server)."""

    def __init__(self, pod_name: str, seconds: float) -> None:
        super().__init__(
            f"the log stream of pod {pod_name} sent nothing for {seconds:g} s, and nothing "
            "more after reconnecting, although its container has ended: the API server or a "
            "proxy between holds the stream (raise Lifecycle(log_stall_timeout=...) if the "
            "network is that slow)"
        )
        self.pod_name = pod_name
        self.seconds = seconds


class ClusterUnreachable(ClusterError):
    """The API server does not answer (refused, timed out, DNS, TLS); ``server`` is its URL."""

    def __init__(self, message: str, *, server: str) -> None:
        super().__init__(message)
        self.server = server


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


def _api_error(error: Any, action: str) -> ClusterError:
    """Turn an ``ApiException`` into a typed error carrying the API's own message."""
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


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^')\]]+)")


def _unreachable(error: Exception, server: str, action: str) -> ClusterUnreachable:
    reason = getattr(error, "reason", None) or error
    found = _ERRNO.search(str(reason))
    why = found.group(1).strip() if found else type(reason).__name__
    return ClusterUnreachable(
        f"cannot reach the Kubernetes API server at {server} ({why}) to {action}. Check that "
        "the cluster is running and that your kubeconfig's current context points at it "
        "(KUBECONFIG, else ~/.kube/config; `kubectl cluster-info` shows the same server); "
        "inside a pod, that the pod can reach the API server.",
        server=server,
    )


class Cluster:
    """The calls one run makes in ``namespace``, through ``api_client``."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.server = str(getattr(api_client.configuration, "host", "") or "?")
        # Typed as Any: the generated models make every field Optional.
        self._batch: Any = client.BatchV1Api(api_client)
        self._core: Any = client.CoreV1Api(api_client)
        self._custom: Any = client.CustomObjectsApi(api_client)
        # Per Job uid, the pods its controller's events named.
        self._confirmed_pods: dict[str, set[str]] = {}

    def _call(self, action: str, request: Callable[[], T]) -> T:
        from kubernetes.client import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return request()
        except ApiException as error:
            raise _api_error(error, action) from None
        except HTTPError as error:
            raise _unreachable(error, self.server, action) from None

    # -- create ----------------------------------------------------------------------------

    def create_job(self, manifest: dict[str, Any]) -> Any:
        return self._call(
            f"create a Job in namespace {self.namespace!r}",
            lambda: self._batch.create_namespaced_job(
                self.namespace, manifest, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def create_service(self, manifest: dict[str, Any]) -> Any:
        return self._call(
            f"create the run's Service in namespace {self.namespace!r}",
            lambda: self._core.create_namespaced_service(
                self.namespace, manifest, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def create_train_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self._call(
            f"create a TrainJob in namespace {self.namespace!r}",
            lambda: self._custom.create_namespaced_custom_object(
                *TRAIN_JOBS[:2],
                self.namespace,
                TRAIN_JOBS[2],
                manifest,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return created

    def read_train_job(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call(
            f"read TrainJob {name}",
            lambda: self._custom.get_namespaced_custom_object(
                TRAIN_JOBS[0],
                TRAIN_JOBS[1],
                self.namespace,
                TRAIN_JOBS[2],
                name,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return found

    def delete_train_job(self, name: str) -> bool:
        """Delete the TrainJob and, through Foreground propagation, its JobSet, pods and
        Secret. Returns False when it was already gone."""
        try:
            self._call(
                f"delete TrainJob {name}",
                lambda: self._custom.delete_namespaced_custom_object(
                    TRAIN_JOBS[0],
                    TRAIN_JOBS[1],
                    self.namespace,
                    TRAIN_JOBS[2],
                    name,
                    propagation_policy="Foreground",
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        except ClusterError as error:
            if error.status == 404:
                return False
            raise
        return True

    def labelled_pods(self, label_selector: str) -> list[Any]:
        """The namespace's pods carrying these labels."""
        return list(
            self._call(
                "list the run's pods",
                lambda: self._core.list_namespaced_pod(
                    self.namespace,
                    label_selector=label_selector,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            ).items
        )

    def create_secret(self, manifest: dict[str, Any]) -> Any:
        return self._call(
            f"create the run's Secret in namespace {self.namespace!r}",
            lambda: self._core.create_namespaced_secret(
                self.namespace, manifest, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    # -- read ------------------------------------------------------------------------------

    def read_job(self, name: str) -> Any:
        return self._call(
            f"read job {name}",
            lambda: self._batch.read_namespaced_job_status(
                name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def job_pods(self, job_uid: str) -> list[Any]:
        """The Job's own pods: labelled with its uid, controlled by it (``ownerReferences``)
        AND named by the Job controller's ``SuccessfulCreate`` event on the Job. Labels and
        owner references are whatever the pod's creator wrote; only the controller records
        ``Created pod: NAME`` as ``job-controller`` (the ``edit`` role creates pods, not
        events)."""
        pods = self._call(
            "list the job's pods",
            lambda: self._core.list_namespaced_pod(
                self.namespace,
                label_selector=f"{CONTROLLER_UID_LABEL}={job_uid}",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        ).items
        owned = [pod for pod in pods if _controlled_by(pod, job_uid)]
        created = self._confirmed_pods.setdefault(job_uid, set())
        if any(pod.metadata.name not in created for pod in owned):
            # Remembered once seen: events expire (an hour by default), pods can wait longer.
            created |= self._created_by_job_controller(job_uid)
        return [pod for pod in owned if pod.metadata.name in created]

    def _created_by_job_controller(self, job_uid: str) -> set[str]:
        events = self._call(
            "read the job's events",
            lambda: self._core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.uid={job_uid},reason=SuccessfulCreate",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        ).items
        names = set()
        for event in events:
            source = event.source.component if event.source is not None else None
            if JOB_CONTROLLER in (source, event.reporting_component):
                found = _CREATED_POD.search(event.message or "")
                if found:
                    names.add(found.group(1))
        return names

    def pod_events(self, pod_name: str, reason: str) -> list[str]:
        """The messages of the pod's warning events with ``reason`` (oldest first)."""
        events = self._call(
            f"read the events of pod {pod_name}",
            lambda: self._core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.name={pod_name},reason={reason},type=Warning",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        ).items
        return [str(event.message) for event in events]

    def describe_multi_attach(self, message: str, claims: list[str]) -> str:
        """The attach controller's ``message``, with the claim(s) behind its volume."""
        found = _MULTI_ATTACH_VOLUME.search(message)
        volume = found.group(1) if found else None
        named = [c for c in claims if volume is not None and self._volume_of(c) == volume]
        which = ", ".join(f"claim {c!r}" for c in named or claims)
        return (
            f"volume {volume or '?'} ({which}) is ReadWriteOnce and attached to another node, "
            f"so this pod's node can never mount it: {message}"
        )

    def _volume_of(self, claim: str) -> str | None:
        try:
            pvc = self.read_claim(claim)
        except ClusterError:
            return None
        return str(pvc.spec.volume_name) if pvc.spec and pvc.spec.volume_name else None

    def read_claim(self, name: str) -> Any:
        return self._call(
            f"read PersistentVolumeClaim {name}",
            lambda: self._core.read_namespaced_persistent_volume_claim(
                name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def running_pods_using(self, claim: str) -> list[tuple[str, str]]:
        """(pod, node) of the running pods in the namespace that mount ``claim``."""
        pods = self._call(
            "list the namespace's pods",
            lambda: self._core.list_namespaced_pod(
                self.namespace,
                field_selector="status.phase=Running",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        ).items
        return [
            (pod.metadata.name, pod.spec.node_name or "?")
            for pod in pods
            if any(
                v.persistent_volume_claim is not None
                and v.persistent_volume_claim.claim_name == claim
                for v in pod.spec.volumes or []
            )
        ]

    def job_events(self, job_uid: str) -> list[str]:
        """The Job's warning events, as ``Reason: message`` (oldest first)."""
        events = self._call(
            "read the job's events",
            lambda: self._core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.uid={job_uid},type=Warning",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        ).items
        return [f"{event.reason}: {event.message}" for event in events]

    def scheduling_failure(self, pod_name: str) -> str | None:
        """The scheduler's latest FailedScheduling message for a pod, if any."""
        events = self._call(
            f"read the events of pod {pod_name}",
            lambda: self._core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.name={pod_name},reason=FailedScheduling",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        ).items
        return str(events[-1].message) if events else None

    def follow_log(
        self,
        pod_name: str,
        *,
        stall_seconds: float | None,
        since_seconds: int | None = None,
        container: str = CONTAINER_NAME,
    ) -> Iterator[bytes]:
        """The container's log as it is written, each line after the kubelet's timestamp
        (``timestamps=true``), chunk by chunk, until it ends.

        ``since_seconds`` starts that far back on the kubelet's own clock (a resumed read).
        A stream that breaks (API server or proxy timeouts on long runs) just ends; one that
        sends nothing for ``stall_seconds`` raises ``LogStreamStalled``: either way the
        caller decides whether to resume.
        """
        from urllib3.exceptions import HTTPError, ReadTimeoutError

        response = self._call(
            f"stream the log of pod {pod_name}",
            lambda: self._core.read_namespaced_pod_log(
                pod_name,
                self.namespace,
                container=container,
                follow=True,
                timestamps=True,
                since_seconds=since_seconds,
                _preload_content=False,
                _request_timeout=None if stall_seconds is None else (10.0, stall_seconds),
            ),
        )
        try:
            while True:
                # read1 returns as soon as any bytes arrive (stream(n) would wait for n
                # bytes, holding log lines back), and it understands chunked encoding.
                try:
                    data = response.read1(LOG_READ_BYTES)
                except ReadTimeoutError:
                    raise LogStreamStalled(pod_name, stall_seconds or 0.0) from None
                except HTTPError:
                    return
                if not data:
                    return
                yield data
        finally:
            # Close, never release: a half-read stream (Ctrl-C) must not go back to the
            # pool, or the DELETE that follows would be queued behind it.
            response.close()

    def list_jobs(self, label_selector: str) -> list[Any]:
        """Jobs of the namespace carrying these labels (``fnjob.run.cleanup``)."""
        return list(
            self._call(
                f"list jobs in namespace {self.namespace!r}",
                lambda: self._batch.list_namespaced_job(
                    self.namespace,
                    label_selector=label_selector,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            ).items
        )

    def list_train_jobs(self, label_selector: str) -> list[dict[str, Any]]:
        """TrainJobs of the namespace carrying these labels (``fnjob.run.cleanup``); none
        where Kubeflow Trainer is not installed. The API server authorizes a request before
        it looks the resource up, so without Trainer (and its aggregated role) the answer is
        403, not 404: whoever may not list TrainJobs cannot have made any either."""
        try:
            listed: dict[str, Any] = self._call(
                f"list TrainJobs in namespace {self.namespace!r}",
                lambda: self._custom.list_namespaced_custom_object(
                    *TRAIN_JOBS[:2],
                    self.namespace,
                    TRAIN_JOBS[2],
                    label_selector=label_selector,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        except ClusterError as error:
            if error.status in (403, 404):
                return []
            raise
        return list(listed.get("items") or [])

    def list_secrets(self, label_selector: str) -> list[Any]:
        """Secrets of the namespace carrying these labels (``fnjob.run.cleanup``)."""
        return list(
            self._call(
                f"list secrets in namespace {self.namespace!r}",
                lambda: self._core.list_namespaced_secret(
                    self.namespace,
                    label_selector=label_selector,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            ).items
        )

    # -- delete ----------------------------------------------------------------------------

    def delete_job(self, name: str) -> bool:
        """Delete the Job and, through Foreground propagation, its pods and its Secret.

        Returns False when it was already gone.
        """
        from kubernetes import client

        try:
            self._call(
                f"delete job {name}",
                lambda: self._batch.delete_namespaced_job(
                    name,
                    self.namespace,
                    propagation_policy="Foreground",
                    body=client.V1DeleteOptions(propagation_policy="Foreground"),
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        except ClusterError as error:
            if error.status == 404:
                return False
            raise
        return True

    def delete_jobs_of_run(self, run_id: str) -> None:
        """Delete the run's Job found by label (when its name is not known yet)."""
        self._call(
            "delete the run's job",
            lambda: self._batch.delete_collection_namespaced_job(
                self.namespace,
                label_selector=f"{RUN_ID_LABEL}={run_id}",
                propagation_policy="Foreground",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )

    def delete_secret(self, name: str) -> None:
        try:
            self._call(
                f"delete secret {name}",
                lambda: self._core.delete_namespaced_secret(
                    name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        except ClusterError as error:
            if error.status != 404:
                raise


def _controlled_by(pod: Any, job_uid: str) -> bool:
    owners = (pod.metadata and pod.metadata.owner_references) or []
    return any(
        owner.uid == job_uid and owner.kind == "Job" and owner.controller for owner in owners
    )
