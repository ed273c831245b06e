"""Waiting on a created Job: its pod, its logs, its end.

``JobFollower.outcome()`` waits for the Job's own pod (bounded: ``PodNotCreated`` quotes the
Job's events when none appears), streams the container's log to the user as it is written,
waits for the ``Complete``/``Failed`` condition and returns the run's authenticated
``Outcome``, or raises ``JobFailed`` / ``JobTimeout`` / ``ResultMissing``.

A pod that can never start fails fast, with the kubelet's or the attach controller's own
words: an image that cannot be pulled, a ReadWriteOnce volume attached to another node
(``Multi-Attach``). The log is read with the kubelet's timestamps: a stream that is cut, or
that sends nothing for ``Lifecycle.log_stall_timeout``, is resumed from where it was
(``sinceSeconds``, a duration on the kubelet's own clock, so the caller's clock does not
matter; lines already read are skipped by their timestamps). What the kubelet rotated away
meanwhile is gone: a result missing pieces is a ``ResultMissing`` that says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fnjob.errors import JobFailed, JobTimeout, PodNotCreated
from fnjob.options import Lifecycle
from fnjob.run.cluster import Cluster, ClusterAccessDenied, ClusterError, LogStreamStalled
from fnjob.run.manifest import CONTAINER_NAME
from fnjob.run.protocol import Outcome, OutcomeReader

__all__ = ["CreatedJob", "JobFollower", "LogSink", "StatusSink"]

LogSink = Callable[[str], None]
StatusSink = Callable[[str], None]
# How often to look at the Job's events while no pod exists.
EVENTS_EVERY_SECONDS = 5.0
# A resumed log read starts this much earlier than the last line read (the line's trip from
# the kubelet to here); the overlap is skipped by timestamp.
RESUME_MARGIN_SECONDS = 10

# What the API server says when a namespace's ResourceQuota refuses a pod.
_QUOTA_REFUSAL = "exceeded quota"
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


@dataclass
class _PodWait:
    """What waiting for the pod has seen so far."""

    started: float = field(default_factory=time.monotonic)
    next_events: float = 0.0
    seen_events: set[str] = field(default_factory=set)
    pending_since: float | None = None
    unschedulable: str = ""


@dataclass
class _LogPosition:
    """How far a pod's log was read: the kubelet's timestamp of the last new line, how many
    lines carried it, and when it arrived here."""

    stamp: str = ""
    at_stamp: int = 0
    replayed: int = 0
    received: float | None = None
    new_lines: int = 0
    partial: str | None = None

    def start_pass(self) -> int | None:
        """Begin a (re)read; the ``sinceSeconds`` it starts from (None: the beginning)."""
        self.replayed = 0
        self.new_lines = 0
        self.partial = None
        if self.received is None:
            return None
        return int(time.monotonic() - self.received) + RESUME_MARGIN_SECONDS

    def accept(self, line: str) -> str | None:
        """The line without its timestamp, or None when an earlier pass read it."""
        stamp, _, text = line.partition(" ")
        key = _stamp_key(stamp)
        if key is None:
            return line
        if key < self.stamp:
            return None
        if key == self.stamp:
            self.replayed += 1
            if self.replayed <= self.at_stamp:
                return None
            self.at_stamp += 1
        else:
            self.stamp, self.at_stamp, self.replayed = key, 1, 1
        self.received = time.monotonic()
        self.new_lines += 1
        return text


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
        self.reader = OutcomeReader(key)
        self._progress = _Progress()

    def outcome(self) -> Outcome:
        """The function's authenticated outcome (returned or raised).

        Raises ``PodNotCreated``, ``JobFailed`` / ``JobTimeout`` when the Job ends without an
        outcome, ``ResultMissing`` when it completed without one, ``LogStreamStalled``,
        ``ClusterError``.
        """
        progress = self._progress
        while True:
            pod = self._wait_for_started_pod()
            if pod is not None:
                self.status(f"pod {pod.metadata.name} running")
                self._stream(pod.metadata.name)
                progress.streamed_pods.add(pod.metadata.name)
            condition = self._finished_condition()
            if condition is None:
                # Logs ended but the Job goes on (a retry pod under backoffLimit > 0).
                continue
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
        unschedulable (``unschedulable_timeout``); a pod that can never start raises."""
        # The Job's events are read at once: a quota refusal is final and shown right away.
        wait = _PodWait(next_events=time.monotonic())
        while True:
            pods = self.cluster.job_pods(self.job.uid)
            if not pods:
                self._no_pod_yet(wait)
            pod = self._newest_fresh(pods)
            if pod is not None and self._started(pod, wait):
                return pod
            condition = self._condition()
            if condition is not None:
                if condition.reason == "DeadlineExceeded" and wait.unschedulable:
                    raise JobTimeout(
                        self.job.name,
                        reason="DeadlineExceeded",
                        message=f"{condition.message or ''} while the pod was "
                        f"unschedulable: {wait.unschedulable}".strip(),
                    )
                return None
            time.sleep(self.lifecycle.poll_interval)

    def _newest_fresh(self, pods: list[Any]) -> Any:
        fresh = [p for p in pods if p.metadata.name not in self._progress.streamed_pods]
        fresh.sort(key=lambda p: p.metadata.creation_timestamp or 0)
        return fresh[-1] if fresh else None

    def _no_pod_yet(self, wait: _PodWait) -> None:
        """Raise ``PodNotCreated`` past the bound; report new Job events meanwhile."""
        limit = self.lifecycle.pod_creation_timeout
        if limit is not None and time.monotonic() - wait.started >= limit:
            raise PodNotCreated(
                self.job.name, waited_seconds=limit, events=self.cluster.job_events(self.job.uid)
            )
        if time.monotonic() < wait.next_events:
            return
        wait.next_events = time.monotonic() + EVENTS_EVERY_SECONDS
        for event in self.cluster.job_events(self.job.uid):
            if event not in wait.seen_events:
                wait.seen_events.add(event)
                if _QUOTA_REFUSAL in event:
                    raise JobFailed(
                        self.job.name,
                        reason="QuotaExceeded",
                        message=f"{event} (the profile's ResourceQuota allows no more: wait "
                        "for its other pods to end, ask for fewer resources, or have the "
                        "platform team raise the profile's quota)",
                    )
                self.status(f"job {self.job.name} has no pod yet: {event}")

    def _started(self, pod: Any, wait: _PodWait) -> bool:
        """True once the pod's container runs or ran; raises when it never will."""
        if pod.status is not None and pod.status.phase in ("Succeeded", "Failed"):
            return True
        container = _container_status(pod)
        state = container.state if container is not None else None
        if state is not None and (state.running or state.terminated):
            return True
        waiting = state.waiting if state is not None else None
        if waiting is not None and waiting.reason in _HOPELESS_WAITING_REASONS:
            raise JobFailed(
                self.job.name,
                reason=waiting.reason,
                message=waiting.message or f"image {container.image}",
            )
        if _scheduled(pod):
            self._check_volumes_attach(pod)
        else:
            self._check_schedulable(pod, wait)
        return False

    def _check_schedulable(self, pod: Any, wait: _PodWait) -> None:
        unschedulable = self._unschedulable_message(pod)
        if unschedulable is None:
            return
        wait.pending_since = wait.pending_since or time.monotonic()
        if unschedulable != wait.unschedulable:
            self.status(f"pod {pod.metadata.name} pending: {unschedulable}")
            wait.unschedulable = unschedulable
        limit = self.lifecycle.unschedulable_timeout
        if limit is not None and time.monotonic() - wait.pending_since >= limit:
            raise JobFailed(self.job.name, reason="Unschedulable", message=unschedulable)

    def _check_volumes_attach(self, pod: Any) -> None:
        """A ReadWriteOnce volume attached to another node never attaches here: the
        attach/detach controller says ``Multi-Attach error`` in the pod's events."""
        claims = [
            v.persistent_volume_claim.claim_name
            for v in (pod.spec and pod.spec.volumes) or []
            if v.persistent_volume_claim is not None
        ]
        if not claims:
            return
        for message in self.cluster.pod_events(pod.metadata.name, "FailedAttachVolume"):
            if "Multi-Attach" in message:
                raise JobFailed(
                    self.job.name,
                    reason="MultiAttach",
                    message=self.cluster.describe_multi_attach(message, claims),
                )

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
        """Show the pod's log and read its outcome, resuming a stream that was cut or
        stalled while the container runs, and once more after it ended."""
        position = _LogPosition()
        stalled = self._read_log(pod_name, position)
        final_pass = False
        while self.reader.outcome is None:
            running = self._container_running(pod_name)
            if final_pass and not running:
                if stalled:
                    raise LogStreamStalled(pod_name, self.lifecycle.log_stall_timeout or 0.0)
                break
            self._pause_before_reading_again(pod_name, position, stalled=stalled, running=running)
            final_pass = not running
            try:
                stalled = self._read_log(pod_name, position)
            except ClusterAccessDenied:
                raise
            except ClusterError as error:
                if final_pass:
                    break  # the pod may be gone; the caller reports what it has
                self.status(f"reading the log of pod {pod_name} again failed: {error}")
                stalled = False
        partial = position.accept(position.partial) if position.partial else None
        if partial is not None:
            self._show(partial)

    def _pause_before_reading_again(
        self, pod_name: str, position: _LogPosition, *, stalled: bool, running: bool
    ) -> None:
        if stalled:
            self.status(
                f"the log of pod {pod_name} sent nothing for "
                f"{self.lifecycle.log_stall_timeout:g} s; reading it again"
            )
        elif running and not position.new_lines:
            time.sleep(self.lifecycle.poll_interval)

    def _read_log(self, pod_name: str, position: _LogPosition) -> bool:
        """Read the log from ``position`` until the stream ends; True when it stalled."""
        since = position.start_pass()
        splitter = _LineSplitter()
        chunks = self.cluster.follow_log(
            pod_name, stall_seconds=self.lifecycle.log_stall_timeout, since_seconds=since
        )
        try:
            for line in splitter.lines(chunks):
                text = position.accept(line)
                if text is not None:
                    self._show(text)
        except LogStreamStalled:
            return True
        # A line cut short is kept aside: a resumed read gives it whole.
        position.partial = splitter.rest()
        return False

    def _show(self, text: str) -> None:
        shown = self.reader.feed(text)
        if shown is not None:
            self.on_log(shown)

    def _container_running(self, pod_name: str) -> bool:
        for pod in self.cluster.job_pods(self.job.uid):
            if pod.metadata.name == pod_name:
                container = _container_status(pod)
                return bool(container and container.state and container.state.running)
        return False

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


