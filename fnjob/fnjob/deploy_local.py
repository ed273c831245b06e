"""Run a built image on this machine with podman or docker: iterate without a cluster.

The container gets exactly what a Kubernetes Job gets: the same image, its own
entrypoint (no command override) and ``FNJOB_CALL`` (plus the user's env). Output is
streamed line by line; the runner's outcome line becomes the return value or the remote
exception, as with the Job deployer.
"""

from __future__ import annotations

import collections
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO, Any

from fnjob.deploy_job import (
    JobFailed,
    JobTimeout,
    LogSink,
    StatusSink,
    _quantity_value,
    cpu_quantity,
    memory_quantity,
    new_run_id,
)
from fnjob.errors import FnJobError
from fnjob.protocol import CALL_ENV_VAR

ENGINES = ("podman", "docker")
LAST_LOG_LINES = 20
# podman and docker both exit with these when they themselves (not the container) failed.
_ENGINE_FAILURE_CODES = frozenset({125, 126, 127})


class ContainerEngineNotFound(FnJobError):
    """Neither podman nor docker is installed (or the one asked for is missing)."""


class ContainerEngineError(FnJobError):
    """podman/docker could not run the container (pull failure, bad config...)."""

    def __init__(self, message: str, *, exit_code: int, output: Sequence[str] = ()) -> None:
        self.exit_code = exit_code
        self.output = tuple(output)
        text = message
        if self.output:
            text += "\n  " + "\n  ".join(self.output)
        super().__init__(text)


@dataclass(frozen=True)
class LocalOptions:
    """How the container runs locally.

    ``engine=None`` picks podman, then docker, from PATH. ``engine_env`` is added to the
    engine's own environment (e.g. ``CONTAINERS_CONF`` for a private podman setup);
    ``env`` goes into the container. cpu/memory/gpus become limits when given.
    """

    engine: str | None = None
    engine_env: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cpu: str | float | int | None = None
    memory: str | float | int | None = None
    gpus: int = 0
    timeout_seconds: float | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r} is not supported; use one of {ENGINES}")
        for name in ("engine_env", "env"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError(f"{name}={value!r} must be a mapping of strings to strings")
            object.__setattr__(self, name, MappingProxyType(dict(value)))
        if CALL_ENV_VAR in self.env:
            raise ValueError(
                f"env may not set {CALL_ENV_VAR}: fnjob passes the call arguments in it"
            )
        if self.cpu is not None:
            object.__setattr__(self, "cpu", cpu_quantity(self.cpu))
        if self.memory is not None:
            object.__setattr__(self, "memory", memory_quantity(self.memory))
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"gpus={self.gpus!r} must be a whole number >= 0")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds={self.timeout_seconds!r} must be > 0 seconds")
        object.__setattr__(self, "extra_args", tuple(self.extra_args))


def find_engine(preferred: str | None = None, *, path: str | None = None) -> str:
    """The container engine to use: ``preferred`` if given, else podman, else docker."""
    for name in (preferred,) if preferred else ENGINES:
        found = shutil.which(name, path=path)
        if found:
            return found
    wanted = preferred or "podman or docker"
    raise ContainerEngineNotFound(
        f"{wanted} is not on PATH; install podman (no daemon needed) or run on a cluster "
        "with deployer='job'"
    )


def build_run_command(
    engine: str, image: str, *, container_name: str, run_id: str, options: LocalOptions
) -> list[str]:
    """The ``podman run`` / ``docker run`` command line (values of env vars not included).

    Env vars are passed as ``-e NAME`` and their values through the engine's own
    environment, so the encoded call never shows up in ``ps``.
    """
    flavour = os.path.basename(engine)
    command = [engine, "run", "--rm", "--quiet", "--name", container_name]
    command += ["--label", f"fnjob/run-id={run_id}"]
    for name in (CALL_ENV_VAR, *options.env):
        command += ["-e", name]
    if options.cpu is not None:
        cores = _quantity_value(str(options.cpu)) or 0.0
        command += ["--cpus", f"{cores:g}"]
    if options.memory is not None:
        command += ["--memory", str(int(_quantity_value(str(options.memory)) or 0))]
    if options.gpus > 0:
        # podman reaches GPUs through CDI specs (nvidia-ctk), docker through its --gpus flag.
        if flavour.startswith("podman"):
            command += ["--device", "nvidia.com/gpu=all"]
        else:
            command += ["--gpus", str(options.gpus)]
    command += list(options.extra_args)
    command.append(image)
    return command


