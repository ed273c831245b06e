"""Run a distributed function on a cluster without Trainer: an indexed Job, N pods.

One run: the indexed Job (``fnjob.manifest_ranks``) is created, then its headless Service
and the run's Secret, both owned by the Job. Each pod's log is streamed in its own thread
(lines arrive prefixed ``[rank R]`` by the launcher); each pod's signed outcome names its
rank (``fnjob.ranks.RankOutcomes``). The run ends at the first failure, a pod that ended
without an outcome (its reason: ``OOMKilled``, ``Error``...), a pod that vanished (lost
node, eviction) or the Job's own ``Failed`` condition (``DeadlineExceeded``), or once every
node reported; then the Job is deleted with Foreground propagation, which stops every
other pod and removes the Service and the Secret too (also on Ctrl-C, SIGTERM, SIGHUP and
interpreter exit).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fnjob import interrupts
from fnjob.cluster import Cluster, ClusterError, connect, current_namespace
from fnjob.errors import JobFailed, JobTimeout
from fnjob.follow import CreatedJob, LogSink, StatusSink
from fnjob.manifest import JobOptions, build_job_manifest, build_run_secret
from fnjob.manifest_ranks import build_headless_service, build_indexed_job
from fnjob.protocol import OutcomeReader, new_run_id, new_run_key
from fnjob.ranks import RankOutcomes, nproc_per_node

__all__ = ["COMPLETION_INDEX", "RanksJobDeployer"]

# Set by the Job controller on an indexed Job's pods (annotation; a label from 1.28 on).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


class RanksJobDeployer:
    """Runs an image on ``nodes`` pods of an indexed Job; returns rank 0's value."""

    def __init__(
        self,
        options: JobOptions,
        *,
        nodes: int,
        rendezvous_timeout: float,
        api_client: Any = None,
    ) -> None:
        self.options = options
        self.nodes = nodes
        self.nproc = nproc_per_node(options.resources.gpus)
        self.rendezvous_timeout = rendezvous_timeout
        self._api_client = api_client

    def run(
        self,
        image: str,
        call: bytes,
        *,
        function_name: str,
        on_log: LogSink,
        on_status: StatusSink | None = None,
    ) -> Any:
        """Create the run's objects, stream every pod's log to ``on_log``, return rank 0's
        value.

        Raises ``RankFailed`` (the first failing rank's error and traceback),
        ``RendezvousTimeout`` naming the ranks that never joined, ``JobFailed`` for a pod that
        ended without an outcome or vanished, ``JobTimeout`` past ``timeout``, and
        ``ClusterError`` for the API. The Job (its pods, Service and Secret) is deleted
        whatever happens.
        """
        from fnjob import cleanup

        status = on_status or (lambda _text: None)
        options = self.options
        cluster = Cluster(self._api_client or connect(), options.namespace or current_namespace())
        if options.placement is not None:
            status(options.placement.describe())
        run_id, key = new_run_id(), new_run_key()
        manifest = build_indexed_job(
            build_job_manifest(
                image=image,
                function_name=function_name,
                run_id=run_id,
                namespace=cluster.namespace,
                options=options,
                caller=cleanup.caller_identity(),
            ),
            run_id=run_id,
            nodes=self.nodes,
            nproc=self.nproc,
            rendezvous_timeout=self.rendezvous_timeout,
        )
        with interrupts.signals_raise():
            try:
                created = cluster.create_job(manifest)
            except ClusterError:
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    cluster.delete_jobs_of_run(run_id)
                raise
            job = CreatedJob(name=created.metadata.name, uid=created.metadata.uid)
            status(f"indexed job {job.name} created for {self.nodes} nodes")
            delete = _Deleter(cluster, job, status)
            with interrupts.on_exit(delete):
                try:
                    cluster.create_service(
                        build_headless_service(manifest, run_id=run_id, job_uid=job.uid)
                    )
                    cluster.create_secret(
                        build_run_secret(
                            run_id=run_id,
                            namespace=cluster.namespace,
                            job_name=job.name,
                            job_uid=job.uid,
                            call=call,
                            key=key,
                        )
                    )
                    follower = _RanksFollower(cluster, job, self, key=key, on_log=on_log)
                    outcomes = follower.follow()
                finally:
                    delete()
        return outcomes.result()


class _Deleter:
    """Deletes the run's Job once (Foreground: its pods, Service and Secret go too)."""

    def __init__(self, cluster: Cluster, job: CreatedJob, status: StatusSink) -> None:
        self._cluster, self._job, self._status = cluster, job, status
        self._done = False

    def __call__(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            if self._cluster.delete_job(self._job.name):
                self._status(f"job {self._job.name} deleted with its pods")
        except ClusterError as error:
            self._status(f"could not delete job {self._job.name}: {error}")


@dataclass
class _Node:
    """A followed pod of one node."""

    pod_name: str
    reader: OutcomeReader
    streamed: threading.Event = field(default_factory=threading.Event)


class _RanksFollower:
    """Follows the indexed Job's pods until a failure or every node's outcome."""

    def __init__(
        self,
        cluster: Cluster,
        job: CreatedJob,
        deployer: RanksJobDeployer,
        *,
        key: bytes,
        on_log: LogSink,
    ) -> None:
        self.cluster = cluster
        self.job = job
        self.key = key
        self.on_log = on_log
        self.lifecycle = deployer.options.lifecycle
        self.outcomes = RankOutcomes(nodes=deployer.nodes, nproc=deployer.nproc)
        self.nodes: dict[int, _Node] = {}
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()

    def follow(self) -> RankOutcomes:
        while not self.outcomes.done:
            pods = {_node_of(pod): pod for pod in self.cluster.job_pods(self.job.uid)}
            self._start_streams(pods)
            self._drain()
            self._check_pods(pods)
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
                followed.pod_name, stall_seconds=self.lifecycle.log_stall_timeout
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

    def _node_failed(
        self, node: int, followed: _Node, reason: str, message: str, exit_code: int | None = None
    ) -> None:
        self.outcomes.node_failed(
            node,
            JobFailed(
                f"{self.job.name} (node {node}, pod {followed.pod_name})",
                reason=reason,
                message=message,
                exit_code=exit_code,
                last_logs=tuple(followed.reader.last_lines),
            ),
        )

    def _check_job(self, pods: dict[int | None, Any]) -> None:
        job = self.cluster.read_job(self.job.name)
        for condition in (job.status and job.status.conditions) or []:
            if condition.type != "Failed" or condition.status != "True":
                continue
            # The Job failed because a pod did: that pod's own outcome (still in its log
            # stream) or its reason is the better error.
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
                    self.job.name,
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
    return statuses[0] if statuses else None


def _started(pod: Any) -> bool:
    container = _container(pod)
    state = container.state if container is not None else None
    return bool(state and (state.running or state.terminated))


def _terminated(pod: Any) -> Any:
    container = _container(pod)
    return container.state.terminated if container is not None and container.state else None