def _scheduled(pod: Any) -> bool:
    return bool(pod.spec and pod.spec.node_name)


def _stamp_key(stamp: str) -> str | None:
    """A kubelet timestamp (RFC 3339 with nanoseconds) as a string that sorts by time;
    None when ``stamp`` is not one. One node writes one zone, so the zone is left out."""
    if len(stamp) < 20 or stamp[4] != "-" or stamp[10] != "T" or stamp[13] != ":":
        return None
    fraction = ""
    if stamp[19] == ".":
        digits = stamp[20:]
        fraction = digits[: len(digits) - len(digits.lstrip("0123456789"))]
    return f"{stamp[:19]}.{fraction.ljust(9, '0')}"


class _LineSplitter:
    """Splits a byte stream into text lines; each byte is looked at once (a line's parts are
    joined when its newline arrives: growing one bytes object chunk by chunk would be
    quadratic in the line's length)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def lines(self, chunks: Iterable[bytes]) -> Iterator[str]:
        parts = self._parts
        for chunk in chunks:
            start = 0
            end = chunk.find(b"\n")
            while end != -1:
                parts.append(chunk[start:end])
                yield _text(b"".join(parts))
                parts.clear()
                start = end + 1
                end = chunk.find(b"\n", start)
            if start < len(chunk):
                parts.append(chunk[start:])

    def rest(self) -> str | None:
        """The partial line left at the end of the stream, if any."""
        return _text(b"".join(self._parts)) if self._parts else None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")
