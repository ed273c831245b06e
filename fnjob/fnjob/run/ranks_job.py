"""Run a distributed function on a cluster: N pods of an indexed Job, or of a TrainJob.

Without a training runtime, the indexed Job (``fnjob.run.manifest_ranks``) is created, then its
headless Service and the run's Secret, both owned by the Job. With one, the TrainJob is
created on it, then the run's Secret owned by the TrainJob; its pods are the ones Trainer's
JobSet labels with the TrainJob's name and the run id (their outcomes are signed with the
run's key, so a pod planted with those labels can add log lines, never a value).

Each pod's log is streamed in its own thread (lines arrive prefixed ``[rank R]`` by the
launcher); each pod's signed outcome names its rank (``fnjob.run.ranks.RankOutcomes``). The run
ends at the first failure: a rank's exception, a pod that ended without an outcome (its
reason: ``OOMKilled``, ``Error``...), a pod that vanished (lost node, eviction), the Job's or
TrainJob's own ``Failed`` condition, or the deadline (the Job's ``activeDeadlineSeconds``; a
TrainJob has none, so fnjob's own clock); or once every node reported. Then the Job or
TrainJob is deleted with Foreground propagation, which stops every other pod and removes
what it owns (also on Ctrl-C, SIGTERM, SIGHUP and interpreter exit).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fnjob.errors import JobFailed, JobTimeout
from fnjob.run import interrupts
from fnjob.run.cluster import Cluster, ClusterError, connect, current_namespace
from fnjob.run.follow import CreatedJob, LogSink, StatusSink
from fnjob.run.manifest import (
    CONTAINER_NAME,
    RUN_ID_LABEL,
    JobOptions,
    build_job_manifest,
    build_run_secret,
)
from fnjob.run.manifest_ranks import (
    TRAINER_API_VERSION,
    TRAINER_NODE_JOB,
    build_headless_service,
    build_indexed_job,
    build_train_job,
)
from fnjob.run.protocol import OutcomeReader, new_run_id, new_run_key
from fnjob.run.ranks import RankOutcomes, nproc_per_node

__all__ = ["COMPLETION_INDEX", "RanksJobDeployer"]

# Set by the Job controller on an indexed Job's pods (annotation; a label from 1.28 on).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# JobSet's label naming the JobSet (Trainer names it after the TrainJob) on every pod.
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"


class RanksJobDeployer:
    """Runs an image on ``nodes`` pods (an indexed Job, or a TrainJob on
    ``training_runtime``); returns rank 0's value."""

    def __init__(
        self,
        options: JobOptions,
        *,
        nodes: int,
        rendezvous_timeout: float,
        training_runtime: str | None = None,
        api_client: Any = None,
    ) -> None:
        self.options = options
        self.nodes = nodes
        self.nproc = nproc_per_node(options.resources.gpus)
        self.rendezvous_timeout = rendezvous_timeout
        self.training_runtime = training_runtime
        self._api_client = api_client

    def run(
        self,
        image: str,
        call: bytes,
        *,
        function_name: str,
        on_log: LogSink,
        on_status: StatusSink | None = None,
        on_stderr: LogSink | None = None,
    ) -> Any:
        """Create the run's objects, stream every pod's log to ``on_log``, return rank 0's
        value.

        Raises ``RankFailed`` (the first failing rank's error and traceback),
        ``RendezvousTimeout`` naming the ranks that never joined, ``JobFailed`` for a pod that
        ended without an outcome or vanished, ``JobTimeout`` past ``timeout``, and
        ``ClusterError`` for the API. The Job or TrainJob (its pods, and what it owns) is
        deleted whatever happens.
        """
        from fnjob.run import cleanup

        status = on_status or (lambda _text: None)
        options = self.options
        cluster = Cluster(self._api_client or connect(), options.namespace or current_namespace())
        if options.placement is not None:
            status(options.placement.describe())
        run_id, key = new_run_id(), new_run_key()
        single = build_job_manifest(
            image=image,
            function_name=function_name,
            run_id=run_id,
            namespace=cluster.namespace,
            options=options,
            caller=cleanup.caller_identity(),
        )
        with interrupts.signals_raise():
            source = self._create(cluster, single, run_id, status)
            with interrupts.on_exit(source.delete):
                try:
                    for manifest in source.owned(call, key):
                        if manifest["kind"] == "Service":
                            cluster.create_service(manifest)
                        else:
                            cluster.create_secret(manifest)
                    follower = _RanksFollower(source, self, key=key, on_log=on_log)
                    outcomes = follower.follow()
                finally:
                    source.delete()
        return outcomes.result()

    def _create(
        self, cluster: Cluster, single: dict[str, Any], run_id: str, status: StatusSink
    ) -> _IndexedJob | _TrainJob:
        shape: dict[str, Any] = {
            "run_id": run_id,
            "nodes": self.nodes,
            "nproc": self.nproc,
            "rendezvous_timeout": self.rendezvous_timeout,
        }
        try:
            if self.training_runtime is not None:
                manifest = build_train_job(single, runtime=self.training_runtime, **shape)
                created = cluster.create_train_job(manifest)
                metadata = created["metadata"]
                status(f"TrainJob {metadata['name']} created on {self.training_runtime}")
                return _TrainJob(cluster, metadata["name"], metadata["uid"], run_id, status)
            manifest = build_indexed_job(single, **shape)
            job = cluster.create_job(manifest)
        except ClusterError:
            raise
        except BaseException:
            # Interrupted while the request was in flight: find what it made by run id.
            with contextlib.suppress(Exception):
                cluster.delete_jobs_of_run(run_id)
            raise
        created_job = CreatedJob(name=job.metadata.name, uid=job.metadata.uid)
        status(f"indexed job {created_job.name} created for {self.nodes} nodes")
        return _IndexedJob(cluster, created_job, manifest, run_id, status)


