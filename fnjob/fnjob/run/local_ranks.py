"""Run a distributed function here: one container per node on a private podman network.

The twin of a multi-node cluster run, for iterating on one machine (gloo on CPU): each node
is a container of the same image, started like the single-container run
(``fnjob.run.local``: hardened, the run directory mounted read-only, labelled for clean-up)
on a network made for the run. podman gets fixed addresses on it and every node's name in
``/etc/hosts`` (its CNI networks have no DNS); docker's user networks resolve names. Node 0's
name is ``MASTER_ADDR``.

The first rank to fail (an exception, a container that dies) stops every container, and its
error is raised; otherwise rank 0's value is returned. Containers and the network are
removed at the end, on errors, on Ctrl-C and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import queue
import subprocess
import threading
from collections.abc import Mapping
from typing import IO, Any

from fnjob.errors import JobTimeout
from fnjob.run import cleanup, interrupts
from fnjob.run.follow import LogSink, StatusSink
from fnjob.run.local import (
    ContainerEngineError,
    ContainerRemover,
    LocalOptions,
    build_run_command,
    died_without_outcome,
    find_engine,
    run_directory,
)
from fnjob.run.manifest import CALLER_ANNOTATION, MANAGED_BY_LABEL
from fnjob.run.protocol import OutcomeReader, new_run_id, new_run_key
from fnjob.run.ranks import RankOutcomes, launcher_env, nproc_per_node

__all__ = ["LocalRanksDeployer"]

# Node n's address on the run's network is the subnet's host number FIRST_HOST + n (the
# bridge's gateway takes the first).
FIRST_HOST = 10


class LocalRanksDeployer:
    """Runs ``nodes`` containers of an image as one distributed run; returns rank 0's value."""

    def __init__(self, options: LocalOptions, *, nodes: int, rendezvous_timeout: float) -> None:
        self.options = options
        self.nodes = nodes
        self.nproc = nproc_per_node(options.resources.gpus)
        self.rendezvous_timeout = rendezvous_timeout

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
        """Start every node, stream their output (each line prefixed ``[rank R]``) to
        ``on_log``, return rank 0's value.

        Raises ``RankFailed`` (the failing rank's error, its traceback, rebuilt exception as
        ``error``), ``RendezvousTimeout`` naming the ranks that never joined, ``JobFailed``
        for a container that died without an outcome, ``JobTimeout`` past the timeout,
        ``ContainerEngineError`` when the engine cannot make the network or a container.
        """
        status = on_status or (lambda _text: None)
        engine = find_engine(self.options.engine)
        run = _LocalRun(self, engine, new_run_id())
        # What callers killed outright left (containers, networks) goes meanwhile.
        cleaned = cleanup.in_background(
            lambda: cleanup.remove_local_leftovers(
                engine, {**os.environ, **self.options.engine_env}
            )
        )
        with interrupts.signals_raise(), run_directory(call, run.key) as run_dir:
            try:
                run.create_network()
                status(f"network {run.network} created for {self.nodes} nodes")
                run.start(image, run_dir)
                status(f"started {self.nodes} containers fnjob-{run.run_id}-0..{self.nodes - 1}")
                run.follow(on_log, on_stderr)
            finally:
                run.remove_all()
                run.remove_network()
        for leftover in cleaned(15.0):
            status(f"removed {leftover.kind} {leftover.name}: {leftover.reason}")
        if run.timed_out.is_set():
            raise JobTimeout(
                f"fnjob-{run.run_id}",
                reason="DeadlineExceeded",
                message=f"still running after {self.options.timeout_seconds:g} s; stopped",
            )
        return run.outcomes.result()


