"""A tiny Kubernetes API server on 127.0.0.1 that plays one Job's life.

The real ``kubernetes`` client talks to it over HTTP, so the deployer is tested at the
transport only: requests are real URLs, bodies real JSON, responses deserialised by the
client's own models. ``JobScenario`` says how the Job behaves; every request is recorded
for the test to assert on (e.g. the Foreground DELETE after Ctrl-C).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CREATED = "2026-11-28T12:00:00Z"


@dataclass
class JobScenario:
    """How the fake cluster treats the Job that gets created."""

    log_lines: list[str] = field(default_factory=list)
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
    # The follow stream breaks after this many lines (a proxy timeout on a long run); a
    # plain (non-follow) log read still returns everything.
    cut_follow_after: int | None = None
    # HTTP status for the Job creation, e.g. 403 (RBAC).
    create_status: int = 201


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
        self.deleted = threading.Event()
        self._logs_done = threading.Event()
        self._log_started = threading.Event()
        self._status_polls = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_DELETE = _handle

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
        if method == "POST" and url.path.endswith("/jobs"):
            return self._create_job(handler, parts[4], body)
        if method == "GET" and parts[:3] == ["apis", "batch", "v1"] and parts[-1] == "status":
            return self._job_status(handler, parts[6])
        if method == "DELETE" and parts[:3] == ["apis", "batch", "v1"]:
            return self._delete_job(handler, parts[6])
        if method == "GET" and parts[-1] == "pods":
            return self._pods(handler, parts[3])
        if method == "GET" and parts[-1] == "log":
            return self._log(handler, follow=query.get("follow") == ["true"])
        if method == "GET" and parts[-1] == "events":
            return _send(handler, 200, {"kind": "EventList", "apiVersion": "v1", "items": []})
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
        job["metadata"]["uid"] = "0b8e6c5e-1111-2222-3333-444455556666"
        job["metadata"]["creationTimestamp"] = CREATED
        self.jobs[job["metadata"]["name"]] = job
        _send(handler, 201, job)

    def _job_status(self, handler: BaseHTTPRequestHandler, name: str) -> None:
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
        elif self._logs_done.is_set() and not scenario.waiting_reason:
            conditions.append(
                _condition(scenario.outcome, scenario.job_reason, scenario.job_message)
            )
        job["status"] = {"conditions": conditions} if conditions else {"active": 1}
        _send(handler, 200, job)

    def _delete_job(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        self.jobs.pop(name, None)
        self.deleted.set()
        _send(handler, 200, _status(200, "", "", status="Success"))

    def _pods(self, handler: BaseHTTPRequestHandler, namespace: str) -> None:
        items = [self._pod(job, namespace) for job in self.jobs.values()]
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
        elif self._logs_done.is_set():
            container["state"] = {
                "terminated": {
                    "exitCode": scenario.exit_code,
                    "reason": scenario.terminated_reason,
                }
            }
            status = {
                "phase": "Succeeded" if scenario.exit_code == 0 else "Failed",
                "containerStatuses": [container],
            }
        else:
            container["state"] = {"running": {"startedAt": CREATED}}
            container["ready"] = True
            status = {"phase": "Running", "containerStatuses": [container]}
        return {
            "metadata": {
                "name": job["metadata"]["name"] + "-pod01",
                "namespace": namespace,
                "labels": job["spec"]["template"]["metadata"]["labels"],
                "creationTimestamp": CREATED,
            },
            "spec": {"containers": [{"name": "fnjob", "image": container["image"]}]},
            "status": status,
        }

    def _log(self, handler: BaseHTTPRequestHandler, *, follow: bool) -> None:
        # Like the API server: HTTP/1.1, chunked, one chunk per line as the container prints.
        self._log_started.set()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        lines = self.scenario.log_lines
        if follow and self.scenario.cut_follow_after is not None:
            lines = lines[: self.scenario.cut_follow_after]
        try:
            for line in lines:
                data = line.encode() + b"\n"
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                handler.wfile.flush()
            if follow and self.scenario.hold_logs_until_deleted:
                # A running container: the stream stays open until the Job goes away.
                self.deleted.wait(timeout=30)
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self._logs_done.set()
            handler.close_connection = True


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
