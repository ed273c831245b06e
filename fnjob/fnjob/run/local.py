"""Run a built image on this machine with podman or docker: iterate without a cluster.

The container gets what a Kubernetes Job gets: the same image, its own entrypoint (no
command override), the user's env, and the run directory (the pickled call and the key that
signs the outcome) mounted read-only at ``/var/run/fnjob`` from a private temporary
directory. It runs with every capability dropped and no privilege escalation. Output is
streamed line by line; the signed outcome line becomes the return value or the remote
exception, as with the Job deployer.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fnjob.errors import FnJobError, JobFailed, JobTimeout
from fnjob.options import (
    RUN_DIR,
    Resources,
    Security,
    Volumes,
    check_env,
    check_pieces,
    frozen_str_mapping,
)
from fnjob.run import interrupts
from fnjob.run.follow import LogSink, StatusSink
from fnjob.run.manifest import CALLER_ANNOTATION, MANAGED_BY_LABEL
from fnjob.run.protocol import CALL_FILE, KEY_FILE, OutcomeReader, new_run_id, new_run_key

ENGINES = ("podman", "docker")
# podman's own deadline (conmon kills the container even when the caller is gone) comes
# this long after the caller's, which reports the timeout first.
ENGINE_DEADLINE_MARGIN = 60
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
    ``env`` goes into the container. ``resources`` become limits, ``volumes.shm_size`` the
    size of ``/dev/shm``, ``security.run_as_user``/``run_as_group`` the container's user.
    PersistentVolumeClaims do not exist here: ``volumes.claims`` is refused.
    """

    engine: str | None = None
    engine_env: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    volumes: Volumes = field(default_factory=Volumes)
    security: Security = field(default_factory=Security)
    timeout_seconds: float | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"engine={self.engine!r} is not supported; use one of {ENGINES}")
        object.__setattr__(self, "engine_env", frozen_str_mapping("engine_env", self.engine_env))
        object.__setattr__(self, "env", check_env(self.env, reserved=frozenset({"FNJOB_RUN_DIR"})))
        check_pieces(self, resources=Resources, volumes=Volumes, security=Security)
        if self.volumes.claims:
            raise ValueError(
                "volumes.claims: PersistentVolumeClaims need the Kubernetes deployer "
                "(deployer='job'); locally, read the data from a path instead"
            )
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
    engine: str,
    image: str,
    *,
    container_name: str,
    run_id: str,
    run_dir: str,
    options: LocalOptions,
    caller: str | None = None,
) -> list[str]:
    """The ``podman run`` / ``docker run`` command line (values of env vars not included).

    Env vars are passed as ``-e NAME`` and their values through the engine's own
    environment, so they never show up in ``ps``. ``run_dir`` (the call and the key) is
    mounted read-only at ``/var/run/fnjob``. The container is labelled as fnjob's, with its
    run id and ``caller`` (who started it, for ``fnjob.run.cleanup``); podman also enforces
    ``timeout_seconds`` itself, so the container ends even when its caller is killed.
    """
    flavour = os.path.basename(engine)
    command = [engine, "run", "--rm", "--quiet", "--name", container_name]
    command += ["--label", f"fnjob/run-id={run_id}", "--label", f"{MANAGED_BY_LABEL}=fnjob"]
    if caller is not None:
        command += ["--label", f"{CALLER_ANNOTATION}={caller}"]
    if flavour.startswith("podman") and options.timeout_seconds is not None:
        deadline = math.ceil(options.timeout_seconds) + ENGINE_DEADLINE_MARGIN
        command += ["--timeout", str(deadline)]
    command += ["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    # Z: on SELinux hosts, label the private directory for this container only.
    command += ["--volume", f"{run_dir}:{RUN_DIR}:ro,Z"]
    for name in options.env:
        command += ["-e", name]
    resources = options.resources
    if resources.cpu_cores is not None:
        command += ["--cpus", f"{resources.cpu_cores:f}".rstrip("0").rstrip(".")]
    if resources.memory_bytes is not None:
        command += ["--memory", str(resources.memory_bytes)]
    if resources.gpus > 0:
        # podman reaches GPUs through CDI specs (nvidia-ctk), docker through its --gpus flag.
        if flavour.startswith("podman"):
            command += ["--device", "nvidia.com/gpu=all"]
        else:
            command += ["--gpus", str(resources.gpus)]
    if options.volumes.shm_bytes is not None:
        command += ["--shm-size", str(options.volumes.shm_bytes)]
    user = options.security.run_as_user
    if user is not None:
        group = options.security.run_as_group
        command += ["--user", str(user) if group is None else f"{user}:{group}"]
    command += list(options.extra_args)
    command.append(image)
    return command


@contextlib.contextmanager
def run_directory(call: bytes, key: bytes) -> Iterator[str]:
    """A private directory holding the run's ``call`` and ``key``, removed afterwards.

    The parent is readable by this user only; the directory the container sees is
    world-readable so a ``run_as_user`` other than ours can read it inside the container.
    """
    with tempfile.TemporaryDirectory(prefix="fnjob-run-") as parent:
        run_dir = Path(parent) / "run"
        run_dir.mkdir(mode=0o755)
        for name, data in ((CALL_FILE, call), (KEY_FILE, key)):
            path = run_dir / name
            path.write_bytes(data)
            path.chmod(0o444)
        run_dir.chmod(0o555)
        try:
            yield str(run_dir)
        finally:
            run_dir.chmod(0o755)


class LocalDeployer:
    """Runs an image with podman or docker and returns what the function returned."""

    def __init__(self, options: LocalOptions | None = None) -> None:
        self.options = options or LocalOptions()

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
        """Run the container, stream its output to ``on_log``, return the function's value.

        The function's stderr lines go to ``on_stderr`` when given (else to ``on_log`` too).
        Meanwhile, fnjob's containers and networks whose caller is gone are removed
        (``fnjob.run.cleanup``).

        Raises the function's own exception (rebuilt from its authenticated outcome),
        ``ResultNotLoadable``, ``ContainerEngineError`` when the engine cannot run it,
        ``JobFailed`` when the container dies without an outcome, ``JobTimeout`` past
        ``timeout_seconds``. The container is removed on Ctrl-C, SIGTERM/SIGHUP and errors.
        """
        from fnjob.run import cleanup

        status = on_status or (lambda _text: None)
        engine = find_engine(self.options.engine)
        run_id, key = new_run_id(), new_run_key()
        container_name = f"fnjob-{run_id}"
        engine_env = {**os.environ, **self.options.engine_env, **self.options.env}
        cleaned = cleanup.in_background(
            lambda: cleanup.remove_local_leftovers(
                engine, {**os.environ, **self.options.engine_env}
            )
        )
        reader = OutcomeReader(key)
        timed_out = threading.Event()
        remove = ContainerRemover(engine, container_name, engine_env)
        try:
            with interrupts.signals_raise(), run_directory(call, key) as run_dir:
                command = build_run_command(
                    engine,
                    image,
                    container_name=container_name,
                    run_id=run_id,
                    run_dir=run_dir,
                    options=self.options,
                    caller=cleanup.caller_identity(),
                )
                status(f"starting {os.path.basename(engine)} container {container_name}")
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=engine_env,
                )
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
                        # The outcome is only ever on stdout; stderr is read separately so its
                        # bytes cannot land inside it.
                        shown = reader.feed(line) if stream == "stdout" else line
                        if stream == "stderr":
                            reader.last_lines.append(line)
                        if shown is None:
                            continue
                        if stream == "stderr" and on_stderr is not None:
                            on_stderr(shown)
                        else:
                            on_log(shown)
                    exit_code = process.wait()
                    finished = True
                finally:
                    if timer is not None:
                        timer.cancel()
                    if not finished:
                        remove()
                        process.kill()
                        process.wait()
        except BaseException:
            # A daemon thread still running at interpreter exit can abort it: let the
            # clean-up finish (briefly) before the error goes up.
            cleaned(2.0)
            raise
        status(f"container {container_name} exited with code {exit_code}")
        for leftover in cleaned(15.0):
            status(f"removed {leftover.kind} {leftover.name}: {leftover.reason}")
        last_lines = tuple(reader.last_lines)
        if timed_out.is_set():
            raise JobTimeout(
                container_name,
                reason="DeadlineExceeded",
                message=f"still running after {self.options.timeout_seconds:g} s; stopped",
                last_logs=last_lines,
            )
        if reader.outcome is not None:
            return reader.outcome.unwrap()
        if exit_code in _ENGINE_FAILURE_CODES:
            raise ContainerEngineError(
                f"{os.path.basename(engine)} could not run {image} (exit code {exit_code})",
                exit_code=exit_code,
                output=last_lines,
            )
        raise died_without_outcome(container_name, exit_code, reader)


def died_without_outcome(container_name: str, exit_code: int, reader: OutcomeReader) -> JobFailed:
    """The error for a container that ended without a signed outcome."""
    message = (
        "SIGKILL: out of memory, or stopped from outside"
        if exit_code == 137
        else "the container ended without reporting an outcome"
    )
    if reader.unsigned_lines:
        message += (
            f" ({reader.unsigned_lines} line(s) of its output looked like an outcome but "
            "were not signed with this run's key)"
        )
    return JobFailed(
        container_name,
        reason="Killed" if exit_code == 137 else "Error",
        message=message,
        exit_code=exit_code,
        last_logs=tuple(reader.last_lines),
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


class ContainerRemover:
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
