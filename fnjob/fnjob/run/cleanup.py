"""Runs whose caller is gone: find them by label and age, and remove them.

A caller killed outright (``kill -9``, an OOM-killed notebook kernel) runs no ``finally``:
its Job (with its Secret) or its local container stays. Every run therefore carries who
started it, ``CALLER`` = ``host/boot/pid/start``: the host name, the boot, the process id
and the process's start time (so a reused pid is not mistaken for the caller). A run is
left over when

- its caller was on this host and no longer runs (same host, another boot, or no process
  with that pid and start time): removed on the next run and by ``fnjob cleanup``;
- or it is older than ``older_than`` seconds (``fnjob cleanup --older-than``), whoever
  started it.

Kubernetes Jobs and Trainer's TrainJobs (multi-node runs) go with their pods and their Secret
(Foreground deletion); Secrets of fnjob whose Job or TrainJob is gone go too. Local
containers (podman or docker) are removed by force, then the networks of multi-node local
runs. Nothing without fnjob's label (``app.kubernetes.io/managed-by=fnjob``) is ever touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnjob.run.local import ContainerEngineError
from fnjob.run.manifest import CALLER_ANNOTATION, MANAGED_BY_LABEL

__all__ = [
    "Leftover",
    "caller_gone",
    "caller_identity",
    "cluster_leftovers",
    "local_leftovers",
    "remove_cluster_leftovers",
    "remove_local_leftovers",
]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class Leftover:
    """One thing a gone caller left: ``kind`` (job, trainjob, secret, container, network),
    its name, why."""

    kind: str
    name: str
    reason: str


def _boot() -> str:
    try:
        return _BOOT_ID.read_text().strip()[:8]
    except OSError:
        return "?"


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), else "?"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    # The command name (field 2) may hold spaces and parentheses: count after its end.
    return stat.rpartition(")")[2].split()[19]


def caller_identity(pid: int | None = None) -> str:
    """``host/boot/pid/start`` of this process (or of ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{_boot()}/{pid}/{_started(pid)}"


def caller_gone(identity: str | None) -> bool:
    """True when ``identity`` names a process of this host that no longer runs. A caller
    on another host (or an unreadable identity) is never taken for gone."""
    if not identity:
        return False
    host, _, rest = identity.partition("/")
    boot, _, rest = rest.partition("/")
    pid_text, _, started = rest.partition("/")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    if boot != _boot():
        return True
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # runs, as another user
    return started != "?" and _started(pid) != started


def _reason(
    identity: str | None, age: float | None, older_than: float | None, *, finished: bool
) -> str | None:
    if older_than is not None and age is not None and age > older_than:
        return f"started {age / 3600:.1f} h ago (older than {older_than / 3600:g} h)"
    if not finished and caller_gone(identity):
        return f"its caller ({identity}) is gone"
    return None


# -- clusters ----------------------------------------------------------------------------


def _age(created: Any, now: dt.datetime) -> float | None:
    if not isinstance(created, dt.datetime):
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return (now - created).total_seconds()


def _finished(job: Any) -> bool:
    conditions = (job.status and job.status.conditions) or []
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)


def _train_job_finished(train_job: Mapping[str, Any]) -> bool:
    conditions = (train_job.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )


