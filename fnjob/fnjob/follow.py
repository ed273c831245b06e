"""Waiting on a created Job: its pod, its logs, its end.

``JobFollower.outcome()`` waits for the Job's own pod (bounded: ``PodNotCreated`` quotes the
Job's events when none appears), streams the container's log to the user as it is written,
waits for the ``Complete``/``Failed`` condition and returns the run's authenticated
``Outcome``, or raises ``JobFailed`` / ``JobTimeout`` / ``ResultMissing``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fnjob.cluster import Cluster
from fnjob.errors import JobFailed, JobTimeout, PodNotCreated
from fnjob.manifest import CONTAINER_NAME
from fnjob.options import Lifecycle
from fnjob.protocol import Outcome, OutcomeReader

__all__ = ["CreatedJob", "JobFollower", "LogSink", "StatusSink"]

LogSink = Callable[[str], None]
StatusSink = Callable[[str], None]
# Lines of log re-read when the live stream was cut, to find the outcome.
TAIL_LINES = 1000
# How often to look at the Job's events while no pod exists.
EVENTS_EVERY_SECONDS = 5.0

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


@dataclass(frozen=True)
class CreatedJob:
    """The Job as the API server created it: its generated name and its uid."""

    name: str
    uid: str


@dataclass
class _Progress:
    streamed_pods: set[str] = field(default_factory=set)
    last_pod: str | None = None


class JobFollower:
    """Follows one created Job to its end (see the module docstring)."""

    def __init__(
        self,
        cluster: Cluster,
        job: CreatedJob,
        *,
        key: bytes,
        lifecycle: Lifecycle,
        on_log: LogSink,
        status: StatusSink,
    ) -> None:
        self.cluster = cluster
        self.job = job
        self.lifecycle = lifecycle
        self.on_log = on_log
        self.status = status
        self._key = key
        self.reader = OutcomeReader(key)
        self._progress = _Progress()

    def outcome(self) -> Outcome:
        """The function's authenticated outcome (returned or raised).

        Raises ``PodNotCreated``, ``JobFailed`` / ``JobTimeout`` when the Job ends without an
        outcome, ``ResultMissing`` when it completed without one, ``ClusterError``.
        """
        progress = self._progress
        while True:
            pod = self._wait_for_started_pod()
            if pod is not None:
                self.status(f"pod {pod.metadata.name} running")
                self._stream(pod.metadata.name)
                progress.streamed_pods.add(pod.metadata.name)
                progress.last_pod = pod.metadata.name
            condition = self._finished_condition()
            if condition is None:
                # Logs ended but the Job goes on (a retry pod under backoffLimit > 0).
                continue
            if self.reader.outcome is None and progress.last_pod is not None:
                self._read_tail(progress.last_pod)
            if condition.type == "Complete":
                self.status(f"job {self.job.name} complete")
                return self.reader.result()
            if self.reader.outcome is not None:
                # The function raised: its own exception is the error to show.
                return self.reader.outcome
            raise self._failure(condition)

    # -- the pod ---------------------------------------------------------------------------

    def _wait_for_started_pod(self) -> Any:
        """The newest of the Job's pods whose container started; None when the Job ended
        first. Bounded while no pod exists (``pod_creation_timeout``) and while the pod is
        unschedulable (``unschedulable_timeout``)."""
        started = time.monotonic()
        pending_since: float | None = None
        last_message = ""
        seen_events: set[str] = set()
        next_events = started + EVENTS_EVERY_SECONDS
        while True:
            pods = self.cluster.job_pods(self.job.uid)
            fresh = [p for p in pods if p.metadata.name not in self._progress.streamed_pods]
            fresh.sort(key=lambda p: p.metadata.creation_timestamp or 0)
            pod = fresh[-1] if fresh else None
            if not pods:
                waited = time.monotonic() - started
                limit = self.lifecycle.pod_creation_timeout
                if limit is not None and waited >= limit:
                    raise PodNotCreated(
                        self.job.name,
                        waited_seconds=round(waited, 1),
                        events=self.cluster.job_events(self.job.uid),
                    )
                if time.monotonic() >= next_events:
                    next_events = time.monotonic() + EVENTS_EVERY_SECONDS
                    for event in self.cluster.job_events(self.job.uid):
                        if event not in seen_events:
                            seen_events.add(event)
                            self.status(f"job {self.job.name} has no pod yet: {event}")
            if pod is not None:
                container = _container_status(pod)
                if container is not None and container.state is not None:
                    if container.state.running or container.state.terminated:
                        return pod
                    waiting = container.state.waiting
                    if waiting is not None and waiting.reason in _HOPELESS_WAITING_REASONS:
                        raise JobFailed(
                            self.job.name,
                            reason=waiting.reason,
                            message=waiting.message or f"image {container.image}",
                        )
                unschedulable = self._unschedulable_message(pod)
                if unschedulable is not None:
                    pending_since = pending_since or time.monotonic()
                    if unschedulable != last_message:
                        self.status(f"pod {pod.metadata.name} pending: {unschedulable}")
                        last_message = unschedulable
                    limit = self.lifecycle.unschedulable_timeout
                    if limit is not None and time.monotonic() - pending_since >= limit:
                        raise JobFailed(
                            self.job.name, reason="Unschedulable", message=unschedulable
                        )
                if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
                    return pod
            condition = self._condition()
            if condition is not None:
                if condition.reason == "DeadlineExceeded" and last_message:
                    raise JobTimeout(
                        self.job.name,
                        reason="DeadlineExceeded",
                        message=f"{condition.message or ''} while the pod was "
                        f"unschedulable: {last_message}".strip(),
                    )
                return None
            time.sleep(self.lifecycle.poll_interval)

    def _unschedulable_message(self, pod: Any) -> str | None:
        """The scheduler's explanation when the pod cannot be placed, else None."""
        for condition in (pod.status and pod.status.conditions) or []:
            if (
                condition.type == "PodScheduled"
                and condition.status == "False"
                and condition.reason == "Unschedulable"
            ):
                if condition.message:
                    return str(condition.message)
                return self.cluster.scheduling_failure(pod.metadata.name) or "no node fits the pod"
        return None

    # -- logs ------------------------------------------------------------------------------

    def _stream(self, pod_name: str) -> None:
        for line in _lines(self.cluster.follow_log(pod_name)):
            shown = self.reader.feed(line)
            if shown is not None:
                self.on_log(shown)

    def _read_tail(self, pod_name: str) -> None:
        """A log stream can be cut (API server or proxy timeouts on long runs); the outcome
        is near the end of the container's log, so read the tail again (not shown twice)."""
        try:
            text = self.cluster.log_tail(pod_name, TAIL_LINES)
        except Exception:
            return  # the pod may be gone already; the caller reports what it has
        tail_reader = OutcomeReader(self._key)
        for line in text.splitlines():
            tail_reader.feed(line)
        if tail_reader.outcome is not None:
            self.reader.outcome = tail_reader.outcome

    # -- the end ---------------------------------------------------------------------------

    def _condition(self) -> Any:
        job = self.cluster.read_job(self.job.name)
        for condition in (job.status and job.status.conditions) or []:
            if condition.type in ("Complete", "Failed") and condition.status == "True":
                return condition
        return None

    def _finished_condition(self) -> Any:
        """Poll until the Job has Complete/Failed (returned), or a retry pod appears (None)."""
        while True:
            condition = self._condition()
            if condition is not None:
                return condition
            # Only with backoffLimit > 0 can a second pod appear to be followed.
            if self.lifecycle.backoff_limit > 0:
                pods = self.cluster.job_pods(self.job.uid)
                if any(p.metadata.name not in self._progress.streamed_pods for p in pods):
                    return None
            time.sleep(self.lifecycle.poll_interval)

    def _failure(self, condition: Any) -> JobFailed:
        reason = condition.reason or "Failed"
        message = condition.message or ""
        exit_code: int | None = None
        for pod in self.cluster.job_pods(self.job.uid):
            container = _container_status(pod)
            terminated = container and container.state and container.state.terminated
            if terminated:
                exit_code = terminated.exit_code
                if reason != "DeadlineExceeded":
                    reason = terminated.reason or reason
                    message = terminated.message or message
        error_type = JobTimeout if reason == "DeadlineExceeded" else JobFailed
        return error_type(
            self.job.name,
            reason=reason,
            message=message,
            exit_code=exit_code,
            last_logs=tuple(self.reader.last_lines),
        )


def _container_status(pod: Any) -> Any:
    statuses = (pod.status and pod.status.container_statuses) or []
    return next((s for s in statuses if s.name == CONTAINER_NAME), None)


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
