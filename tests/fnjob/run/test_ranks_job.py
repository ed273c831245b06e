"""Multi-node runs on a cluster without Trainer (an indexed Job and a headless Service),
followed through the fake Kubernetes API at the transport; every pod runs fnjob's real
runner (as a launcher) and the nodes really meet."""

from __future__ import annotations

from typing import Any

import pytest

from fnjob import JobFailed, Lifecycle, RankFailed, RendezvousTimeout
from fnjob.run.manifest import JobOptions
from fnjob.run.protocol import encode_call
from fnjob.run.ranks_job import RanksJobDeployer
from tests.fnjob.fake_kube_ranks import FakeIndexedJobApi
from tests.fnjob.run_fixtures import api_client_for

ENTRY = "module:tests.fnjob.rank_payloads:{}"


def run(
    fake: FakeIndexedJobApi,
    nodes: int = 2,
    rendezvous_timeout: float = 60,
    training_runtime: str | None = None,
    lifecycle: Lifecycle | None = None,
) -> Any:
    logs: list[str] = []
    deployer = RanksJobDeployer(
        JobOptions(namespace="team-a", lifecycle=lifecycle or Lifecycle(poll_interval=0.05)),
        nodes=nodes,
        rendezvous_timeout=rendezvous_timeout,
        training_runtime=training_runtime,
        api_client=api_client_for(fake),
    )
    value = deployer.run(
        "reg/fnjob@sha256:" + "a" * 64, encode_call(), function_name="train", on_log=logs.append
    )
    return value, logs


def test_every_node_runs_and_rank_zero_value_comes_back_with_every_rank_log() -> None:
    with FakeIndexedJobApi(ENTRY.format("rank_of_process")) as fake:
        value, logs = run(fake, nodes=3)
        created = fake.requests_to("POST", "/jobs")[0].body
        services = fake.requests_to("POST", "/services")
    assert value == 0
    assert sorted(logs) == [f"[rank {r}] I am rank {r} of 3" for r in range(3)]
    assert created["spec"]["completionMode"] == "Indexed"
    # The headless Service exists and is owned by the Job (deleted with it).
    [service] = services
    assert service.body["metadata"]["ownerReferences"][0]["name"] == created["metadata"]["name"]
    # The Job (with its pods, Service and Secret) is deleted afterwards.
    assert fake.jobs == {}


def test_an_exception_on_rank_one_stops_the_other_pods_and_comes_back_with_its_rank() -> None:
    with FakeIndexedJobApi(ENTRY.format("fail_on_rank_one")) as fake:
        with pytest.raises(RankFailed) as caught:
            run(fake)
        # Rank 0 loops for ever: only deleting the Job stopped its pod.
        assert fake.processes[0].returncode is not None
        assert fake.jobs == {}
    assert caught.value.rank == 1
    assert isinstance(caught.value.error, KeyError)
    assert "fail_on_rank_one" in caught.value.remote_traceback


def test_an_oom_killed_node_fails_the_run_with_its_reason() -> None:
    with FakeIndexedJobApi(ENTRY.format("rank_of_process"), faults={1: "OOMKilled"}) as fake:
        with pytest.raises(JobFailed) as caught:
            run(fake)
        assert fake.jobs == {}
    assert caught.value.reason == "OOMKilled"
    assert caught.value.exit_code == 137
    assert "node 1" in str(caught.value)


def test_a_lost_pod_fails_the_run_naming_its_node() -> None:
    with FakeIndexedJobApi(ENTRY.format("fail_on_rank_one"), faults={1: "Lost"}) as fake:
        with pytest.raises((JobFailed, RendezvousTimeout)) as caught:
            run(fake)
        assert fake.jobs == {}
    assert "node 1" in str(caught.value)


def test_a_node_that_never_joins_times_the_rendezvous_out_naming_its_rank() -> None:
    # Node 1's container never starts its runner (killed before), node 0 waits for it.
    with FakeIndexedJobApi(ENTRY.format("rank_of_process"), faults={1: "Pending"}) as fake:
        with pytest.raises(RendezvousTimeout, match=r"rank 1 \(node 1 of 2\) never joined"):
            run(fake, rendezvous_timeout=1)
        assert fake.jobs == {}


def test_with_a_runtime_the_trainjob_nodes_meet_and_rank_zero_value_comes_back() -> None:
    with FakeIndexedJobApi(ENTRY.format("rank_of_process")) as fake:
        value, logs = run(fake, nodes=2, training_runtime="fnjob-torch")
        [created] = fake.requests_to("POST", "/trainjobs")
        secret = fake.requests_to("POST", "/secrets")[0].body
        deleted = fake.requests_to("DELETE", "/trainjobs/")
    assert value == 0
    assert sorted(logs) == ["[rank 0] I am rank 0 of 2", "[rank 1] I am rank 1 of 2"]
    assert created.body["spec"]["runtimeRef"]["name"] == "fnjob-torch"
    # The Secret goes with the TrainJob, which is deleted at the end.
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "TrainJob"
    assert len(deleted) == 1


def test_an_exception_on_a_trainjob_rank_comes_back_with_its_rank() -> None:
    with FakeIndexedJobApi(ENTRY.format("fail_on_rank_one")) as fake:
        with pytest.raises(RankFailed) as caught:
            run(fake, training_runtime="fnjob-torch")
        assert fake.train_jobs == {}
    assert caught.value.rank == 1


@pytest.mark.parametrize("runtime", [None, "fnjob-torch"])
def test_ctrl_c_deletes_the_job_or_trainjob_and_stops_every_pod(runtime: str | None) -> None:
    seen: list[str] = []

    def interrupt_once_both_are_up(line: str) -> None:
        seen.append(line)
        if sum("is up" in text for text in seen) == 2:
            raise KeyboardInterrupt

    with FakeIndexedJobApi(ENTRY.format("print_then_wait")) as fake:
        deployer = RanksJobDeployer(
            JobOptions(namespace="team-a", lifecycle=Lifecycle(poll_interval=0.05)),
            nodes=2,
            rendezvous_timeout=60,
            training_runtime=runtime,
            api_client=api_client_for(fake),
        )
        with pytest.raises(KeyboardInterrupt):
            deployer.run(
                "reg/fnjob@sha256:" + "a" * 64,
                encode_call(),
                function_name="train",
                on_log=interrupt_once_both_are_up,
            )
        assert fake.jobs == {} and fake.train_jobs == {}
        assert all(process.returncode is not None for process in fake.processes.values())


def test_a_node_no_gpu_node_can_take_fails_the_run_with_the_schedulers_message() -> None:
    lifecycle = Lifecycle(poll_interval=0.05, unschedulable_timeout=0.5)
    with FakeIndexedJobApi(ENTRY.format("rank_of_process"), faults={1: "Unschedulable"}) as fake:
        with pytest.raises(JobFailed) as caught:
            run(fake, lifecycle=lifecycle)
        assert fake.jobs == {}
    assert caught.value.reason == "Unschedulable"
    assert "node 1" in str(caught.value) and "Insufficient nvidia.com/gpu" in str(caught.value)