class LocalDeployer:
    """Runs an image with podman or docker and returns what the function returned."""

    def __init__(self, options: LocalOptions | None = None) -> None:
        self.options = options or LocalOptions()

    def run(
        self,
        image: str,
        call: str,
        *,
        function_name: str,
        on_log: LogSink,
        on_status: StatusSink | None = None,
        on_stderr: LogSink | None = None,
    ) -> Any:
        """Run the container, stream its output to ``on_log``, return the function's value.

        The function's stderr lines go to ``on_stderr`` when given (else to ``on_log`` too).

        Raises the function's own exception (rebuilt from the protocol line),
        ``ContainerEngineError`` when the engine cannot run it, ``JobFailed`` when the
        container dies without an outcome, ``JobTimeout`` past ``timeout_seconds``.
        The container is removed on Ctrl-C and on any error.
        """
        from fnjob import protocol

        status = on_status or (lambda _text: None)
        engine = find_engine(self.options.engine)
        run_id = new_run_id()
        container_name = f"fnjob-{run_id}"
        command = build_run_command(
            engine, image, container_name=container_name, run_id=run_id, options=self.options
        )
        engine_env = {
            **os.environ,
            **self.options.engine_env,
            **self.options.env,
            CALL_ENV_VAR: call,
        }
        protocol_lines: list[str] = []
        last_lines: collections.deque[str] = collections.deque(maxlen=LAST_LOG_LINES)
        timed_out = threading.Event()
        status(f"starting {os.path.basename(engine)} container {container_name}")
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=engine_env,
        )
        remove = _Remover(engine, container_name, engine_env)
        timer: threading.Timer | None = None
        if self.options.timeout_seconds is not None:

            def stop_for_timeout() -> None:
                timed_out.set()
                remove()

            timer = threading.Timer(self.options.timeout_seconds, stop_for_timeout)
            timer.daemon = True
            timer.start()
        finished = False
        try:
            for stream, line in _merged_lines(process):
                # The outcome line is only ever on stdout; stderr is read separately so its
                # bytes cannot land inside it.
                if stream == "stdout" and protocol.is_protocol_line(line):
                    protocol_lines.append(line)
                    continue
                last_lines.append(line)
                if stream == "stderr" and on_stderr is not None:
                    on_stderr(line)
                else:
                    on_log(line)
            exit_code = process.wait()
            finished = True
        finally:
            if timer is not None:
                timer.cancel()
            if not finished:
                remove()
                process.kill()
                process.wait()
        status(f"container {container_name} exited with code {exit_code}")
        if timed_out.is_set():
            raise JobTimeout(
                container_name,
                reason="DeadlineExceeded",
                message=f"still running after {self.options.timeout_seconds:g} s; stopped",
                last_logs=tuple(last_lines),
            )
        if protocol_lines:
            return protocol.parse_outcome(protocol_lines).unwrap()
        if exit_code in _ENGINE_FAILURE_CODES:
            raise ContainerEngineError(
                f"{os.path.basename(engine)} could not run {image} (exit code {exit_code})",
                exit_code=exit_code,
                output=tuple(last_lines),
            )
        raise JobFailed(
            container_name,
            reason="Killed" if exit_code == 137 else "Error",
            message=(
                "SIGKILL: out of memory, or stopped from outside"
                if exit_code == 137
                else "the container ended without reporting an outcome"
            ),
            exit_code=exit_code,
            last_logs=tuple(last_lines),
        )


def _merged_lines(process: subprocess.Popen[bytes]) -> Iterator[tuple[str, str]]:
    """("stdout"|"stderr", line) as each line arrives on either pipe, until both close.

    Reader threads only move bytes into a queue; the caller's thread runs the callbacks, so
    Ctrl-C and callback errors surface where the caller expects them.
    """
    lines: queue.Queue[tuple[str, str] | None] = queue.Queue()

    def pump(name: str, pipe: IO[bytes]) -> None:
        try:
            for raw in pipe:
                lines.put((name, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
        finally:
            lines.put(None)

    assert process.stdout is not None and process.stderr is not None
    readers = [
        threading.Thread(target=pump, args=("stdout", process.stdout), daemon=True),
        threading.Thread(target=pump, args=("stderr", process.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    open_pipes = len(readers)
    while open_pipes:
        item = lines.get()
        if item is None:
            open_pipes -= 1
            continue
        yield item


class _Remover:
    """Force-removes the container once (Ctrl-C, errors, timeout), quietly."""

    def __init__(self, engine: str, container_name: str, env: Mapping[str, str]) -> None:
        self._command = [engine, "rm", "--force", container_name]
        if os.path.basename(engine).startswith("podman"):
            # No grace period: the runner is PID 1 and ignores SIGTERM.
            self._command[2:2] = ["--time", "0"]
        self._env = dict(env)
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        subprocess.run(
            self._command,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=60,
        )