class _IndexedJob:
    """The indexed Job of a run: its pods, its end, its deletion."""

    container = CONTAINER_NAME

    def __init__(
        self,
        cluster: Cluster,
        job: CreatedJob,
        manifest: dict[str, Any],
        run_id: str,
        status: StatusSink,
    ) -> None:
        self.cluster, self.job, self.manifest = cluster, job, manifest
        self.run_id, self.status = run_id, status
        self.name = job.name
        self._deleted = False

    def owned(self, call: bytes, key: bytes) -> list[dict[str, Any]]:
        job = self.job
        return [
            build_headless_service(self.manifest, run_id=self.run_id, job_uid=job.uid),
            build_run_secret(
                run_id=self.run_id,
                namespace=self.cluster.namespace,
                job_name=job.name,
                job_uid=job.uid,
                call=call,
                key=key,
            ),
        ]

    def pods(self) -> dict[int | None, Any]:
        return {_node_of(pod): pod for pod in self.cluster.job_pods(self.job.uid)}

    def failed(self) -> Any:
        job = self.cluster.read_job(self.name)
        return _failed_condition((job.status and job.status.conditions) or [])

    def delete(self) -> None:
        if self._deleted:
            return
        self._deleted = True
        try:
            if self.cluster.delete_job(self.name):
                self.status(f"job {self.name} deleted with its pods")
        except ClusterError as error:
            self.status(f"could not delete job {self.name}: {error}")


class _TrainJob:
    """The TrainJob of a run: its pods (Trainer's JobSet's), its end, its deletion."""

    container = TRAINER_NODE_JOB

    def __init__(
        self, cluster: Cluster, name: str, uid: str, run_id: str, status: StatusSink
    ) -> None:
        self.cluster, self.name, self.uid = cluster, name, uid
        self.run_id, self.status = run_id, status
        self._deleted = False

    def owned(self, call: bytes, key: bytes) -> list[dict[str, Any]]:
        return [
            build_run_secret(
                run_id=self.run_id,
                namespace=self.cluster.namespace,
                job_name=self.name,
                job_uid=self.uid,
                call=call,
                key=key,
                owner=(TRAINER_API_VERSION, "TrainJob"),
            )
        ]

    def pods(self) -> dict[int | None, Any]:
        selector = f"{JOBSET_NAME_LABEL}={self.name},{RUN_ID_LABEL}={self.run_id}"
        return {_node_of(pod): pod for pod in self.cluster.labelled_pods(selector)}

    def failed(self) -> Any:
        train_job = self.cluster.read_train_job(self.name)
        conditions = (train_job.get("status") or {}).get("conditions") or []
        return _failed_condition([_Condition(**_condition_fields(c)) for c in conditions])

    def delete(self) -> None:
        if self._deleted:
            return
        self._deleted = True
        try:
            if self.cluster.delete_train_job(self.name):
                self.status(f"TrainJob {self.name} deleted with its pods")
        except ClusterError as error:
            self.status(f"could not delete TrainJob {self.name}: {error}")


