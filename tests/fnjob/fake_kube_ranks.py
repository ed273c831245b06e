"""The fake Kubernetes API (``fake_kube_api``) playing an indexed Job: one pod per index.

Every pod "runs" fnjob's real runner in a subprocess, with the submitted pod spec's plain env
and Secret volumes and the ``JOB_COMPLETION_INDEX`` the Job controller gives indexed pods.
The cluster network is this host: the headless Service's name for node 0 resolves to
127.0.0.1, and the rendezvous port is a free one (``FNJOB_MASTER_ADDR`` / ``_PORT`` are
rewritten as DNS and the pod network would). Logs stream while the runners run. Deleting
the Job kills every runner still running, as the kubelet stops a deleted Job's pods.

``faults`` make a node fail as a cluster would: ``"OOMKilled"`` (the container is killed
with 137 and that reason, no output), ``"Lost"`` (the pod vanishes: node lost, eviction),
``"Unschedulable"`` (no node can take the pod) or ``"Pending"`` (it never starts its runner).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fnjob.conftest import free_port
from tests.fnjob.fake_kube_api import (
    CLOUDPICKLE_HOME,
    CONTROLLER_UID_LABEL,
    CREATED,
    REPO_ROOT,
    RUNNER,
    ContainerLog,
    FakeKubeApi,
    JobScenario,
    RecordedRequest,
    _condition,
    _event,
    _event_fields,
    _label_selector,
    _matches,
    _rfc3339,
    _send,
    _status,
)

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


class FakeIndexedJobApi(FakeKubeApi):
    """Plays one indexed Job whose pods run ``entry`` (a ``FNJOB_ENTRY``)."""

    def __init__(self, entry: str, *, faults: dict[int, str] | None = None) -> None:
        super().__init__(JobScenario(entry=entry))
        self.entry = entry
        self.faults = dict(faults or {})
        self.services: dict[str, dict[str, Any]] = {}
        self.train_jobs: dict[str, dict[str, Any]] = {}
        self.port = free_port()
        self.logs: dict[int, ContainerLog] = {}
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.pumps: dict[int, threading.Thread] = {}
        self.pod_lists = 0
        self._start_lock = threading.Lock()
        self._homes: list[tempfile.TemporaryDirectory[str]] = []

    def __enter__(self) -> FakeIndexedJobApi:
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._kill_all()
        super().__exit__(*exc)
        for home in self._homes:
            home.cleanup()

    # -- requests ----------------------------------------------------------------------

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        parts = url.path.strip("/").split("/")
        method = handler.command
        if method == "POST" and parts[-1] == "services":
            length = int(handler.headers.get("Content-Length") or 0)
            body = __import__("json").loads(handler.rfile.read(length))
            with self._lock:
                self.requests.append(RecordedRequest(method, url.path, {}, body))
            self.services[body["metadata"]["name"]] = body
            return _send(handler, 201, body)
        if method == "POST" and parts[:3] == ["apis", "batch", "v1"] and parts[-1] == "jobs":
            return self._create_named_job(handler, parts[4])
        if method == "DELETE" and parts[:3] == ["apis", "batch", "v1"]:
            self._kill_all()
            self.services.clear()
        listing = method == "GET" and parts[-1] == "trainjobs"  # the base fake lists them
        if parts[:2] == ["apis", "trainer.kubeflow.org"] and not listing:
            return self._train_jobs(handler, method, parts)
        if method == "GET" and parts[-1] == "pods":
            with self._lock:
                self.requests.append(RecordedRequest(method, url.path, parse_qs(url.query), None))
            return self._indexed_pods(handler, parts[3], parse_qs(url.query))
        if method == "GET" and parts[-1] == "log":
            return self._stream_log(handler, parts[5])
        if method == "GET" and parts[-1] == "status":
            return self._indexed_status(handler, parts[6])
        if method == "GET" and parts[-1] == "events":
            return self._indexed_events(handler, parts[3], parse_qs(url.query))
        return super()._dispatch(handler)

    def _create_named_job(self, handler: BaseHTTPRequestHandler, namespace: str) -> None:
        import json

        length = int(handler.headers.get("Content-Length") or 0)
        job = json.loads(handler.rfile.read(length))
        with self._lock:
            self.requests.append(RecordedRequest("POST", handler.path, {}, job))
        job["metadata"].update(namespace=namespace, uid="uid-indexed", creationTimestamp=CREATED)
        self.jobs[job["metadata"]["name"]] = job
        _send(handler, 201, job)

    # -- TrainJobs: Trainer's JobSet makes an indexed Job "node" of numNodes pods ------

    def _train_jobs(self, handler: BaseHTTPRequestHandler, method: str, parts: list[str]) -> None:
        import json

        if method == "POST":
            length = int(handler.headers.get("Content-Length") or 0)
            body = json.loads(handler.rfile.read(length))
            with self._lock:
                self.requests.append(RecordedRequest(method, handler.path, {}, body))
            body["metadata"].update(namespace=parts[4], uid="uid-trainjob")
            self.train_jobs[body["metadata"]["name"]] = body
            self.jobs[body["metadata"]["name"]] = _as_indexed_job(body)
            return _send(handler, 201, body)
        name = parts[6]
        if name not in self.train_jobs:
            message = f'trainjobs.trainer.kubeflow.org "{name}" not found'
            return _send(handler, 404, _status(404, "NotFound", message))
        if method == "DELETE":
            with self._lock:
                self.requests.append(RecordedRequest(method, handler.path, {}, None))
            self._kill_all()
            del self.train_jobs[name], self.jobs[name]
            return _send(handler, 200, _status(200, "", "", status="Success"))
        nodes = self.jobs[name]["spec"]["completions"]
        phases = [self._container_state(i)[0] for i in range(nodes)]
        conditions = []
        if "Failed" in phases:
            conditions.append(_condition("Failed", "JobSetFailed", "a node failed"))
        elif all(phase == "Succeeded" for phase in phases):
            conditions.append(_condition("Complete", "", ""))
        _send(handler, 200, {**self.train_jobs[name], "status": {"conditions": conditions}})

    # -- pods --------------------------------------------------------------------------

    def _job(self) -> dict[str, Any] | None:
        return next(iter(self.jobs.values()), None)

    def _start_runners(self, job: dict[str, Any]) -> None:
        with self._start_lock:
            if self.processes or not self._secrets_present(job):
                return
            for index in range(job["spec"]["completions"]):
                if index not in self.faults:
                    self.processes[index] = self._start_runner(job, index)

    def _start_runner(self, job: dict[str, Any], index: int) -> subprocess.Popen[bytes]:
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FNJOB_")}
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(CLOUDPICKLE_HOME)]),
            FNJOB_ENTRY=self.entry,
            KUBERNETES_SERVICE_HOST="10.96.0.1",
            JOB_COMPLETION_INDEX=str(index),
        )
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
        # Cluster DNS and the pod network, on this host; Trainer gives its PET_ variables.
        if job["metadata"]["name"] in self.train_jobs:
            env.pop("JOB_COMPLETION_INDEX")
            env.update(
                PET_NODE_RANK=str(index),
                PET_MASTER_ADDR="127.0.0.1",
                PET_MASTER_PORT=str(self.port - 1),
                PET_NNODES=str(job["spec"]["completions"]),
            )
        else:
            env.update(FNJOB_MASTER_ADDR="127.0.0.1", FNJOB_MASTER_PORT=str(self.port - 1))
        home = tempfile.TemporaryDirectory(prefix="fake-pod-")
        self._homes.append(home)
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            if "secret" in volume:
                secret = self.secrets[volume["secret"]["secretName"]]
                target = Path(home.name) / mount["mountPath"].strip("/")
                target.mkdir(parents=True)
                for key, value in (secret.get("data") or {}).items():
                    (target / key).write_bytes(base64.b64decode(value))
                env["FNJOB_RUN_DIR"] = str(target)
        # Its own process group, the container's stand-in: killing a container kills every
        # process in it, the launcher's ranks too.
        process = subprocess.Popen(
            [sys.executable, str(RUNNER)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log = ContainerLog()
        self.logs[index] = log
        pump = threading.Thread(target=log.pump, args=(process.stdout,), daemon=True)
        pump.start()
        self.pumps[index] = pump
        return process

    def _kill_all(self) -> None:
        for process in self.processes.values():
            # The group the runner leads (its pid): its ranks outlive a killed launcher.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _container_state(self, index: int) -> tuple[str, dict[str, Any]]:
        fault = self.faults.get(index)
        if fault == "Unschedulable":
            return "Pending", {"waiting": {"reason": "ContainerCreating"}}
        if fault == "OOMKilled":
            return "Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
        process = self.processes.get(index)
        if process is None or (fault is None and process.poll() is None):
            return "Running", {"running": {"startedAt": CREATED}}
        code = process.returncode
        reason = "Completed" if code == 0 else "Error"
        return ("Succeeded" if code == 0 else "Failed"), {
            "terminated": {"exitCode": code, "reason": reason}
        }

    def _pod_name(self, job: dict[str, Any], index: int) -> str:
        return f"{job['metadata']['name']}-{index}-p0d{index}"

    def _indexed_pod(self, job: dict[str, Any], index: int, namespace: str) -> dict[str, Any]:
        phase, state = self._container_state(index)
        uid = job["metadata"]["uid"]
        labels = {**job["spec"]["template"]["metadata"]["labels"], CONTROLLER_UID_LABEL: uid}
        return {
            "metadata": {
                "name": self._pod_name(job, index),
                "namespace": namespace,
                "labels": labels,
                "annotations": {COMPLETION_INDEX: str(index)},
                "creationTimestamp": CREATED,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {"containers": [{"name": "fnjob", "image": "x"}], "nodeName": "node-a"},
            "status": {
                **_scheduling(self.faults.get(index)),
                "phase": phase,
                "containerStatuses": [
                    {
                        "name": "fnjob",
                        "image": "x",
                        "imageID": "",
                        "ready": phase == "Running",
                        "restartCount": 0,
                        "state": state,
                    }
                ],
            },
        }

    def _indexed_pods(
        self, handler: BaseHTTPRequestHandler, namespace: str, query: dict[str, list[str]]
    ) -> None:
        job = self._job()
        items = []
        if job is not None:
            self._start_runners(job)
            self.pod_lists += 1
            for index in range(job["spec"]["completions"]):
                if self.faults.get(index) == "Lost" and self.pod_lists > 1:
                    continue  # the node went away with its pod
                items.append(self._indexed_pod(job, index, namespace))
        wanted = _label_selector(query)
        items = [p for p in items if _matches(p["metadata"]["labels"], wanted)]
        _send(handler, 200, {"kind": "PodList", "apiVersion": "v1", "items": items})

    def _indexed_events(
        self, handler: BaseHTTPRequestHandler, namespace: str, query: dict[str, list[str]]
    ) -> None:
        job = self._job()
        items = []
        fields = _label_selector(query, "fieldSelector")
        if job is not None:
            name, uid = job["metadata"]["name"], job["metadata"]["uid"]
            for index in range(job["spec"]["completions"]):
                message = f"Created pod: {self._pod_name(job, index)}"
                event = _event(
                    "Job", name, uid, "Normal", "SuccessfulCreate", message, "job-controller"
                )
                if _matches(_event_fields(event), fields):
                    event["metadata"] = {"name": f"{name}.{index:04x}", "namespace": namespace}
                    items.append(event)
        _send(handler, 200, {"kind": "EventList", "apiVersion": "v1", "items": items})

    def _indexed_status(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        job = self.jobs.get(name)
        if job is None:
            return _send(handler, 404, _status(404, "NotFound", f'jobs.batch "{name}" not found'))
        phases = [self._container_state(i)[0] for i in range(job["spec"]["completions"])]
        conditions = []
        if "Failed" in phases:
            conditions.append(_condition("Failed", "BackoffLimitExceeded", "a pod failed"))
        elif all(phase == "Succeeded" for phase in phases):
            conditions.append(_condition("Complete", "", ""))
        _send(handler, 200, {**job, "status": {"conditions": conditions}})

    def _stream_log(self, handler: BaseHTTPRequestHandler, pod_name: str) -> None:
        index = int(pod_name.rsplit("-", 2)[-2])
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        sent = 0
        try:
            while not self.closing.is_set():
                process = self.processes.get(index)
                log = self.logs.get(index)
                pump = self.pumps.get(index)
                done = process is None or (
                    process.poll() is not None and (pump is None or not pump.is_alive())
                )
                lines = _complete_lines(log, done=done)
                for line in lines[sent:]:
                    chunk = f"{_rfc3339(time.time_ns())} {line}\n".encode()
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent = len(lines)
                handler.wfile.flush()
                if done:
                    break
                time.sleep(0.05)
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            handler.close_connection = True


def _complete_lines(log: ContainerLog | None, *, done: bool) -> list[str]:
    """The log's lines so far; a line still being written only once the container ended."""
    if log is None:
        return []
    lines = log.lines()
    if not done and lines and not log.ends_line():
        lines.pop()
    return [] if lines == [""] else lines


def _as_indexed_job(train_job: dict[str, Any]) -> dict[str, Any]:
    """The indexed Job Trainer's JobSet makes for a TrainJob's nodes (as this fake needs it)."""
    spec = train_job["spec"]
    [override] = spec.get("podTemplateOverrides") or [{}]
    override_spec = override.get("spec") or {}
    [node] = override_spec.get("containers") or [{"name": "node"}]
    labels = {
        **(override.get("metadata") or {}).get("labels", {}),
        "jobset.sigs.k8s.io/jobset-name": train_job["metadata"]["name"],
    }
    return {
        "metadata": dict(train_job["metadata"]),
        "spec": {
            "completions": spec["trainer"]["numNodes"],
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "node",
                            "env": spec["trainer"].get("env") or [],
                            "volumeMounts": node.get("volumeMounts") or [],
                        }
                    ],
                    "volumes": override_spec.get("volumes") or [],
                },
            },
        },
    }


def _scheduling(fault: str | None) -> dict[str, Any]:
    if fault != "Unschedulable":
        return {}
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    }
    return {"conditions": [condition]}
