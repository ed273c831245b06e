"""The program that runs inside the image: call the shipped function, report its outcome.

This file is copied verbatim into every image as ``/fnjob/runner.py`` and started by the
image's entrypoint with the base image's ``python3``. It therefore imports only the standard
library (cloudpickle is imported lazily from ``/fnjob/vendor`` when a pickle needs it) and
keeps to syntax Python 3.7 accepts.

What it reads:

- ``FNJOB_ENTRY`` (env): what to run, one of ``module:<module>:<qualname>`` (import and
  call), ``pickle:<path>`` (unpickle a function and call it) or ``script:<path>`` (run a file
  as ``__main__``; the outcome is ``None``). Relative paths are relative to ``/fnjob/app``.
- The run directory, ``/var/run/fnjob`` (``FNJOB_RUN_DIR`` overrides it), which the
  deployer fills for this run only (a Kubernetes Secret volume, or a private directory
  mounted read-only by the local deployer): ``call``, a pickle of ``(args, kwargs)``, and
  ``key``, the per-run key that signs the outcome. Both are read before the function runs.

Nothing is installed at start: requirements were installed into ``/fnjob/site`` when the
image was built, and the image's ``PYTHONPATH`` already puts it before the base's packages.

The function's output passes through as-is. Inside a Kubernetes pod its stderr is sent to
stdout (fd 2 becomes fd 1): the pod's log interleaves the two streams record by record, so
stderr written while the outcome is printed could otherwise land inside it (a local engine
keeps the two apart, and so does the local deployer). After the function returns or raises,
the outcome is written to stdout as whole lines, each with ONE ``write()`` of at most
``PIPE_BUF`` bytes (which a pipe never interleaves with other writers' bytes)::

    FNJOB-OUTCOME/3 <index>/<count> <base64 piece> <hex HMAC-SHA256 of the text before it>

The pieces, joined in index order and base64-decoded, are a JSON header line then raw bytes:
``{"ok": true}`` and the pickled value, or ``{"ok": false, "type": ..., "message": ...,
"traceback": ..., "exception": <bool>}`` and the pickled exception (or nothing). The HMAC uses
the run's key, so the caller accepts only pieces this runner wrote: lines the function
prints that look like an outcome are just output. The exit code is 0 on success and 1 when
the function raised.

Inside a Kubernetes pod (``KUBERNETES_SERVICE_HOST`` is set in every container) the kubelet
rotates the log at ``containerLogMaxSize`` (10 MiB by default), so a result larger than
``MAX_POD_RESULT_BYTES`` pickled (``FNJOB_MAX_RESULT_BYTES`` overrides it) is not printed:
the outcome is a ``fnjob.ResultTooLarge`` failure naming its size and the limit.

Distributed runs (``FNJOB_NNODES`` set, one container per node) make this file a launcher,
as ``torchrun`` is: it waits until every node's launcher has joined node 0's (each join
signed with the run's key; ``FNJOB_RENDEZVOUS_TIMEOUT`` bounds the wait, and a timeout names
the ranks that never joined), then starts ``FNJOB_NPROC_PER_NODE`` copies of itself, one per
process, under torch.distributed's conventions (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``NODE_RANK``, ``GROUP_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Node
rank, address and port come from ``FNJOB_NODE_RANK`` / ``FNJOB_MASTER_ADDR`` /
``FNJOB_MASTER_PORT``, else Trainer's ``PET_NODE_RANK`` / ``PET_MASTER_ADDR`` /
``PET_MASTER_PORT``, else (an indexed Job) ``JOB_COMPLETION_INDEX``. Each process's output
is relayed line by line prefixed ``[rank R] ``; processes get a run directory without the key
and hand their outcome to the launcher through a private file, so only the launcher signs.
When a process fails, its siblings are stopped; the node's one outcome carries ``"rank"``
in its header: the failing process's rank, else the node's first rank with that process's
value (the caller keeps only rank 0's).
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import pickle
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any, TextIO

OUTCOME_PREFIX = "FNJOB-OUTCOME/3 "
# One outcome line, newline included, is at most PIPE_BUF bytes (POSIX: at least 512; 4096
# on Linux): written with one write(), a pipe keeps it whole.
FRAME_BYTES = 4096
# Room for the prefix, "<index>/<count> " (up to 99999999/99999999), the signature and "\n".
_FRAME_OVERHEAD = len(OUTCOME_PREFIX) + 18 + 1 + 64 + 1
FRAME_PIECE_CHARS = (FRAME_BYTES - _FRAME_OVERHEAD) // 4 * 4
# The largest pickled result printed inside a Kubernetes pod: its framed outcome (about
# 4/3 of it) stays under the kubelet's default containerLogMaxSize of 10 MiB, so it spans at
# most two log files. Bigger data belongs on a volume or in a bucket.
MAX_POD_RESULT_BYTES = 6 * 1024 * 1024
RESULT_TOO_LARGE = "fnjob.ResultTooLarge"
APP_DIR = "/fnjob/app"
RUN_DIR = "/var/run/fnjob"
CALL_FILE = "call"
KEY_FILE = "key"
# Written instead of a signature when the run directory has no key (an image started by
# hand): such an outcome is shown, never trusted.
UNSIGNED = "unsigned"
# Protocol 4 is understood by every Python >= 3.4, so both sides can read it.
PICKLE_PROTOCOL = 4


class _LastCharTracker:
    """Wraps a text stream and remembers whether its output ended with a newline."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.at_line_start = True

    def write(self, text: str) -> int:
        if text:
            self.at_line_start = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _dumps(value: object) -> bytes:
    try:
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except Exception:
        import cloudpickle  # type: ignore[import-not-found,unused-ignore]

        data: bytes = cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
        return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _app_path(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(APP_DIR, path)


def _run_file(name: str) -> bytes | None:
    path = os.path.join(os.environ.get("FNJOB_RUN_DIR", RUN_DIR), name)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _load_call(data: bytes | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not data:
        return (), {}
    args, kwargs = pickle.loads(data)
    return tuple(args), dict(kwargs)


def outcome_lines(header: dict[str, Any], data: bytes, key: bytes | None) -> Iterator[bytes]:
    """The framed outcome (``header`` and ``data``), each line signed with ``key``."""
    payload = _b64(json.dumps(header).encode("utf-8") + b"\n" + data)
    count = max(1, -(-len(payload) // FRAME_PIECE_CHARS))
    for index in range(count):
        piece = payload[index * FRAME_PIECE_CHARS : (index + 1) * FRAME_PIECE_CHARS]
        text = f"{OUTCOME_PREFIX}{index}/{count} {piece}"
        signature = hmac.digest(key, text.encode("ascii"), "sha256").hex() if key else UNSIGNED
        yield (text + " " + signature + "\n").encode("ascii")


def _max_result_bytes() -> int | None:
    configured = os.environ.get("FNJOB_MAX_RESULT_BYTES")
    if configured:
        return int(configured)
    if _in_kubernetes_pod():
        return MAX_POD_RESULT_BYTES
    return None


def _in_kubernetes_pod() -> bool:
    # The kubelet sets it in every container (with or without service links).
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _run_entry(entry: str, call: bytes | None) -> Any:
    kind, _, rest = entry.partition(":")
    if kind == "module":
        module_name, _, qualname = rest.partition(":")
        import importlib

        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
        args, kwargs = _load_call(call)
        return target(*args, **kwargs)
    if kind == "pickle":
        with open(_app_path(rest), "rb") as handle:
            function = pickle.load(handle)
        args, kwargs = _load_call(call)
        return function(*args, **kwargs)
    if kind == "script":
        runpy.run_path(_app_path(rest), run_name="__main__")
        return None
    raise ValueError(f"FNJOB_ENTRY {entry!r} is not module:..., pickle:... or script:...")


def _failure(error: BaseException) -> tuple[dict[str, Any], bytes]:
    kind = type(error)
    try:
        pickled = _dumps(error)
    except Exception:
        pickled = b""
    header = {
        "ok": False,
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(error),
        "traceback": "".join(traceback.format_exception(kind, error, error.__traceback__)),
        "exception": bool(pickled),
    }
    return header, pickled


def _outcome(value: Any) -> tuple[dict[str, Any], bytes]:
    try:
        data = _dumps(value)
    except Exception as error:
        return _failure(TypeError(f"the function returned a value that cannot be pickled: {error}"))
    limit = _max_result_bytes()
    if limit is not None and len(data) > limit:
        return {
            "ok": False,
            "type": RESULT_TOO_LARGE,
            "message": f"the result takes {len(data)} bytes pickled",
            "traceback": "",
            "exception": False,
            "result_bytes": len(data),
            "limit": limit,
        }, b""
    return {"ok": True}, data


def _write_all(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _write_outcome(header: dict[str, Any], data: bytes, key: bytes | None) -> None:
    outcome_file = os.environ.get(OUTCOME_FILE_ENV)
    if outcome_file:
        # A launched process: the launcher reads this file and signs the node's outcome.
        partial = outcome_file + ".partial"
        with open(partial, "wb") as handle:
            handle.write(json.dumps(header).encode("utf-8") + b"\n" + data)
        os.rename(partial, outcome_file)
        return
    for line in outcome_lines(header, data, key):
        _write_all(1, line)


def main() -> int:
    if os.environ.get(NNODES_ENV):
        return launch()
    if _in_kubernetes_pod():
        # What the function writes to stderr goes to stdout, in order (see the docstring).
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(1, 2)
    tracker = _LastCharTracker(sys.stdout)
    sys.stdout = tracker
    key = None
    try:
        # Read the run's files before any user code runs.
        key = _run_file(KEY_FILE)
        call = _run_file(CALL_FILE)
        header, data = _outcome(_run_entry(os.environ.get("FNJOB_ENTRY", ""), call))
    except BaseException as error:  # report everything, even SystemExit, to the caller
        header, data = _failure(error)
    sys.stderr.flush()
    if not tracker.at_line_start:
        tracker.write("\n")
    tracker.flush()
    sys.stdout = tracker._stream
    _write_outcome(header, data, key)
    return 0 if header["ok"] else 1


# ---------------------------------------------------------------------------------------
# Distributed runs: the launcher (see the module docstring)

NNODES_ENV = "FNJOB_NNODES"
OUTCOME_FILE_ENV = "FNJOB_OUTCOME_FILE"
RENDEZVOUS_TIMEOUT_ENV = "FNJOB_RENDEZVOUS_TIMEOUT"
DEFAULT_RENDEZVOUS_TIMEOUT = 600.0
DEFAULT_MASTER_PORT = 29500
# Node 0's launcher listens for the other nodes' on MASTER_PORT + this (torch's store keeps
# MASTER_PORT itself).
JOIN_PORT_OFFSET = 1
RENDEZVOUS_TIMEOUT_TYPE = "fnjob.RendezvousTimeout"
RANK_DIED_TYPE = "fnjob.RankDied"
# Seconds a process stopped because a sibling failed has to end before SIGKILL.
STOP_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.05


class RendezvousTimeout(Exception):
    """Not every node's launcher joined node 0's within the rendezvous timeout."""


class Topology:
    """Where this node sits in a distributed run, from the environment."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)

        def pick(names: tuple[str, ...], default: str) -> str:
            found = [env[n].strip() for n in names if env.get(n, "").strip()]
            return found[0] if found else default

        self.nnodes = int(pick((NNODES_ENV,), "1"))
        self.nproc = int(pick(("FNJOB_NPROC_PER_NODE", "PET_NPROC_PER_NODE"), "1"))
        self.node_rank = int(
            pick(("FNJOB_NODE_RANK", "PET_NODE_RANK", "JOB_COMPLETION_INDEX"), "0")
        )
        self.master_addr = pick(("FNJOB_MASTER_ADDR", "PET_MASTER_ADDR"), "127.0.0.1")
        self.master_port = int(
            pick(("FNJOB_MASTER_PORT", "PET_MASTER_PORT"), str(DEFAULT_MASTER_PORT))
        )
        self.timeout = float(pick((RENDEZVOUS_TIMEOUT_ENV,), str(DEFAULT_RENDEZVOUS_TIMEOUT)))

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc

    def ranks(self, node: int) -> list[int]:
        return list(range(node * self.nproc, (node + 1) * self.nproc))

    def process_env(self, local_rank: int) -> dict[str, str]:
        """torch.distributed's variables for one process of this node."""
        return {
            "RANK": str(self.node_rank * self.nproc + local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.nproc),
            "NODE_RANK": str(self.node_rank),
            "GROUP_RANK": str(self.node_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def _join_token(key: bytes, node: int) -> str:
    return hmac.digest(key, f"fnjob-join {node}".encode("ascii"), "sha256").hex()


def _read_join(conn: socket.socket, key: bytes, topology: Topology) -> int | None:
    """The node rank a joining launcher proved (signed with the run's key), else None."""
    conn.settimeout(5.0)
    data = b""
    try:
        while b"\n" not in data and len(data) < 256:
            chunk = conn.recv(256)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    parts = data.decode("ascii", "replace").split()
    if len(parts) != 3 or parts[0] != "join" or not parts[1].isdigit():
        return None
    node = int(parts[1])
    if not 0 < node < topology.nnodes:
        return None
    if not hmac.compare_digest(_join_token(key, node), parts[2]):
        return None
    return node


def _missing_text(topology: Topology, joined: set[int]) -> str:
    nodes = [n for n in range(1, topology.nnodes) if n not in joined]
    ranks = [r for n in nodes for r in topology.ranks(n)]
    rank_s = "s" if len(ranks) > 1 else ""
    node_s = "s" if len(nodes) > 1 else ""
    return (
        f"rank{rank_s} {', '.join(map(str, ranks))} (node{node_s} "
        f"{', '.join(map(str, nodes))} of {topology.nnodes}) never joined the rendezvous "
        f"within {topology.timeout:g} s"
    )


def gather_nodes(topology: Topology, key: bytes) -> None:
    """Node 0: wait until every other node's launcher joined; then let them all go."""
    deadline = time.monotonic() + topology.timeout
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    joined: dict[int, socket.socket] = {}
    try:
        server.bind(("", topology.master_port + JOIN_PORT_OFFSET))
        server.listen(topology.nnodes)
        while len(joined) < topology.nnodes - 1:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RendezvousTimeout(_missing_text(topology, set(joined)))
            server.settimeout(remaining)
            try:
                conn, _ = server.accept()
            except socket.timeout:  # noqa: UP041 (Python 3.7 in the image)
                continue
            node = _read_join(conn, key, topology)
            if node is None or node in joined:
                conn.close()
                continue
            joined[node] = conn
        for conn in joined.values():
            conn.sendall(b"go\n")
    finally:
        for conn in joined.values():
            conn.close()
        server.close()


def join_node_zero(topology: Topology, key: bytes) -> None:
    """Any other node: join node 0's launcher and wait until every node has."""
    deadline = time.monotonic() + topology.timeout
    address = (topology.master_addr, topology.master_port + JOIN_PORT_OFFSET)
    message = f"join {topology.node_rank} {_join_token(key, topology.node_rank)}\n".encode()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RendezvousTimeout(
                f"rank 0 (node 0 at {address[0]}:{address[1]}) did not let node "
                f"{topology.node_rank} in within {topology.timeout:g} s"
            )
        try:
            with socket.create_connection(address, timeout=min(remaining, 5.0)) as conn:
                conn.sendall(message)
                conn.settimeout(max(deadline - time.monotonic(), 0.1))
                if conn.recv(16).startswith(b"go"):
                    return
        except OSError:
            pass
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))


class _Process:
    """One launched process: its rank, its output relay and its outcome file."""

    def __init__(self, topology: Topology, local_rank: int, run_dir: str, lock: Any) -> None:
        self.rank = topology.node_rank * topology.nproc + local_rank
        self.outcome_file = os.path.join(run_dir, f"outcome-{self.rank}")
        env = dict(os.environ)
        env.pop(NNODES_ENV, None)
        env.update(topology.process_env(local_rank))
        env.update({"FNJOB_RUN_DIR": run_dir, OUTCOME_FILE_ENV: self.outcome_file})
        self.popen = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.relay = threading.Thread(target=self._relay, args=(lock,), daemon=True)
        self.relay.start()

    def _relay(self, lock: Any) -> None:
        prefix = f"[rank {self.rank}] ".encode("ascii")
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw if raw.endswith(b"\n") else raw + b"\n"
            with lock:
                _write_all(1, prefix + line)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()

    def outcome(self) -> tuple[dict[str, Any], bytes]:
        try:
            with open(self.outcome_file, "rb") as handle:
                header_text, _, data = handle.read().partition(b"\n")
            header = json.loads(header_text.decode("utf-8"))
        except (OSError, ValueError):
            code = self.popen.returncode
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            header, data = (
                {
                    "ok": False,
                    "type": RANK_DIED_TYPE,
                    "message": f"rank {self.rank} {how} without an outcome (out of memory, "
                    "or stopped from outside)",
                    "traceback": "",
                    "exception": False,
                },
                b"",
            )
        header["rank"] = self.rank
        return header, data


def _wait_processes(processes: list[_Process]) -> _Process | None:
    """Wait for every process; the first to fail stops its siblings. Returns it (or None)."""
    failed: _Process | None = None
    stop_at: float | None = None
    while any(p.popen.poll() is None for p in processes):
        if failed is None:
            failed = next((p for p in processes if p.popen.poll() not in (None, 0)), None)
            if failed is not None:
                stop_at = time.monotonic() + STOP_GRACE_SECONDS
                for process in processes:
                    process.stop()
        elif stop_at is not None and time.monotonic() > stop_at:
            for process in processes:
                if process.popen.poll() is None:
                    process.popen.kill()
        time.sleep(_POLL_SECONDS)
    if failed is None:
        failed = next((p for p in processes if p.popen.returncode != 0), None)
    for process in processes:
        process.relay.join(timeout=STOP_GRACE_SECONDS)
    return failed


def _launch_processes(topology: Topology, call: bytes | None) -> tuple[dict[str, Any], bytes]:
    run_dir = tempfile.mkdtemp(prefix="fnjob-ranks-")
    # The processes get the call but not the key: only this launcher signs an outcome.
    with open(os.path.join(run_dir, CALL_FILE), "wb") as handle:
        handle.write(call or b"")
    lock = threading.Lock()
    processes: list[_Process] = []
    try:
        for local_rank in range(topology.nproc):
            processes.append(_Process(topology, local_rank, run_dir, lock))
        failed = _wait_processes(processes)
    finally:
        for process in processes:
            if process.popen.poll() is None:
                process.popen.kill()
    return (failed or processes[0]).outcome()


def _stop_on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)


def launch() -> int:
    """One node of a distributed run (see the module docstring)."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    key = _run_file(KEY_FILE)
    call = _run_file(CALL_FILE)
    topology = Topology()
    try:
        if topology.nnodes > 1 and topology.node_rank == 0:
            gather_nodes(topology, key or b"")
        elif topology.nnodes > 1:
            join_node_zero(topology, key or b"")
        header, data = _launch_processes(topology, call)
    except RendezvousTimeout as error:
        header = {
            "ok": False,
            "type": RENDEZVOUS_TIMEOUT_TYPE,
            "message": str(error),
            "traceback": "",
            "exception": False,
            "rank": topology.node_rank * topology.nproc,
        }
        data = b""
    for line in outcome_lines(header, data, key):
        _write_all(1, line)
    return 0 if header["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
