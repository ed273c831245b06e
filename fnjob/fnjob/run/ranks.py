"""Distributed runs, the pure part: one function on N nodes, under torch.distributed.

A run of ``Job(nodes=N, gpus=G)`` starts N containers of the same image (pods on a cluster,
containers on one podman network locally). In each, the runner is a launcher
(``fnjob/runner.py``): the nodes join node 0, then every node starts ``max(G, 1)`` processes
of the function with ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``... set. Each node reports one signed outcome naming its rank (see the
runner); ``RankOutcomes`` combines them: the first failure of any rank wins, and only rank
0's value is the run's.

The deployers give each node's launcher its place through ``launcher_env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fnjob.run.protocol import Outcome, ResultMissing
from fnjob.run.runner import (
    DEFAULT_MASTER_PORT,
    NNODES_ENV,
    RENDEZVOUS_TIMEOUT_ENV,
)

__all__ = [
    "DEFAULT_MASTER_PORT",
    "TRAINING_RUNTIME_ENV",
    "RankOutcomes",
    "check_nodes",
    "launcher_env",
    "nproc_per_node",
    "training_runtime_from_environment",
]

# Set in notebooks by the stack's PodDefault when it deploys Trainer: the
# ClusterTrainingRuntime a multi-node run uses (unset: an indexed Job and a headless Service).
TRAINING_RUNTIME_ENV = "FNJOB_TRAINING_RUNTIME"
# Runtimes are Kubernetes object names.
_MAX_NAME = 253


def nproc_per_node(gpus: int) -> int:
    """Processes per node: one per GPU, or one on a CPU node."""
    return max(gpus, 1)


def check_nodes(
    nodes: object,
    *,
    deployer: str,
    backoff_limit: int,
    istio_sidecar: bool,
    training_runtime: str | None,
    keep_job: bool = False,
    secret_env_secrets: tuple[str, ...] = (),
) -> None:
    """Refuse what a run on ``nodes`` cannot do, naming the option (``ValueError``)."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes={nodes!r} must be a whole number >= 1")
    if training_runtime is not None:
        if not isinstance(training_runtime, str) or not 0 < len(training_runtime) <= _MAX_NAME:
            raise ValueError(
                f"training_runtime={training_runtime!r} must name a ClusterTrainingRuntime"
            )
        if deployer != "job":
            raise ValueError(
                f"training_runtime={training_runtime!r} needs deployer='job' (a TrainJob runs "
                "on a cluster); locally, leave it out"
            )
    if nodes == 1:
        return
    if backoff_limit > 0:
        raise ValueError(
            f"lifecycle.backoff_limit={backoff_limit} cannot apply with nodes={nodes}: a "
            "retried rank cannot rejoin the others' rendezvous; use backoff_limit=0"
        )
    if istio_sidecar:
        raise ValueError(
            f"lifecycle.istio_sidecar=True cannot apply with nodes={nodes}: the sidecar "
            "breaks the rendezvous between pods (kubeflow/trainer#2794)"
        )
    _check_cluster_options(nodes, keep_job, training_runtime, secret_env_secrets)


def _check_cluster_options(
    nodes: int, keep_job: bool, training_runtime: str | None, secret_env_secrets: tuple[str, ...]
) -> None:
    if keep_job:
        raise ValueError(
            f"keep_job=True cannot apply with nodes={nodes}: a distributed run's pods are "
            "always deleted at its end (their logs were streamed, prefixed by rank)"
        )
    if training_runtime is not None and secret_env_secrets:
        raise ValueError(
            f"secret_env.secrets={list(secret_env_secrets)} cannot apply to a TrainJob "
            f"(training_runtime={training_runtime!r}): its API takes single variables only; "
            "use secret_env.keys, or training_runtime=None for an indexed Job"
        )


def training_runtime_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The stack's default ClusterTrainingRuntime (``$FNJOB_TRAINING_RUNTIME``), or None."""
    value = (os.environ if environ is None else environ).get(TRAINING_RUNTIME_ENV, "").strip()
    return value or None


def launcher_env(
    *,
    nodes: int,
    nproc: int,
    rendezvous_timeout: float,
    master_addr: str | None = None,
    master_port: int | None = DEFAULT_MASTER_PORT,
    node_rank: int | None = None,
) -> dict[str, str]:
    """What makes the runner a launcher, and where its node sits (values the platform
    gives, such as Trainer's ``PET_NODE_RANK`` or an indexed Job's completion index, are
    left to it: pass None)."""
    env = {
        NNODES_ENV: str(nodes),
        "FNJOB_NPROC_PER_NODE": str(nproc),
        RENDEZVOUS_TIMEOUT_ENV: f"{rendezvous_timeout:g}",
    }
    if master_addr is not None:
        env["FNJOB_MASTER_ADDR"] = master_addr
    if master_port is not None:
        env["FNJOB_MASTER_PORT"] = str(master_port)
    if node_rank is not None:
        env["FNJOB_NODE_RANK"] = str(node_rank)
    return env


@dataclass
class RankOutcomes:
    """The nodes' outcomes as they arrive (any order, from any thread's caller).

    ``node_outcome`` takes a node's authenticated outcome: it must name that node's first
    rank (a value or error naming another rank is refused as forged); ``node_failed`` takes
    an error for a node that ended without one. The first failure is the run's; ``done``
    turns true at it, or once every node reported.
    """

    nodes: int
    nproc: int
    failure: BaseException | None = None
    failed_node: int | None = None
    _values: dict[int, Outcome] = field(default_factory=dict)

    def node_outcome(self, node: int, outcome: Outcome) -> None:
        expected = node * self.nproc
        if outcome.rank != expected:
            self.node_failed(
                node,
                ResultMissing(
                    f"node {node} reported an outcome for rank {outcome.rank}, not its own "
                    f"rank {expected}: refused"
                ),
            )
            return
        if outcome.ok:
            self._values[node] = outcome
            return
        try:
            outcome.unwrap()
        except BaseException as error:  # the rank's error (RankFailed...), kept to raise
            self.node_failed(node, error)

    def node_failed(self, node: int, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
            self.failed_node = node

    def reported(self, node: int) -> bool:
        return node in self._values

    @property
    def done(self) -> bool:
        return self.failure is not None or len(self._values) == self.nodes

    def result(self) -> Any:
        """Rank 0's value; raises the first failure, or ``ResultMissing`` when a node never
        reported (``FnJobError`` subclasses and the ranks' own errors)."""
        if self.failure is not None:
            raise self.failure
        missing = [node for node in range(self.nodes) if node not in self._values]
        if missing:
            raise ResultMissing(f"node(s) {missing} ended without reporting an outcome")
        return self._values[0].unwrap()
