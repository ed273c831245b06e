"""A tiny Kubernetes API server on 127.0.0.1 that plays one Job's life.

The real ``kubernetes`` client talks to it over HTTP, so the deployer is tested at the
transport only: requests are real URLs, bodies real JSON, responses deserialised by the
client's own models. ``JobScenario`` says how the Job behaves; every request is recorded
for the test to assert on (e.g. the Foreground DELETE after Ctrl-C).

Like the real control plane it gives each Job a uid, labels the Job's pod with
``batch.kubernetes.io/controller-uid`` and an ``ownerReference`` to the Job, and garbage
collects the Job's dependents (pods, and Secrets owned by it) when the Job is deleted with
``Foreground``/``Background`` propagation (``Orphan``, the batch/v1 default, keeps them).

The Job controller's ``SuccessfulCreate`` event (``Created pod: NAME``, from
``job-controller``) names the pod it made; pods planted by others have no such event.

With ``JobScenario.entry`` the pod "runs" fnjob's real runner in a subprocess, with the
Secret volumes and plain env of the submitted pod spec (and ``KUBERNETES_SERVICE_HOST``,
which the kubelet gives every container), and its log is what the runner printed, merged
as a container runtime merges the two streams: record by record, a line longer than 16 KiB
in several records, so a record of one stream can land inside a long line of the other.
With ``JobScenario.run_pod`` a caller-supplied kubelet runs the pod instead (e.g. the pushed
image with podman).

Log reads behave like the kubelet's: ``timestamps=true`` puts each line's RFC 3339 time
first, ``sinceSeconds`` starts that far back, ``tailLines`` keeps the end. With
``log_max_bytes`` the log is rotated into files of that size (``containerLogMaxSize``): the
first follow stream, open while the container ran, saw every file; any later read sees the
current file only. ``stall_follow_after`` makes a follow stream go silent (open, no bytes).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cloudpickle

from fnjob.run.cluster import API_CALLS

CREATED = "2026-11-28T12:00:00Z"
LATER = "2026-11-28T12:00:05Z"
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = REPO_ROOT / "fnjob" / "fnjob" / "run" / "runner.py"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
# The Job's one pod is named after it.
POD_SUFFIX = "-pod01"
# The runner imports cloudpickle for pickled functions, as from /fnjob/vendor in an image.
CLOUDPICKLE_HOME = Path(cloudpickle.__file__).parent.parent


# Runs a Job's pod to its end: (the Job, its pod's name, the namespace's Secrets by name) ->
# (the container's log lines, its exit code).
PodRunner = Callable[[dict[str, Any], str, Mapping[str, dict[str, Any]]], tuple[list[str], int]]


@dataclass
class PlantedPod:
    """A pod someone else created in the namespace, with labels of their choosing."""

    name: str
    labels: dict[str, str]
    log_lines: list[str]
    owner_uid: str | None = None
    # The owner reference claims to be the Job's controller.
    controller: bool = False


@dataclass
class JobScenario:
    """How the fake cluster treats the Job that gets created."""

    log_lines: list[str] = field(default_factory=list)
    # Instead of log_lines: run fnjob's runner with this FNJOB_ENTRY (and the pod's Secret
    # volumes and env); the log, the exit code and the Job's outcome are the runner's.
    entry: str | None = None
    # Where the runner finds the entry's module, besides this repository.
    pythonpath: list[str] = field(default_factory=list)
    # Instead of entry: this kubelet runs the pod once its Secrets exist.
    run_pod: PodRunner | None = None
    # "Complete" or "Failed": the Job condition once the logs have been read.
    outcome: str = "Complete"
    job_reason: str = ""
    job_message: str = ""
    exit_code: int = 0
    terminated_reason: str = "Completed"
    # Pod stays Pending with PodScheduled=False/Unschedulable and this message.
    unschedulable_message: str | None = None
    # Container stays waiting with this reason (e.g. ImagePullBackOff).
    waiting_reason: str | None = None
    waiting_message: str = ""
    # The Job fails with DeadlineExceeded after this many status reads while pending.
    deadline_after_polls: int | None = None
    # The log stream sends its lines, then hangs like a running container until the Job
    # is deleted.
    hold_logs_until_deleted: bool = False
    # ...and for this long after the delete, as a real pod's log lasts its grace period.
    grace_period_seconds: float = 0.0
    # The first follow stream breaks after this many lines (a proxy timeout on a long run);
    # later reads return everything.
    cut_follow_after: int | None = None
    # ...and in the middle of the next line.
    cut_mid_line: bool = False
    # HTTP status for the Job creation, e.g. 403 (RBAC).
    create_status: int = 201
    # The Job controller cannot create the pod: no pod ever appears, and the Job has these
    # events (reason, message), e.g. ("FailedCreate", 'serviceaccount "x" not found').
    pod_never_created: bool = False
    job_events: list[tuple[str, str]] = field(default_factory=list)
    # Pods someone else made in the namespace.
    planted_pods: list[PlantedPod] = field(default_factory=list)
    # The first ``stalls`` follow streams go silent after this many lines (open, no bytes).
    stall_follow_after: int | None = None
    stalls: int = 1
    # The kubelet's containerLogMaxSize: the log rotates into files of this many bytes.
    log_max_bytes: int | None = None
    # PersistentVolumeClaims by name: {"accessModes": [...], "volumeName": "pvc-..."}.
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Other pods running in the namespace (e.g. the notebook), as the API returns them.
    other_pods: list[dict[str, Any]] = field(default_factory=list)
    # The Job's pod is placed on this node.
    node_name: str = "node-b"
    # The pod's volumes cannot attach: its container stays ContainerCreating and the pod
    # has a FailedAttachVolume event with this message.
    attach_error: str | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def rbac_attributes(method: str, path: str) -> tuple[str, str, str]:
    """(verb, API group, resource) of a request, as the API server's RBAC reads its path:
    ``/api/v1/namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]`` (the core group, "") or
    ``/apis/GROUP/VERSION/namespaces/NS/...``; a GET without a name lists (``?watch``
    watches), a DELETE without one is ``deletecollection``."""
    url = urlsplit(path)
    parts = url.path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    resource = "/".join(rest[0:1] + rest[2:3])
    named = len(rest) >= 2
    if method == "GET":
        watching = parse_qs(url.query).get("watch", [""])[0] in ("true", "1")
        verb = "get" if named else "watch" if watching else "list"
    elif method == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = _VERBS[method]
    return verb, group, resource


class FakeKubeApi:
    """The fake API server; ``host`` is what a ``Configuration`` points at."""

    def __init__(self, scenario: JobScenario) -> None:
        self.scenario = scenario
        self.requests: list[RecordedRequest] = []
        # Every request received, as RBAC sees it (``rbac_attributes``).
        self.calls: set[tuple[str, str, str]] = set()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        # Trainer's TrainJobs (listed and deleted here; FakeIndexedJobApi also runs them).
        self.train_jobs: dict[str, dict[str, Any]] = {}
        # False: a cluster without Trainer, where RBAC refuses TrainJobs (403, as a real API
        # server authorizes before it looks up the resource).
        self.trainer_installed = True
        self.deleted = threading.Event()
        self._logs_done = threading.Event()
        self._log_started = threading.Event()
        self._status_polls = 0
        self._run_exit_code: int | None = None
        self._run_lines: list[str] | None = None
        self._log_base_ns: int | None = None
        self._follows = 0
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                fake._note_call(self.command, self.path)
                fake._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.deleted.set()
        self._server.shutdown()
        self._server.server_close()
        unlisted = sorted(self.calls - API_CALLS)
        if unlisted and exc[0] is None:
            raise AssertionError(
                f"fnjob sent requests that fnjob.run.cluster.API_CALLS does not list (so no "
                f"test checks the platform grants them): {unlisted}"
            )

    def _note_call(self, method: str, path: str) -> None:
        with self._lock:
            self.calls.add(rbac_attributes(method, path))

    @property
    def log_stream_open(self) -> bool:
        """True while a log stream has started and not yet ended."""
        return self._log_started.is_set() and not self._logs_done.is_set()

    def requests_to(self, method: str, path_part: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and path_part in r.path]

    # -- request handling --------------------------------------------------------------

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = parse_qs(url.query)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(RecordedRequest(handler.command, url.path, query, body))
        parts = url.path.strip("/").split("/")
        method = handler.command
        batch = parts[:3] == ["apis", "batch", "v1"]
        if method == "POST" and batch and parts[-1] == "jobs":
            return self._create_job(handler, parts[4], body)
        if method == "GET" and batch and parts[-1] == "status":
            return self._job_status(handler, parts[6])
        if method == "GET" and batch and parts[-1] == "jobs":
            return self._list(handler, "JobList", "batch/v1", self.jobs, query)
        if parts[:2] == ["apis", "trainer.kubeflow.org"]:
            return self._trainer(handler, method, parts, query, body)
        if method == "GET" and parts[-1] == "secrets":
            return self._list(handler, "SecretList", "v1", self.secrets, query)
        if method == "DELETE" and batch and parts[-1] == "jobs":
            return self._delete_jobs(handler, query, body)
        if method == "DELETE" and batch:
            return self._delete_job(handler, parts[6], query, body)
        if method == "POST" and parts[-1] == "secrets":
            return self._create_secret(handler, parts[3], body)
        if method == "DELETE" and len(parts) == 6 and parts[4] == "secrets":
            return self._delete_secret(handler, parts[5])
        if method == "GET" and parts[-1] == "pods":
            return self._pods(handler, parts[3], query)
        if method == "GET" and parts[-1] == "log":
            return self._log(handler, parts[5], query)
        if method == "GET" and parts[-1] == "events":
            return self._events(handler, parts[3], query)
        if method == "GET" and parts[-2] == "persistentvolumeclaims":
            return self._claim(handler, parts[3], parts[-1])
        return _send(handler, 404, _status(404, "NotFound", f"no route for {method} {url.path}"))

    def _create_job(self, handler: BaseHTTPRequestHandler, namespace: str, body: Any) -> None:
        if self.scenario.create_status != 201:
            message = (
                'jobs.batch is forbidden: User "system:serviceaccount:team:default-editor" '
                f'cannot create resource "jobs" in API group "batch" in the namespace "{namespace}"'
            )
            return _send(
                handler,
                self.scenario.create_status,
                _status(self.scenario.create_status, "Forbidden", message),
            )
        job = json.loads(json.dumps(body))
        job["metadata"]["name"] = job["metadata"]["generateName"] + "x7k2p"
        job["metadata"]["namespace"] = namespace
        job["metadata"]["uid"] = str(uuid.uuid4())
        job["metadata"]["creationTimestamp"] = CREATED
        self.jobs[job["metadata"]["name"]] = job
        _send(handler, 201, job)

    def _list(
        self,
        handler: BaseHTTPRequestHandler,
        kind: str,
        api_version: str,
        objects: dict[str, dict[str, Any]],
        query: dict[str, list[str]],
    ) -> None:
        wanted = _label_selector(query)
        items = [o for o in objects.values() if _matches(o["metadata"].get("labels") or {}, wanted)]
        _send(handler, 200, {"kind": kind, "apiVersion": api_version, "items": items})

    def _create_secret(self, handler: BaseHTTPRequestHandler, namespace: str, body: Any) -> None:
        secret = json.loads(json.dumps(body))
        name = secret["metadata"].get("name") or secret["metadata"]["generateName"] + "s3cr7"
        if name in self.secrets:
            return _send(handler, 409, _status(409, "AlreadyExists", f'secrets "{name}" exists'))
        secret["metadata"].update(name=name, namespace=namespace, uid=str(uuid.uuid4()))
        self.secrets[name] = secret
        _send(handler, 201, secret)

    def _delete_secret(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        if self.secrets.pop(name, None) is None:
            return _send(handler, 404, _status(404, "NotFound", f'secrets "{name}" not found'))
        _send(handler, 200, _status(200, "", "", status="Success"))

    def _job_status(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        if name not in self.jobs:
            return _send(handler, 404, _status(404, "NotFound", f'jobs.batch "{name}" not found'))
        job = dict(self.jobs[name])
        scenario = self.scenario
        self._status_polls += 1
        conditions: list[dict[str, Any]] = []
        if scenario.deadline_after_polls is not None:
            if self._status_polls >= scenario.deadline_after_polls:
                conditions.append(
                    _condition(
                        "Failed",
                        "DeadlineExceeded",
                        "Job was active longer than specified deadline",
                    )
                )
        elif self._finished and not scenario.waiting_reason:
            outcome, reason = scenario.outcome, scenario.job_reason
            if self._run_exit_code is not None:
                failed = self._run_exit_code != 0
                outcome = "Failed" if failed else "Complete"
                reason = "BackoffLimitExceeded" if failed else ""
            conditions.append(_condition(outcome, reason, scenario.job_message))
        job["status"] = {"conditions": conditions} if conditions else {"active": 1}
        _send(handler, 200, job)

    def _collect(self, job: dict[str, Any], query: dict[str, list[str]], body: Any) -> None:
        """Garbage collection of the Job's dependents, as the propagation policy says."""
        policy = (query.get("propagationPolicy") or [""])[0] or (body or {}).get(
            "propagationPolicy", ""
        )
        if policy not in ("Foreground", "Background"):
            return
        uid = job["metadata"]["uid"]
        for name, secret in list(self.secrets.items()):
            owners = secret["metadata"].get("ownerReferences") or []
            if any(owner.get("uid") == uid for owner in owners):
                del self.secrets[name]

    def _delete_job(
        self, handler: BaseHTTPRequestHandler, name: str, query: dict[str, list[str]], body: Any
    ) -> None:
        job = self.jobs.pop(name, None)
        if job is None:
            return _send(handler, 404, _status(404, "NotFound", f'jobs.batch "{name}" not found'))
        self._collect(job, query, body)
        self.deleted.set()
        _send(handler, 200, _status(200, "", "", status="Success"))

    def _trainer(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        parts: list[str],
        query: dict[str, list[str]],
        body: Any,
    ) -> None:
        if not self.trainer_installed:
            message = (
                'trainjobs.trainer.kubeflow.org is forbidden: User "system:serviceaccount:'
                'team-a:default-editor" cannot list resource "trainjobs"'
            )
            return _send(handler, 403, _status(403, "Forbidden", message))
        if method == "GET" and parts[-1] == "trainjobs":
            return self._list(
                handler, "TrainJobList", "trainer.kubeflow.org/v1alpha1", self.train_jobs, query
            )
        if method == "DELETE":
            return self._delete_train_job(handler, parts[6], query, body)
        return _send(handler, 404, _status(404, "NotFound", f"no route for {method}"))

    def _delete_train_job(
        self, handler: BaseHTTPRequestHandler, name: str, query: dict[str, list[str]], body: Any
    ) -> None:
        train_job = self.train_jobs.pop(name, None)
        if train_job is None:
            message = f'trainjobs.trainer.kubeflow.org "{name}" not found'
            return _send(handler, 404, _status(404, "NotFound", message))
        self._collect(train_job, query, body)
        self.deleted.set()
        _send(handler, 200, _status(200, "", "", status="Success"))

    def _delete_jobs(
        self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]], body: Any
    ) -> None:
        wanted = _label_selector(query)
        for name, job in list(self.jobs.items()):
            if _matches(job["metadata"].get("labels") or {}, wanted):
                del self.jobs[name]
                self._collect(job, query, body)
                self.deleted.set()
        _send(handler, 200, {"kind": "JobList", "apiVersion": "batch/v1", "items": []})

    def _pods(
        self, handler: BaseHTTPRequestHandler, namespace: str, query: dict[str, list[str]]
    ) -> None:
        pods = []
        if not self.scenario.pod_never_created:
            for job in list(self.jobs.values()):
                if self._runs_pods:
                    self._run_once(job)
                pods.append(self._pod(job, namespace))
        pods += [_planted(planted, namespace) for planted in self.scenario.planted_pods]
        pods += self.scenario.other_pods
        wanted = _label_selector(query)
        fields = _label_selector(query, "fieldSelector")
        items = [
            pod
            for pod in pods
            if _matches(pod["metadata"].get("labels") or {}, wanted)
            and _matches({"status.phase": pod["status"]["phase"]}, fields)
        ]
        _send(handler, 200, {"kind": "PodList", "apiVersion": "v1", "items": items})

    def _pod(self, job: dict[str, Any], namespace: str) -> dict[str, Any]:
        scenario = self.scenario
        container: dict[str, Any] = {
            "name": "fnjob",
            "image": job["spec"]["template"]["spec"]["containers"][0]["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
        }
        status: dict[str, Any] = {"phase": "Running"}
        if scenario.unschedulable_message is not None:
            status = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": scenario.unschedulable_message,
                    }
                ],
            }
        elif scenario.waiting_reason is not None or scenario.attach_error is not None:
            reason = scenario.waiting_reason or "ContainerCreating"
            container["state"] = {
                "waiting": {"reason": reason, "message": scenario.waiting_message}
            }
            status = {"phase": "Pending", "containerStatuses": [container]}
        elif self._finished:
            exit_code = scenario.exit_code
            reason = scenario.terminated_reason
            if self._run_exit_code is not None:
                exit_code = self._run_exit_code
                reason = "Completed" if exit_code == 0 else "Error"
            container["state"] = {"terminated": {"exitCode": exit_code, "reason": reason}}
            status = {
                "phase": "Succeeded" if exit_code == 0 else "Failed",
                "containerStatuses": [container],
            }
        else:
            container["state"] = {"running": {"startedAt": CREATED}}
            container["ready"] = True
            status = {"phase": "Running", "containerStatuses": [container]}
        uid = job["metadata"]["uid"]
        name = job["metadata"]["name"]
        labels = {
            **job["spec"]["template"]["metadata"]["labels"],
            CONTROLLER_UID_LABEL: uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        return {
            "metadata": {
                "name": name + POD_SUFFIX,
                "namespace": namespace,
                "labels": labels,
                "creationTimestamp": CREATED,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "containers": [{"name": "fnjob", "image": container["image"]}],
                "volumes": job["spec"]["template"]["spec"].get("volumes") or [],
                **({} if "conditions" in status else {"nodeName": scenario.node_name}),
            },
            "status": status,
        }

    def _claim(self, handler: BaseHTTPRequestHandler, namespace: str, name: str) -> None:
        claim = self.scenario.claims.get(name)
        if claim is None:
            message = f'persistentvolumeclaims "{name}" not found'
            return _send(handler, 404, _status(404, "NotFound", message))
        _send(
            handler,
            200,
            {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "metadata": {"name": name, "namespace": namespace},
                "spec": claim,
                "status": {"phase": "Bound"},
            },
        )

    def _events(
        self, handler: BaseHTTPRequestHandler, namespace: str, query: dict[str, list[str]]
    ) -> None:
        fields = _label_selector(query, "fieldSelector")
        items = []
        for job in self.jobs.values():
            name, uid = job["metadata"]["name"], job["metadata"]["uid"]
            events = [
                _event("Job", name, uid, "Warning", reason, message, "job-controller")
                for reason, message in self.scenario.job_events
            ]
            if not self.scenario.pod_never_created:
                pod = name + POD_SUFFIX
                created = f"Created pod: {pod}"
                controller = "job-controller"
                events.append(
                    _event("Job", name, uid, "Normal", "SuccessfulCreate", created, controller)
                )
                if self.scenario.attach_error is not None:
                    message = self.scenario.attach_error
                    events.append(
                        _event(
                            "Pod",
                            pod,
                            uid + "-pod",
                            "Warning",
                            "FailedAttachVolume",
                            message,
                            "attachdetach-controller",
                        )
                    )
            for index, event in enumerate(events):
                if _matches(_event_fields(event), fields):
                    event["metadata"] = {"name": f"{name}.{index:04x}", "namespace": namespace}
                    event["involvedObject"]["namespace"] = namespace
                    items.append(event)
        _send(handler, 200, {"kind": "EventList", "apiVersion": "v1", "items": items})

    @property
    def _runs_pods(self) -> bool:
        return self.scenario.entry is not None or self.scenario.run_pod is not None

    @property
    def _finished(self) -> bool:
        # A scripted container ends once its logs were read; a real runner when it exits.
        if self._runs_pods:
            return self._run_lines is not None
        return self._logs_done.is_set()

    def _run_once(self, job: dict[str, Any]) -> list[str]:
        with self._run_lock:
            if self._run_lines is None and self._secrets_present(job):
                run_pod = self.scenario.run_pod
                if run_pod is not None:
                    pod_name = job["metadata"]["name"] + POD_SUFFIX
                    self._run_lines, self._run_exit_code = run_pod(job, pod_name, self.secrets)
                else:
                    self._run_lines, self._run_exit_code = self._run_runner(job)
            return self._run_lines or []

    def _secrets_present(self, job: dict[str, Any]) -> bool:
        # Like the kubelet: the container starts once every Secret volume can be mounted.
        volumes = job["spec"]["template"]["spec"].get("volumes") or []
        return all(v["secret"]["secretName"] in self.secrets for v in volumes if "secret" in v)

    # -- logs --------------------------------------------------------------------------

    def _lines_for(self, pod_name: str) -> list[str]:
        for planted in self.scenario.planted_pods:
            if planted.name == pod_name:
                return planted.log_lines
        if not self._runs_pods:
            return self.scenario.log_lines
        job = next(j for j in self.jobs.values() if pod_name.startswith(j["metadata"]["name"]))
        return self._run_once(job)

    def _run_runner(self, job: dict[str, Any]) -> tuple[list[str], int]:
        """Run fnjob's runner as the pod would: its Secret volumes mounted, its env set."""
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [*self.scenario.pythonpath, str(REPO_ROOT), str(CLOUDPICKLE_HOME)]
            ),
            "FNJOB_ENTRY": self.scenario.entry or "",
        }
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
        with tempfile.TemporaryDirectory(prefix="fake-pod-") as root:
            volumes = {v["name"]: v for v in pod.get("volumes") or []}
            for mount in container.get("volumeMounts") or []:
                volume = volumes[mount["name"]]
                if "secret" not in volume:
                    continue
                secret = self.secrets[volume["secret"]["secretName"]]
                target = Path(root) / mount["mountPath"].strip("/")
                target.mkdir(parents=True)
                for key, value in (secret.get("data") or {}).items():
                    (target / key).write_bytes(base64.b64decode(value))
                env["FNJOB_RUN_DIR"] = str(target)
            env["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
            process = subprocess.Popen(
                [sys.executable, str(RUNNER)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            log = ContainerLog()
            pumps = [
                threading.Thread(target=log.pump, args=(stream,), daemon=True)
                for stream in (process.stdout, process.stderr)
            ]
            for pump in pumps:
                pump.start()
            for pump in pumps:
                pump.join(timeout=300)
            exit_code = process.wait(timeout=60)
        return log.lines(), exit_code

    def _log_records(
        self, pod_name: str, query: dict[str, list[str]]
    ) -> tuple[list[tuple[int, str]], int | None, str, bool]:
        """What one log read returns: timestamped lines, where a stalled stream stops, the
        half line a cut stream ends with, and whether the pod is a planted one."""
        scenario = self.scenario
        follow = query.get("follow") == ["true"]
        planted = any(p.name == pod_name for p in scenario.planted_pods)
        lines = self._lines_for(pod_name)
        if self._log_base_ns is None:
            self._log_base_ns = time.time_ns()
        # Four lines per microsecond: some lines share a timestamp, as fast output does.
        stamped = [(self._log_base_ns + (i // 4) * 1000, line) for i, line in enumerate(lines)]
        stall_after = None
        if not planted:
            self._log_started.set()
            if follow:
                self._follows += 1
                if scenario.stall_follow_after is not None and self._follows <= scenario.stalls:
                    stall_after = scenario.stall_follow_after
            if not (follow and self._follows == 1):
                # Only a stream open while the container ran saw the rotated files.
                stamped = _current_file(stamped, scenario.log_max_bytes)
        since = query.get("sinceSeconds")
        if since:
            start_at = time.time_ns() - int(since[0]) * 10**9
            stamped = [(at, line) for at, line in stamped if at >= start_at]
        tail = query.get("tailLines")
        if tail:
            stamped = stamped[-int(tail[0]) :]
        cut_text = ""
        if follow and self._follows == 1 and scenario.cut_follow_after is not None:
            if scenario.cut_mid_line and len(stamped) > scenario.cut_follow_after:
                at, line = stamped[scenario.cut_follow_after]
                cut_text = (_rfc3339(at) + " " + line)[: len(line) // 2]
            stamped = stamped[: scenario.cut_follow_after]
        return stamped, stall_after, cut_text, planted

    def _log(
        self, handler: BaseHTTPRequestHandler, pod_name: str, query: dict[str, list[str]]
    ) -> None:
        # Like the API server: HTTP/1.1, chunked, as the container printed.
        scenario = self.scenario
        follow = query.get("follow") == ["true"]
        stamped, stall_after, cut_text, planted = self._log_records(pod_name, query)
        with_stamps = query.get("timestamps") == ["true"]
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for index, (at, line) in enumerate(stamped):
                if index == stall_after:
                    # A stuck proxy: the stream stays open and sends nothing.
                    self.closing.wait(timeout=60)
                    return
                data = (_rfc3339(at) + " " if with_stamps else "") + line + "\n"
                chunk = data.encode()
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if cut_text:
                chunk = cut_text.encode()
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            handler.wfile.flush()
            if follow and scenario.hold_logs_until_deleted and not planted:
                # A running container: the stream stays open until the Job goes away.
                self.deleted.wait(timeout=30)
                time.sleep(scenario.grace_period_seconds)
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            if not planted:
                self._logs_done.set()
            handler.close_connection = True


# A container runtime splits a line longer than this into several log records.
CRI_RECORD_BYTES = 16 * 1024


class ContainerLog:
    """A container's log as the runtime writes it: one record per line of each stream, in
    the order they arrive, lines longer than ``CRI_RECORD_BYTES`` as several records (the
    kubelet shows a partial record without its newline, so records interleave mid-line)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()

    def pump(self, stream: Any) -> None:
        pending = b""
        while True:
            data = os.read(stream.fileno(), 1 << 16)
            if not data:
                break
            pending += data
            start, records = 0, []
            while True:
                end = pending.find(b"\n", start, start + CRI_RECORD_BYTES)
                if end != -1:
                    records.append(pending[start : end + 1])
                    start = end + 1
                elif len(pending) - start >= CRI_RECORD_BYTES:
                    records.append(pending[start : start + CRI_RECORD_BYTES])
                    start += CRI_RECORD_BYTES
                else:
                    break
            pending = pending[start:]
            with self._lock:
                for record in records:
                    self._data += record
        with self._lock:
            self._data += pending

    def ends_line(self) -> bool:
        """True when what was written so far ends with a newline (or is nothing)."""
        with self._lock:
            return not self._data or self._data.endswith(b"\n")

    def lines(self) -> list[str]:
        text = self._data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        return lines


def _current_file(stamped: list[tuple[int, str]], max_bytes: int | None) -> list[tuple[int, str]]:
    """The lines of the log file the kubelet writes to now, after rotating at
    ``max_bytes`` (a rotation happens once the file reached the size)."""
    if max_bytes is None:
        return stamped
    start, size = 0, 0
    for index, (_, line) in enumerate(stamped):
        if size >= max_bytes:
            start, size = index, 0
        size += len(line.encode()) + 1
    return stamped[start:]


def _rfc3339(at_ns: int) -> str:
    """The kubelet's timestamp format (RFC 3339, nine fraction digits, UTC)."""
    seconds, nanos = divmod(at_ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def _label_selector(query: dict[str, list[str]], name: str = "labelSelector") -> dict[str, str]:
    text = (query.get(name) or [""])[0]
    wanted = {}
    for term in filter(None, text.split(",")):
        key, _, value = term.partition("=")
        wanted[key] = value.lstrip("=")
    return wanted


def _matches(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def _planted(planted: PlantedPod, namespace: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": planted.name,
        "namespace": namespace,
        "labels": planted.labels,
        # Newer than the Job's own pod: a deployer picking "the newest pod" picks this one.
        "creationTimestamp": LATER,
    }
    if planted.owner_uid is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": "x",
                "uid": planted.owner_uid,
                "controller": planted.controller,
            }
        ]
    container = {
        "name": "fnjob",
        "image": "attacker.example/pod:1",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
    }
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "fnjob", "image": container["image"]}]},
        "status": {"phase": "Succeeded", "containerStatuses": [container]},
    }


def _event(
    kind: str, name: str, uid: str, kind_of_event: str, reason: str, message: str, source: str
) -> dict[str, Any]:
    return {
        "involvedObject": {"kind": kind, "name": name, "uid": uid},
        "reason": reason,
        "message": message,
        "type": kind_of_event,
        "count": 3,
        "firstTimestamp": CREATED,
        "lastTimestamp": CREATED,
        "source": {"component": source},
    }


def _event_fields(event: dict[str, Any]) -> dict[str, str]:
    involved = event["involvedObject"]
    return {
        "involvedObject.kind": involved["kind"],
        "involvedObject.name": involved["name"],
        "involvedObject.uid": involved["uid"],
        "reason": event["reason"],
        "type": event["type"],
    }


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    condition = {"type": kind, "status": "True", "lastTransitionTime": CREATED}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _status(code: int, reason: str, message: str, *, status: str = "Failure") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": status,
        "message": message,
        "reason": reason,
        "code": code,
    }


def _send(handler: BaseHTTPRequestHandler, code: int, payload: Any) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
