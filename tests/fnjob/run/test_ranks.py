"""Distributed runs: the launcher inside the image, the API's checks, and real local runs
of two ranks (two podman containers on one network, torch.distributed with gloo on CPU)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from fnjob import Job, Lifecycle, RankFailed, RendezvousTimeout, SecretEnv
from fnjob.run.protocol import Outcome, ResultMissing, parse_outcome
from fnjob.run.ranks import RankOutcomes
from tests.fnjob import rank_payloads
from tests.fnjob.conftest import free_port
from tests.fnjob.run_fixtures import fnjob_containers
from tests.fnjob.run_functions import run_runner, write_run_dir

KEY = b"k" * 32
ENTRY = "module:tests.fnjob.rank_payloads:{}"


def run_node(tmp_path: Path, function: str, **env: str) -> tuple[Outcome, list[str]]:
    """Run one node's launcher on this machine; its outcome and its output lines."""
    run_dir = write_run_dir(tmp_path, None, KEY)
    completed = run_runner(ENTRY.format(function), run_dir, **env)
    lines = completed.stdout.splitlines()
    return parse_outcome(lines, KEY), [line for line in lines if "FNJOB-OUTCOME" not in line]


# -- the launcher (fnjob/runner.py) ----------------------------------------------------------


def test_each_process_gets_torch_variables_and_rank_zero_value_comes_back(
    tmp_path: Path,
) -> None:
    outcome, output = run_node(
        tmp_path, "rank_of_process", FNJOB_NNODES="1", FNJOB_NPROC_PER_NODE="2"
    )
    assert outcome.ok and outcome.rank == 0
    assert outcome.unwrap() == 0
    # Every process's output, prefixed by its rank.
    assert sorted(output) == ["[rank 0] I am rank 0 of 2", "[rank 1] I am rank 1 of 2"]


def test_an_exception_on_rank_one_stops_rank_zero_and_carries_rank_and_traceback(
    tmp_path: Path,
) -> None:
    outcome, _ = run_node(tmp_path, "fail_on_rank_one", FNJOB_NNODES="1", FNJOB_NPROC_PER_NODE="2")
    assert not outcome.ok and outcome.rank == 1
    with pytest.raises(RankFailed) as caught:
        outcome.unwrap()
    assert caught.value.rank == 1
    assert isinstance(caught.value.error, KeyError)
    assert "fail_on_rank_one" in caught.value.remote_traceback
    assert "rank 1 failed: builtins.KeyError" in str(caught.value)


def test_a_process_that_dies_without_outcome_fails_the_node_naming_its_rank(
    tmp_path: Path,
) -> None:
    outcome, _ = run_node(tmp_path, "die_on_rank_one", FNJOB_NNODES="1", FNJOB_NPROC_PER_NODE="2")
    with pytest.raises(RankFailed) as caught:
        outcome.unwrap()
    assert caught.value.rank == 1
    assert caught.value.type_name == "fnjob.RankDied"
    assert "exited with code 137" in str(caught.value)


def test_a_rendezvous_that_never_completes_names_the_ranks_that_never_joined(
    tmp_path: Path,
) -> None:
    port = free_port()
    outcome, _ = run_node(
        tmp_path,
        "rank_of_process",
        FNJOB_NNODES="3",
        FNJOB_NODE_RANK="0",
        FNJOB_MASTER_PORT=str(port - 1),
        FNJOB_RENDEZVOUS_TIMEOUT="1",
    )
    with pytest.raises(RendezvousTimeout) as caught:
        outcome.unwrap()
    assert "ranks 1, 2 (nodes 1, 2 of 3) never joined" in str(caught.value)


def test_a_join_not_signed_with_the_run_key_is_not_a_rank(tmp_path: Path) -> None:
    """Someone else on the network cannot stand in for a node: node 0 still waits."""
    import threading

    port = free_port()

    def impostor() -> None:
        for _ in range(20):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"join 1 " + b"0" * 64 + b"\n")
                    conn.recv(16)
                return
            except OSError:
                import time

                time.sleep(0.1)

    thread = threading.Thread(target=impostor, daemon=True)
    thread.start()
    outcome, _ = run_node(
        tmp_path,
        "rank_of_process",
        FNJOB_NNODES="2",
        FNJOB_NODE_RANK="0",
        FNJOB_MASTER_PORT=str(port - 1),
        FNJOB_RENDEZVOUS_TIMEOUT="2",
    )
    thread.join()
    with pytest.raises(RendezvousTimeout, match="rank 1 "):
        outcome.unwrap()


# -- combining the nodes' outcomes -------------------------------------------------------------


def test_only_rank_zero_value_is_the_result_and_a_misplaced_rank_is_refused() -> None:
    import pickle

    value = pickle.dumps("from rank 2")
    outcomes = RankOutcomes(nodes=2, nproc=2)
    # Node 0 reporting rank 2's value (forged, or a bug): refused, never the result.
    outcomes.node_outcome(0, Outcome(ok=True, pickled_value=value, rank=2))
    outcomes.node_outcome(1, Outcome(ok=True, pickled_value=value, rank=2))
    with pytest.raises(ResultMissing, match="rank 2, not its own rank 0"):
        outcomes.result()
    good = RankOutcomes(nodes=2, nproc=2)
    good.node_outcome(1, Outcome(ok=True, pickled_value=pickle.dumps("one"), rank=2))
    good.node_outcome(0, Outcome(ok=True, pickled_value=pickle.dumps("zero"), rank=0))
    assert good.done and good.result() == "zero"