@dataclass(frozen=True)
class _Condition:
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


def _condition_fields(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: raw.get(key) for key in ("type", "status", "reason", "message")}


def _failed_condition(conditions: list[Any]) -> Any:
    return next((c for c in conditions if c.type == "Failed" and c.status == "True"), None)


@dataclass
class _Node:
    """A followed pod of one node."""

    pod_name: str
    reader: OutcomeReader
    streamed: threading.Event = field(default_factory=threading.Event)


class _RanksFollower:
    """Follows the run's pods until a failure, the deadline or every node's outcome."""

    def __init__(
        self,
        source: _IndexedJob | _TrainJob,
        deployer: RanksJobDeployer,
        *,
        key: bytes,
        on_log: LogSink,
    ) -> None:
        self.source = source
        self.cluster = source.cluster
        self.key = key
        self.on_log = on_log
        self.lifecycle = deployer.options.lifecycle
        timeout = deployer.options.timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout
        self.outcomes = RankOutcomes(nodes=deployer.nodes, nproc=deployer.nproc)
        self.nodes: dict[int, _Node] = {}
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.started = time.monotonic()
        self.expected = deployer.nodes

    def follow(self) -> RankOutcomes:
        while not self.outcomes.done:
            pods = self.source.pods()
            self._start_streams(pods)
            self._drain()
            self._check_pods(pods)
            if not self.outcomes.done:
                self._check_waiting(pods)
            if not self.outcomes.done:
                self._check_job(pods)
            if not self.outcomes.done:
                time.sleep(self.lifecycle.poll_interval)
                self._drain()
        return self.outcomes

    def _start_streams(self, pods: dict[int | None, Any]) -> None:
        for node, pod in pods.items():
            if node is None or node in self.nodes or not _started(pod):
                continue
            followed = _Node(pod.metadata.name, OutcomeReader(self.key))
            self.nodes[node] = followed
            thread = threading.Thread(
                target=self._stream, args=(node, followed), name=f"fnjob-log-{node}", daemon=True
            )
            thread.start()

    def _stream(self, node: int, followed: _Node) -> None:
        """One pod's log into the queue (lines without the kubelet's timestamps)."""
        rest = b""
        try:
            for chunk in self.cluster.follow_log(
                followed.pod_name,
                stall_seconds=self.lifecycle.log_stall_timeout,
                container=self.source.container,
            ):
                *whole, rest = (rest + chunk).split(b"\n")
                for raw in whole:
                    text = raw.decode("utf-8", errors="replace").rstrip("\r")
                    self.lines.put((node, text.partition(" ")[2]))
        except ClusterError as error:
            self.lines.put((node, f"[node {node}] reading the log failed: {error}"))
        finally:
            if rest:
                self.lines.put((node, rest.decode("utf-8", "replace").partition(" ")[2]))
            followed.streamed.set()

    def _drain(self) -> None:
        while True:
            try:
                node, text = self.lines.get_nowait()
            except queue.Empty:
                return
            followed = self.nodes[node]
            shown = followed.reader.feed(text)
            if shown is not None:
                self.on_log(shown)
            outcome = followed.reader.outcome
            if outcome is not None and not self.outcomes.reported(node):
                self.outcomes.node_outcome(node, outcome)

    def _check_pods(self, pods: dict[int | None, Any]) -> None:
        """A followed pod that ended (log read to its end) without an outcome, or that
        vanished, fails the run with what Kubernetes says about it."""
        for node, followed in self.nodes.items():
            if followed.reader.outcome is not None or self.outcomes.failure is not None:
                continue
            pod = pods.get(node)
            if pod is None or pod.metadata.name != followed.pod_name:
                self._node_failed(node, followed, "Lost", "the pod vanished (node lost, evicted)")
                continue
            terminated = _terminated(pod)
            if terminated is None or not followed.streamed.is_set():
                continue
            self._drain()
            if followed.reader.outcome is None:
                self._node_failed(
                    node,
                    followed,
                    terminated.reason or "Error",
                    terminated.message or "the container ended without an outcome",
                    exit_code=terminated.exit_code,
                )

    def _check_waiting(self, pods: dict[int | None, Any]) -> None:
        """Bounds for nodes that never start: pods not created within
        ``pod_creation_timeout``, a pod no node can take for ``unschedulable_timeout``."""
        waited = time.monotonic() - self.started
        created = [node for node in pods if node is not None]
        limit = self.lifecycle.pod_creation_timeout
        if limit is not None and waited >= limit and len(created) < self.expected:
            missing = sorted(set(range(self.expected)) - set(created))
            self.outcomes.node_failed(
                missing[0],
                JobFailed(
                    self.source.name,
                    reason="FailedCreate",
                    message=f"the pods of nodes {missing} were not created within {limit:g} s",
                ),
            )
            return
        limit = self.lifecycle.unschedulable_timeout
        if limit is None or waited < limit:
            return
        for node, pod in pods.items():
            message = _unschedulable(pod)
            if node is not None and node not in self.nodes and message is not None:
                self.outcomes.node_failed(
                    node,
                    JobFailed(
                        f"{self.source.name} (node {node}, pod {pod.metadata.name})",
                        reason="Unschedulable",
                        message=message,
                    ),
                )
                return

    def _node_failed(
        self, node: int, followed: _Node, reason: str, message: str, exit_code: int | None = None
    ) -> None:
        self.outcomes.node_failed(
            node,
            JobFailed(
                f"{self.source.name} (node {node}, pod {followed.pod_name})",
                reason=reason,
                message=message,
                exit_code=exit_code,
                last_logs=tuple(followed.reader.last_lines),
            ),
        )

    def _check_job(self, pods: dict[int | None, Any]) -> None:
        condition = self.source.failed()
        if condition is None:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.outcomes.node_failed(
                    -1,
                    JobTimeout(
                        self.source.name,
                        reason="DeadlineExceeded",
                        message=f"still running after {self.timeout} s; stopped",
                    ),
                )
            return
        # It failed because a pod did: that pod's own outcome (still in its log stream) or
        # its reason is the better error.
        for node, followed in self.nodes.items():
            pod = pods.get(node)
            if pod is None or _terminated(pod) is not None:
                followed.streamed.wait(timeout=self.lifecycle.log_stall_timeout or 30.0)
        self._drain()
        self._check_pods(pods)
        kind = JobTimeout if condition.reason == "DeadlineExceeded" else JobFailed
        self.outcomes.node_failed(
            -1,
            kind(
                self.source.name,
                reason=condition.reason or "Failed",
                message=condition.message or "",
            ),
        )


def _node_of(pod: Any) -> int | None:
    metadata = pod.metadata
    index = ((metadata.annotations or {}) | (metadata.labels or {})).get(COMPLETION_INDEX)
    return int(index) if index is not None and str(index).isdigit() else None


def _container(pod: Any) -> Any:
    statuses = (pod.status and pod.status.container_statuses) or []
    return next((c for c in statuses if c.name in (CONTAINER_NAME, TRAINER_NODE_JOB)), None)


def _unschedulable(pod: Any) -> str | None:
    """The scheduler's message when no node can take the pod, else None."""
    for condition in (pod.status and pod.status.conditions) or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            return str(condition.message or "no node fits the pod")
    return None


def _started(pod: Any) -> bool:
    container = _container(pod)
    state = container.state if container is not None else None
    return bool(state and (state.running or state.terminated))


def _terminated(pod: Any) -> Any:
    container = _container(pod)
    return container.state.terminated if container is not None and container.state else None