class _LocalRun:
    """One distributed local run's containers, network and readers."""

    def __init__(self, deployer: LocalRanksDeployer, engine: str, run_id: str) -> None:
        self.deployer = deployer
        self.engine = engine
        self.podman = os.path.basename(engine).startswith("podman")
        self.run_id = run_id
        self.network = f"fnjob-{run_id}"
        self.key = new_run_key()
        self.engine_env = {**os.environ, **deployer.options.engine_env}
        nodes = deployer.nodes
        self.names = [f"fnjob-{run_id}-{node}" for node in range(nodes)]
        self.removers = [ContainerRemover(engine, n, self.engine_env) for n in self.names]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.readers: list[OutcomeReader] = []
        self.outcomes = RankOutcomes(nodes=nodes, nproc=deployer.nproc)
        self.timed_out = threading.Event()
        self.addresses: list[str] = []

    def _engine(self, *args: str) -> str:
        completed = subprocess.run(
            [self.engine, *args],
            env=self.engine_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if completed.returncode != 0:
            raise ContainerEngineError(
                f"{os.path.basename(self.engine)} {args[0]} {args[1]} failed",
                exit_code=completed.returncode,
                output=completed.stderr.strip().splitlines()[-5:],
            )
        return completed.stdout

    def create_network(self) -> None:
        self._engine(
            "network",
            "create",
            "--label",
            f"{MANAGED_BY_LABEL}=fnjob",
            "--label",
            f"fnjob/run-id={self.run_id}",
            "--label",
            f"{CALLER_ANNOTATION}={cleanup.caller_identity()}",
            self.network,
        )
        if not self.podman:
            return
        subnet = self._engine(
            "network", "inspect", "--format", "{{range .Subnets}}{{.Subnet}} {{end}}", self.network
        ).split()[0]
        hosts = ipaddress.ip_network(subnet)
        self.addresses = [str(hosts[FIRST_HOST + n]) for n in range(self.deployer.nodes)]

    def _network_args(self, node: int) -> list[str]:
        args = ["--network", self.network, "--hostname", self.names[node]]
        if self.addresses:
            args += ["--ip", self.addresses[node]]
            for other, address in enumerate(self.addresses):
                if other != node:
                    args += ["--add-host", f"{self.names[other]}:{address}"]
        return args

    def start(self, image: str, run_dir: str) -> None:
        deployer = self.deployer
        options = deployer.options
        for node in range(deployer.nodes):
            env = {
                **options.env,
                **launcher_env(
                    nodes=deployer.nodes,
                    nproc=deployer.nproc,
                    rendezvous_timeout=deployer.rendezvous_timeout,
                    master_addr=self.names[0],
                    node_rank=node,
                ),
            }
            node_options = dataclasses.replace(
                options,
                env=env,
                extra_args=(*options.extra_args, *self._network_args(node)),
            )
            command = build_run_command(
                self.engine,
                image,
                container_name=self.names[node],
                run_id=self.run_id,
                run_dir=run_dir,
                options=node_options,
                caller=cleanup.caller_identity(),
            )
            self.readers.append(OutcomeReader(self.key))
            self.processes.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env={**self.engine_env, **env},
                )
            )

    def follow(self, on_log: LogSink, on_stderr: LogSink | None) -> None:
        """Show every node's output until all ended, or stop them all at the first failure
        (or the timeout)."""
        lines = _pump(self.processes)
        timer = self._deadline()
        open_nodes = set(range(len(self.processes)))
        try:
            while open_nodes:
                node, stream, line = lines.get()
                if stream == "end":
                    open_nodes.discard(node)
                    self._ended(node)
                    continue
                self._show(node, stream, line, on_log, on_stderr)
        finally:
            if timer is not None:
                timer.cancel()

    def _show(
        self, node: int, stream: str, line: str, on_log: LogSink, on_stderr: LogSink | None
    ) -> None:
        reader = self.readers[node]
        if stream == "stdout":
            shown = reader.feed(line)
            if shown is not None:
                on_log(shown)
            if reader.outcome is not None and not self.outcomes.reported(node):
                self._report(node)
            return
        reader.last_lines.append(line)
        (on_stderr or on_log)(f"[node {node}] {line}")

    def _report(self, node: int) -> None:
        outcome = self.readers[node].outcome
        assert outcome is not None
        had_failure = self.outcomes.failure is not None
        self.outcomes.node_outcome(node, outcome)
        if not had_failure and self.outcomes.failure is not None:
            self.remove_all()

    def _ended(self, node: int) -> None:
        exit_code = self.processes[node].wait()
        if self.readers[node].outcome is not None:
            if not self.outcomes.reported(node):
                self._report(node)
            return
        if self.outcomes.failure is not None or self.timed_out.is_set():
            return  # stopped by fnjob
        self.outcomes.node_failed(
            node, died_without_outcome(self.names[node], exit_code, self.readers[node])
        )
        self.remove_all()

    def _deadline(self) -> threading.Timer | None:
        seconds = self.deployer.options.timeout_seconds
        if seconds is None:
            return None

        def stop() -> None:
            self.timed_out.set()
            self.remove_all()

        timer = threading.Timer(seconds, stop)
        timer.daemon = True
        timer.start()
        return timer

    def remove_all(self) -> None:
        threads = [threading.Thread(target=remover, daemon=True) for remover in self.removers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    def remove_network(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        subprocess.run(
            [self.engine, "network", "rm", "--force", self.network],
            env=self.engine_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=60,
        )


def _pump(processes: list[subprocess.Popen[bytes]]) -> queue.Queue[tuple[int, str, str]]:
    """(node, "stdout"|"stderr", line) as lines arrive, and (node, "end", "") once both of a
    node's pipes closed. Reader threads only move bytes; the caller's thread runs callbacks."""
    lines: queue.Queue[tuple[int, str, str]] = queue.Queue()
    remaining: Mapping[int, list[int]] = {node: [2] for node in range(len(processes))}
    lock = threading.Lock()

    def read(node: int, name: str, pipe: IO[bytes]) -> None:
        try:
            for raw in pipe:
                lines.put((node, name, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
        finally:
            with lock:
                remaining[node][0] -= 1
                last = remaining[node][0] == 0
            if last:
                lines.put((node, "end", ""))

    for node, process in enumerate(processes):
        assert process.stdout is not None and process.stderr is not None
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            threading.Thread(target=read, args=(node, name, pipe), daemon=True).start()
    return lines
