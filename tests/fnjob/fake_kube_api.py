"""A tiny Kubernetes API server on 127.0.0.1 that plays one Job's life.

The real ``kubernetes`` client talks to it over HTTP, so the deployer is tested at the
transport only: requests are real URLs, bodies real JSON, responses deserialised by the
client's own models. ``JobScenario`` says how the Job behaves; every request is recorded
for the test to assert on (e.g. the Foreground DELETE after Ctrl-C).

Like the real control plane it gives each Job a uid, labels the Job's pod with
``batch.kubernetes.io/controller-uid`` and an ``ownerReference`` to the Job, and garbage
collects the Job's dependents (pods, and Secrets owned by it) when the Job is deleted with
``Foreground``/``Background`` propagation (``Orphan``, the batch/v1 default, keeps them).

With ``JobScenario.entry`` the pod "runs" fnjob's real runner in a subprocess, with the
Secret volumes and plain env of the submitted pod spec, and its log is what the runner
printed (stdout and stderr merged, as a container log is). With ``JobScenario.run_pod`` a
caller-supplied kubelet runs the pod instead (e.g. the pushed image with podman).
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

CREATED = "2026-11-28T12:00:00Z"
LATER = "2026-11-28T12:00:05Z"
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = REPO_ROOT / "fnjob" / "fnjob" / "runner.py"
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
    # The follow stream breaks after this many lines (a proxy timeout on a long run); a
    # plain (non-follow) log read still returns everything.
    cut_follow_after: int | None = None
    # HTTP status for the Job creation, e.g. 403 (RBAC).
    create_status: int = 201
    # The Job controller cannot create the pod: no pod ever appears, and the Job has these
    # events (reason, message), e.g. ("FailedCreate", 'serviceaccount "x" not found').
    pod_never_created: bool = False
    job_events: list[tuple[str, str]] = field(default_factory=list)
    # Pods someone else made in the namespace.
    planted_pods: list[PlantedPod] = field(default_factory=list)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


class FakeKubeApi:
    """The fake API server; ``host`` is what a ``Configuration`` points at."""

    def __init__(self, scenario: JobScenario) -> None:
        self.scenario = scenario
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, Any]] = {}
        self.deleted = threading.Event()
        self._logs_done = threading.Event()
        self._log_started = threading.Event()
        self._status_polls = 0
        self._run_exit_code: int | None = None
        self._run_lines: list[str] | None = None
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
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
        self.deleted.set()
        self._server.shutdown()
        self._server.server_close()

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
        wanted = _label_selector(query)
        items = [pod for pod in pods if _matches(pod["metadata"]["labels"], wanted)]
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
        elif scenario.waiting_reason is not None:
            container["state"] = {
                "waiting": {"reason": scenario.waiting_reason, "message": scenario.waiting_message}
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
            "spec": {"containers": [{"name": "fnjob", "image": container["image"]}]},
            "status": status,
        }

    def _events(
        self, handler: BaseHTTPRequestHandler, namespace: str, query: dict[str, list[str]]
    ) -> None:
        fields = _label_selector(query, "fieldSelector")
        items = []
        for job in self.jobs.values():
            involved = {
                "involvedObject.kind": "Job",
                "involvedObject.name": job["metadata"]["name"],
                "involvedObject.uid": job["metadata"]["uid"],
                "involvedObject.namespace": namespace,
            }
            for index, (reason, message) in enumerate(self.scenario.job_events):
                if _matches({**involved, "reason": reason, "type": "Warning"}, fields):
                    items.append(_event(job, namespace, index, reason, message))
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
            completed = subprocess.run(
                [sys.executable, str(RUNNER)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=120,
            )
        text = completed.stdout.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        return lines, completed.returncode

    def _log(
        self, handler: BaseHTTPRequestHandler, pod_name: str, query: dict[str, list[str]]
    ) -> None:
        # Like the API server: HTTP/1.1, chunked, one chunk per line as the container prints.
        follow = query.get("follow") == ["true"]
        lines = self._lines_for(pod_name)
        planted = any(p.name == pod_name for p in self.scenario.planted_pods)
        if not planted:
            self._log_started.set()
        tail = query.get("tailLines")
        if tail:
            lines = lines[-int(tail[0]) :]
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        if follow and self.scenario.cut_follow_after is not None:
            lines = lines[: self.scenario.cut_follow_after]
        try:
            for line in lines:
                data = line.encode() + b"\n"
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                handler.wfile.flush()
            if follow and self.scenario.hold_logs_until_deleted and not planted:
                # A running container: the stream stays open until the Job goes away.
                self.deleted.wait(timeout=30)
                time.sleep(self.scenario.grace_period_seconds)
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            if not planted:
                self._logs_done.set()
            handler.close_connection = True


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
            {"apiVersion": "batch/v1", "kind": "Job", "name": "x", "uid": planted.owner_uid}
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
    job: dict[str, Any], namespace: str, index: int, reason: str, message: str
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{job['metadata']['name']}.{index:04x}", "namespace": namespace},
        "involvedObject": {
            "kind": "Job",
            "namespace": namespace,
            "name": job["metadata"]["name"],
            "uid": job["metadata"]["uid"],
            "apiVersion": "batch/v1",
        },
        "reason": reason,
        "message": message,
        "type": "Warning",
        "count": 3,
        "firstTimestamp": CREATED,
        "lastTimestamp": CREATED,
        "source": {"component": "job-controller"},
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