# -- the API's checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"nodes": 0}, "nodes=0 must be a whole number >= 1"),
        ({"nodes": True}, "nodes=True"),
        ({"nodes": 2, "lifecycle": Lifecycle(backoff_limit=1)}, "lifecycle.backoff_limit=1"),
        ({"nodes": 2, "lifecycle": Lifecycle(istio_sidecar=True)}, "lifecycle.istio_sidecar"),
        ({"nodes": 2, "deployer": "local", "training_runtime": "torch"}, "training_runtime="),
        ({"nodes": 2, "keep_job": True}, "keep_job=True cannot apply with nodes=2"),
        (
            {"nodes": 2, "training_runtime": "t", "secret_env": SecretEnv(secrets=("wandb",))},
            "secret_env.secrets=['wandb'] cannot apply to a TrainJob",
        ),
    ],
)
def test_bad_distributed_settings_name_the_option(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        Job(base_image="b", registry="127.0.0.1:5000", **settings)


def test_a_zero_rendezvous_timeout_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="rendezvous_timeout=0"):
        Lifecycle(rendezvous_timeout=0)


def test_the_stack_default_runtime_is_used_for_multi_node_cluster_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FNJOB_TRAINING_RUNTIME", "fnjob-torch")
    assert Job(base_image="b", registry="r:1", nodes=2).training_runtime == "fnjob-torch"
    assert Job(base_image="b", registry="r:1").training_runtime is None
    assert Job(base_image="b", registry="r:1", deployer="local", nodes=2).training_runtime is None


# -- real local runs: two containers, one podman network, gloo -----------------------------------


def local_job(registry: Any, torch_base: str, podman_env: dict[str, str], **settings: Any) -> Job:
    return Job(
        base_image=torch_base,
        registry=registry.host,
        image_name="tests/ranks",
        deployer="local",
        engine="podman",
        engine_env=podman_env,
        nodes=2,
        timeout=600,
        **settings,
    )


@pytest.mark.real
def test_two_local_ranks_all_reduce_and_rank_zero_returns_the_sum(
    registry: Any, torch_base: str, podman_env: dict[str, str]
) -> None:
    logs: list[str] = []
    job = local_job(registry, torch_base, podman_env, on_log=logs.append, progress=False)
    assert job.run(rank_payloads.all_reduce_sum) == {"sum": 3.0, "world_size": 2}
    assert "[rank 0] all_reduce gave 3 on rank 0" in logs
    assert "[rank 1] all_reduce gave 3 on rank 1" in logs
    assert fnjob_containers(podman_env) == []


@pytest.mark.real
def test_an_exception_on_local_rank_one_comes_back_and_rank_zero_is_stopped(
    registry: Any, torch_base: str, podman_env: dict[str, str]
) -> None:
    logs: list[str] = []
    job = local_job(registry, torch_base, podman_env, on_log=logs.append, progress=False)
    with pytest.raises(RankFailed) as caught:
        job.run(rank_payloads.raise_on_rank_one)
    assert caught.value.rank == 1
    assert isinstance(caught.value.error, ValueError)
    assert "rank 1 refuses" in str(caught.value)
    assert "raise_on_rank_one" in caught.value.remote_traceback
    # Rank 0 was waiting for ever: fnjob stopped it, and nothing is left behind.
    assert "[rank 0] rank 0 waits" in logs
    assert fnjob_containers(podman_env) == []


def plain_job(registry: Any, python_base: str, podman_env: dict[str, str], **settings: Any) -> Job:
    """Two local ranks on the plain Python base (functions that need no torch)."""
    return Job(
        base_image=python_base,
        registry=registry.host,
        image_name="tests/ranks-plain",
        deployer="local",
        engine="podman",
        engine_env=podman_env,
        nodes=2,
        timeout=600,
        progress=False,
        **settings,
    )


def fnjob_networks(podman_env: dict[str, str]) -> list[str]:
    import subprocess

    listed = subprocess.run(
        ["podman", "network", "ls", "--format", "{{.Name}}"],
        env=podman_env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [name for name in listed.stdout.split() if name.startswith("fnjob-")]


@pytest.mark.real
def test_a_local_rank_that_dies_fails_the_run_with_its_rank(
    registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    job = plain_job(registry, python_base, podman_env, on_log=lambda _line: None)
    with pytest.raises(RankFailed) as caught:
        job.run(rank_payloads.die_on_rank_one)
    assert caught.value.rank == 1
    assert "rank 1 exited with code 137" in str(caught.value)
    assert fnjob_containers(podman_env) == []


@pytest.mark.real
def test_ctrl_c_during_a_local_distributed_run_removes_every_container_and_the_network(
    registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    seen: list[str] = []

    def interrupt_once_both_are_up(line: str) -> None:
        seen.append(line)
        if sum("is up" in text for text in seen) == 2:
            raise KeyboardInterrupt

    job = plain_job(registry, python_base, podman_env, on_log=interrupt_once_both_are_up)
    with pytest.raises(KeyboardInterrupt):
        job.run(rank_payloads.print_then_wait)
    assert fnjob_containers(podman_env) == []
    assert fnjob_networks(podman_env) == []