def _timestamp(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    with contextlib.suppress(ValueError):
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return None


def _made_by_a_controller(job: Any) -> bool:
    """A Job some controller made (Trainer's JobSet for a TrainJob): it goes with its owner,
    and carries fnjob's labels only because the TrainJob hands them down."""
    owners = (job.metadata and job.metadata.owner_references) or []
    return any(owner.controller for owner in owners)


# Secrets are owned by the run's Job, or by its TrainJob for a multi-node run on Trainer.
_SECRET_OWNERS = ("Job", "TrainJob")


def cluster_leftovers(cluster: Any, *, older_than: float | None = None) -> list[Leftover]:
    """fnjob's Jobs and TrainJobs (and orphaned Secrets) in ``cluster``'s namespace that
    are left over.

    ``cluster`` is a ``fnjob.run.cluster.Cluster``. Raises ``ClusterError``.
    """
    now = dt.datetime.now(dt.UTC)
    selector = f"{MANAGED_BY_LABEL}=fnjob"
    found: list[Leftover] = []
    jobs = [job for job in cluster.list_jobs(selector) if not _made_by_a_controller(job)]
    for job in jobs:
        annotations = job.metadata.annotations or {}
        why = _reason(
            annotations.get(CALLER_ANNOTATION),
            _age(job.metadata.creation_timestamp, now),
            older_than,
            finished=_finished(job),
        )
        if why:
            found.append(Leftover("job", job.metadata.name, why))
    train_jobs = cluster.list_train_jobs(selector)
    for train_job in train_jobs:
        metadata = train_job.get("metadata") or {}
        why = _reason(
            (metadata.get("annotations") or {}).get(CALLER_ANNOTATION),
            _age(_timestamp(metadata.get("creationTimestamp")), now),
            older_than,
            finished=_train_job_finished(train_job),
        )
        if why:
            found.append(Leftover("trainjob", str(metadata.get("name")), why))
    names = {job.metadata.name for job in jobs}
    names |= {(t.get("metadata") or {}).get("name") for t in train_jobs}
    for secret in cluster.list_secrets(selector):
        owners = [
            o.name for o in secret.metadata.owner_references or [] if o.kind in _SECRET_OWNERS
        ]
        age = _age(secret.metadata.creation_timestamp, now)
        # A Secret is made just after its Job: give the pair a minute before calling it orphaned.
        if owners and not set(owners) & names and (age is None or age > 60):
            found.append(Leftover("secret", secret.metadata.name, "its Job is gone"))
    return found


def remove_cluster_leftovers(cluster: Any, *, older_than: float | None = None) -> list[Leftover]:
    """Delete what ``cluster_leftovers`` finds; returns it. Raises ``ClusterError``."""
    found = cluster_leftovers(cluster, older_than=older_than)
    for leftover in found:
        if leftover.kind == "job":
            cluster.delete_job(leftover.name)
        elif leftover.kind == "trainjob":
            cluster.delete_train_job(leftover.name)
        else:
            cluster.delete_secret(leftover.name)
    return found


# -- local engines -------------------------------------------------------------------------


def _engine(engine: str, args: list[str], env: Mapping[str, str]) -> str:
    completed = subprocess.run(
        [engine, *args],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise ContainerEngineError(
            f"{os.path.basename(engine)} {args[0]} failed (exit code {completed.returncode})",
            exit_code=completed.returncode,
            output=completed.stderr.strip().splitlines()[-5:],
        )
    return completed.stdout


def _listed(engine: str, what: list[str], env: Mapping[str, str]) -> list[dict[str, Any]]:
    """fnjob's containers or networks as the engine lists them (``--format json``)."""
    listed = _engine(
        engine, [*what, "--filter", f"label={MANAGED_BY_LABEL}=fnjob", "--format", "json"], env
    )
    try:
        # podman: one JSON array; docker: one object per line.
        parsed = json.loads(listed or "[]")
        return parsed if isinstance(parsed, list) else [parsed]
    except ValueError:
        return [json.loads(line) for line in listed.splitlines() if line.strip()]


def _labels(entry: Mapping[str, Any]) -> Mapping[str, str]:
    labels = entry.get("Labels", entry.get("labels")) or {}
    if isinstance(labels, str):  # docker: "a=b,c=d"
        return dict(item.partition("=")[::2] for item in labels.split(","))
    return labels if isinstance(labels, Mapping) else {}


def _listed_age(entry: Mapping[str, Any], now: dt.datetime) -> float | None:
    """Seconds since a listed container or network was created: podman gives a container's
    ``Created`` in unix seconds and a network's ``created`` in RFC 3339, docker
    ``CreatedAt`` as "2026-12-03 08:00:00[.fraction] +0000 UTC"."""
    created = entry.get("Created", entry.get("created"))
    if isinstance(created, int | float):
        return now.timestamp() - float(created)
    if isinstance(created, str):
        # Python takes at most microseconds; podman prints nanoseconds.
        text = re.sub(r"(\.\d{6})\d+", r"\1", created).replace("Z", "+00:00")
        with contextlib.suppress(ValueError):
            return (now - dt.datetime.fromisoformat(text)).total_seconds()
    parts = str(entry.get("CreatedAt") or "").split(" ")
    if len(parts) >= 3:
        with contextlib.suppress(ValueError):
            seconds = f"{parts[0]} {parts[1][:8]} {parts[2]}"  # without the fraction
            stamp = dt.datetime.strptime(seconds, "%Y-%m-%d %H:%M:%S %z")
            return (now - stamp).total_seconds()
    return None


def _name(entry: Mapping[str, Any]) -> str:
    names = entry.get("Names", entry.get("Name", entry.get("name")))
    if isinstance(names, list):
        return str(names[0])
    return str(names or entry.get("ID", entry.get("id", "")))


def local_leftovers(
    engine: str, env: Mapping[str, str], *, older_than: float | None = None
) -> list[Leftover]:
    """fnjob's containers on this machine that are left over, then the networks of
    multi-node runs. Raises ``ContainerEngineError``."""
    now = dt.datetime.now(dt.UTC)
    found: list[Leftover] = []
    for kind, what in (("container", ["ps", "--all"]), ("network", ["network", "ls"])):
        for entry in _listed(engine, what, env):
            age = _listed_age(entry, now)
            why = _reason(_labels(entry).get(CALLER_ANNOTATION), age, older_than, finished=False)
            if why:
                found.append(Leftover(kind, _name(entry), why))
    return found


def remove_local_leftovers(
    engine: str, env: Mapping[str, str], *, older_than: float | None = None
) -> list[Leftover]:
    """Force-remove what ``local_leftovers`` finds, containers before the networks they
    are on; returns it."""
    found = local_leftovers(engine, env, older_than=older_than)
    containers = [leftover.name for leftover in found if leftover.kind == "container"]
    networks = [leftover.name for leftover in found if leftover.kind == "network"]
    if containers:
        rm = ["rm", "--force"]
        if os.path.basename(engine).startswith("podman"):
            rm += ["--time", "0"]
        _engine(engine, [*rm, *containers], env)
    if networks:
        _engine(engine, ["network", "rm", *networks], env)
    return found


def in_background(action: Callable[[], list[Leftover]]) -> Callable[[float], list[Leftover]]:
    """Run ``action`` in a daemon thread now; the returned function waits for it (at most
    the given seconds) and gives what it removed. Errors only cost the clean-up."""
    removed: list[Leftover] = []

    def work() -> None:
        with contextlib.suppress(Exception):
            removed.extend(action())

    thread = threading.Thread(target=work, name="fnjob-cleanup", daemon=True)
    thread.start()

    def wait(seconds: float) -> list[Leftover]:
        thread.join(seconds)
        return list(removed)

    return wait
