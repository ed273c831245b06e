"""The pieces a job is described with: small frozen values that validate themselves.

``Job`` (and the deployers' options) is assembled from them:

- ``Build``: how the image is made and pushed (builder, files, requirements, platform,
  the base's Python, registry access);
- ``Resources``: cpu, memory, GPUs (quantities parsed once here, by the field's own
  ``kubernetes.utils.parse_quantity``, after the API server's quantity grammar);
- ``Scheduling``: which GPU group, and node selectors / tolerations;
- ``Security``: identity and the pod's security context;
- ``Volumes``: PersistentVolumeClaims and the size of ``/dev/shm``;
- ``SecretEnv``: environment variables taken from Kubernetes Secrets;
- ``Lifecycle``: retries, clean-up and how long to wait for what.

Each raises ``ValueError`` naming the field and the value when given something wrong;
everything downstream (manifests, command lines) trusts what they hold.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import posixpath
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fnjob.image.auth import Credentials

__all__ = [
    "BUILDERS",
    "Build",
    "ClaimMount",
    "Lifecycle",
    "Resources",
    "Scheduling",
    "SecretEnv",
    "SecretKey",
    "Security",
    "Volumes",
]

GIB = 2**30
MIB = 2**20
# Paths fnjob itself uses inside the container: the code and the per-run Secret.
APP_ROOT = "/fnjob"
RUN_DIR = "/var/run/fnjob"
SHM_PATH = "/dev/shm"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
# Label keys are [prefix/]name: prefix a DNS subdomain, name (and a non-empty value) 63
# characters at most, alphanumeric at both ends.
_LABEL_NAME = re.compile(r"(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# The API server's quantity grammar (apimachinery resource.Quantity): a number, then one
# binary (Ki..Ei) or decimal (m, k..E) suffix or an exponent, never two of them. Python's
# Decimal (and so parse_quantity) also takes "1e3Gi", "NaN" or "1_000", which the API refuses.
_QUANTITY = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[eE][+-]?[0-9]+|[mkMGTPE])?"
)
# The API keeps quantities as 64-bit integers (of bytes for memory).
_MAX_QUANTITY = 2**63 - 1
# An environment variable is one "NAME=value" string for the kernel, which refuses to start
# a process with one longer than MAX_ARG_STRLEN (128 KiB). Plain env lives in the Job object,
# and Kubernetes objects are limited to ~1.5 MiB in etcd: 1 MiB for all of it leaves room.
MAX_ENV_VARIABLE_BYTES = 128 * 1024 - 1
MAX_ENV_TOTAL_BYTES = 1024 * 1024
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_TOLERATION_KEYS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
_MAX_ID = 2**31 - 1
BUILDERS = ("append", "docker")
_PYTHON_VERSION = re.compile(r"3\.\d+")


# ---------------------------------------------------------------------------------------
# Build


def check_platform(value: object) -> None:
    """``platform`` is ``os/arch`` or ``os/arch/variant`` (``linux/amd64``)."""
    if not isinstance(value, str):
        raise ValueError(f"platform={value!r} is not 'os/arch' or 'os/arch/variant'")
    from fnjob.image.layer import parse_platform  # the image code loads only when building

    try:
        parse_platform(value)
    except ValueError:
        raise ValueError(
            f"platform={value!r} is not 'os/arch' or 'os/arch/variant' (e.g. linux/amd64)"
        ) from None


def check_base_python(value: object) -> None:
    """``base_python`` is None (found from the image) or ``MAJOR.MINOR`` like ``"3.11"``."""
    if value is not None and (not isinstance(value, str) or not _PYTHON_VERSION.fullmatch(value)):
        raise ValueError(f"base_python={value!r} is not like '3.11'")


def check_registry_timeout(value: object) -> None:
    """``registry_timeout`` is None (``$FNJOB_REGISTRY_TIMEOUT`` or 30) or seconds > 0."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
    ):
        raise ValueError(f"registry_timeout={value!r} must be a number of seconds > 0")


def _paths(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str | Path) or not isinstance(value, tuple | list):
        raise ValueError(f"{name}={value!r} must be a list, not a single string")
    for item in value:
        if not isinstance(item, str | Path):
            raise ValueError(f"{name}: {item!r} is not a path")
    return tuple(str(item) for item in value)


@dataclass(frozen=True)
class Build:
    """How the image is made and pushed. (What it is built on and where it goes are
    ``Job``'s ``base_image``, ``registry`` and ``image_name``.)

    - ``builder``: ``"append"`` (no daemon: one layer appended in the registry) or
      ``"docker"`` (a Docker-compatible daemon builds a generated Dockerfile);
    - ``extra_files``: files and folders shipped next to the code, under ``/fnjob/app``;
    - ``requirements``: a requirements file, or a list of requirement lines, installed into
      the image when it is built (into ``/fnjob/site``; the job installs nothing at start);
    - ``base_python``: the base's Python (``"3.11"``) when you know it; skips reading the
      base's layers to find it;
    - ``platform``: the one taken from a multi-platform base (``"linux/amd64"``);
    - ``registry_timeout``: seconds one registry operation may wait in total, retries
      included; None: ``$FNJOB_REGISTRY_TIMEOUT``, else 30;
    - ``insecure_registries``: hosts allowed over plain HTTP besides loopback;
    - ``credentials``: per-host registry credentials, before the ECR / auth-file lookup;
    - ``cache_dir``: where the base images' Pythons are cached (``~/.cache/fnjob``).
    """

    builder: str = "append"
    extra_files: tuple[str, ...] = ()
    requirements: tuple[str, ...] | str = ()
    base_python: str | None = None
    platform: str = "linux/amd64"
    registry_timeout: float | None = None
    insecure_registries: tuple[str, ...] = ()
    credentials: Mapping[str, Credentials] | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.builder not in BUILDERS:
            raise ValueError(f"builder={self.builder!r} is not one of {BUILDERS}")
        object.__setattr__(self, "extra_files", _paths("extra_files", self.extra_files))
        if isinstance(self.requirements, Path):
            object.__setattr__(self, "requirements", str(self.requirements))
        elif not isinstance(self.requirements, str):
            if not isinstance(self.requirements, tuple | list) or not all(
                isinstance(line, str) for line in self.requirements
            ):
                raise ValueError(
                    f"requirements={self.requirements!r} must be a requirements file or a "
                    "list of requirement lines"
                )
            object.__setattr__(self, "requirements", tuple(self.requirements))
        check_base_python(self.base_python)
        check_platform(self.platform)
        check_registry_timeout(self.registry_timeout)
        if isinstance(self.insecure_registries, str) or not isinstance(
            self.insecure_registries, tuple | list
        ):
            raise ValueError(
                f"insecure_registries={self.insecure_registries!r} must be a list of hosts"
            )
        object.__setattr__(self, "insecure_registries", tuple(self.insecure_registries))
        if self.credentials is not None:
            from fnjob.image.auth import (
                Credentials,  # with requests, only when credentials are given
            )

            if not isinstance(self.credentials, Mapping) or not all(
                isinstance(host, str) and isinstance(found, Credentials)
                for host, found in self.credentials.items()
            ):
                raise ValueError("credentials must map registry hosts to fnjob.Credentials")
            object.__setattr__(self, "credentials", MappingProxyType(dict(self.credentials)))
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, str | Path):
                raise ValueError(f"cache_dir={self.cache_dir!r} must be a folder path")
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))


# ---------------------------------------------------------------------------------------
# Quantities: parsed once, at the edge


@functools.cache
def _parse_quantity() -> Callable[[str], Decimal]:
    """``kubernetes.utils.parse_quantity``, loaded from its own file when the client is not
    imported yet: importing ``kubernetes.utils`` runs ``kubernetes/__init__``, which imports
    the whole client (most of the CLI's start-up time); the quantity module needs only
    ``decimal``."""
    loaded = sys.modules.get("kubernetes.utils")
    spec = None if loaded else importlib.util.find_spec("kubernetes")
    folders = spec.submodule_search_locations if spec else None
    if folders:
        path = Path(folders[0]) / "utils" / "quantity.py"
        source = importlib.util.spec_from_file_location("fnjob._kubernetes_quantity", path)
        if path.is_file() and source and source.loader:
            module = importlib.util.module_from_spec(source)
            source.loader.exec_module(module)
            parse: Callable[[str], Decimal] = module.parse_quantity
            return parse
    from kubernetes.utils import parse_quantity

    return parse_quantity


def _decimal_quantity(value: object, field_name: str, *, what: str, example: str) -> Decimal:
    """The number behind a quantity string, or a ValueError naming the field."""
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise ValueError(
            f"{field_name}={value!r} is not a Kubernetes quantity; use e.g. {example} or {what}"
        )
    try:
        amount = _parse_quantity()(value)
    except (ValueError, InvalidOperation):
        raise ValueError(
            f"{field_name}={value!r} is not a Kubernetes quantity; use e.g. {example} or {what}"
        ) from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"{field_name}={value!r} must be a positive amount")
    _within_api_range(value, field_name, amount)
    return amount


def _within_api_range(value: object, field_name: str, amount: Decimal) -> None:
    if amount > _MAX_QUANTITY:
        raise ValueError(
            f"{field_name}={value!r} is larger than Kubernetes can hold (2^63-1); "
            "check the unit and the exponent"
        )


def _number(value: object, field_name: str, *, what: str, example: str) -> Decimal | None:
    """A plain number the user typed (int/float/Decimal), or None when it is a string."""
    if isinstance(value, str):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{field_name}={value!r} is not {what}; use {what} or e.g. {example}")
    amount = Decimal(str(value))
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"{field_name}={value!r} must be a positive amount")
    return amount


def cpu_amount(value: str | float | int | Decimal, field_name: str = "cpu") -> tuple[str, Decimal]:
    """``(quantity, cores)`` for a CPU amount: cores as a number (0.5, 2) or a quantity."""
    what, example = "a number of cores (0.5, 2)", '"500m" or "2"'
    cores = _number(value, field_name, what=what, example=example)
    if cores is None:
        text = str(value)
        cores = _decimal_quantity(text, field_name, what=what, example=example)
    else:
        # Kubernetes keeps CPU to the millicore.
        _within_api_range(value, field_name, cores * 1000)
        millicores = math.ceil(cores * 1000)
        text = str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"
    if cores < Decimal("0.001"):
        raise ValueError(f"{field_name}={value!r} is below the smallest CPU amount (1m)")
    return text, cores


def memory_amount(
    value: str | float | int | Decimal, field_name: str = "memory"
) -> tuple[str, int]:
    """``(quantity, bytes)`` for a memory amount: a quantity ("8Gi", "512Mi") or a number
    of GiB (0.5, 8; binary gigabytes, like the ``Gi`` suffix)."""
    what, example = "a number of GiB (0.5, 8)", '"8Gi" or "512Mi"'
    gib = _number(value, field_name, what=what, example=example)
    if gib is None:
        text = str(value)
        amount = _decimal_quantity(text, field_name, what=what, example=example)
        if amount < MIB:
            raise ValueError(
                f"{field_name}={value!r} is less than 1Mi (a bare number in a string is bytes); "
                'write the unit, e.g. "8Gi"'
            )
        return text, math.ceil(amount)
    _within_api_range(value, field_name, gib * GIB)
    # Whole GiB stay GiB; anything else is rounded to the MiB.
    mebibytes = round(gib * 1024)
    text = f"{mebibytes // 1024}Gi" if mebibytes % 1024 == 0 else f"{mebibytes}Mi"
    size = mebibytes * MIB
    if size < MIB:
        raise ValueError(f"{field_name}={value!r} GiB is less than 1Mi")
    return text, size


@dataclass(frozen=True)
class Resources:
    """What the container gets: ``cpu`` in cores or as a quantity (0.5, ``"500m"``),
    ``memory`` as a quantity (``"8Gi"``) or a number of GiB, ``gpus`` a whole number.

    Given amounts are both requests and limits (predictable placement; GPUs must be limits
    anyway). After construction ``cpu``/``memory`` hold the Kubernetes quantity text and
    ``cpu_cores`` / ``memory_bytes`` the numbers.
    """

    cpu: str | float | int | Decimal | None = None
    memory: str | float | int | Decimal | None = None
    gpus: int = 0
    cpu_cores: Decimal | None = field(init=False, default=None, repr=False)
    memory_bytes: int | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if self.cpu is not None:
            text, cores = cpu_amount(self.cpu)
            object.__setattr__(self, "cpu", text)
            object.__setattr__(self, "cpu_cores", cores)
        if self.memory is not None:
            text, size = memory_amount(self.memory)
            object.__setattr__(self, "memory", text)
            object.__setattr__(self, "memory_bytes", size)
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"gpus={self.gpus!r} must be a whole number >= 0")


# ---------------------------------------------------------------------------------------
# Placement


def frozen_str_mapping(name: str, value: object) -> Mapping[str, str]:
    """A read-only copy of a str -> str mapping, or a ValueError naming ``name``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}={value!r} must be a mapping of strings to strings")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValueError(f"{name}[{key!r}]={item!r}: keys and values must be strings")
    return MappingProxyType(dict(value))


def check_labels(name: str, value: object) -> Mapping[str, str]:
    """A read-only copy of Kubernetes labels (or a node selector), keys and values checked
    as the API server does: ``[prefix/]name`` keys, values of 63 characters at most."""
    frozen = frozen_str_mapping(name, value)
    for key, item in frozen.items():
        prefix, slash, label = key.rpartition("/")
        if (slash and not _DNS_SUBDOMAIN.fullmatch(prefix)) or not _LABEL_NAME.fullmatch(label):
            raise ValueError(
                f"{name}: key {key!r} is not a label key ([prefix/]name: name 1-63 letters, "
                "digits, '-', '_', '.', alphanumeric at both ends; prefix a DNS subdomain)"
            )
        if item and not _LABEL_NAME.fullmatch(item):
            raise ValueError(
                f"{name}[{key!r}]={item!r} is not a label value (at most 63 letters, digits, "
                "'-', '_', '.', alphanumeric at both ends; or empty)"
            )
    return frozen


def frozen_tolerations(name: str, value: object) -> tuple[Mapping[str, Any], ...]:
    """Read-only copies of Kubernetes tolerations (``{"key", "operator", "value", "effect"}``)."""
    if isinstance(value, Mapping | str) or not isinstance(value, tuple | list):
        raise ValueError(f"{name}={value!r} must be a list of tolerations (mappings)")
    kept = []
    for index, toleration in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(toleration, Mapping):
            raise ValueError(
                f"{where}={toleration!r} must be a mapping like "
                '{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}'
            )
        unknown = sorted(set(toleration) - _TOLERATION_KEYS)
        if unknown:
            raise ValueError(
                f"{where} has unknown keys {unknown}; allowed: {sorted(_TOLERATION_KEYS)}"
            )
        if toleration.get("operator", "Equal") not in ("Equal", "Exists"):
            raise ValueError(f"{where}: operator {toleration['operator']!r} is not Equal or Exists")
        if toleration.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(
                f"{where}: effect {toleration['effect']!r} is not NoSchedule, "
                "PreferNoSchedule or NoExecute"
            )
        kept.append(MappingProxyType(dict(toleration)))
    return tuple(kept)


@dataclass(frozen=True)
class Scheduling:
    """Where the pod may run.

    GPU pods (``Resources(gpus=N)``) go to a GPU group: ``gpu_group`` names one from the
    cluster's groups file (``$FNJOB_GPU_GROUPS``, see ``fnjob.run.gpugroups``; without a name,
    its default group). ``gpu_tolerations`` / ``gpu_node_selector`` replace the group's (or,
    without a groups file, the defaults: tolerate ``nvidia.com/gpu``, select
    ``nvidia.com/gpu.present=true``). ``node_selector`` / ``tolerations`` apply to every pod.
    """

    gpu_group: str | None = None
    gpu_tolerations: tuple[Mapping[str, Any], ...] | None = None
    gpu_node_selector: Mapping[str, str] | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.gpu_group is not None and (
            not isinstance(self.gpu_group, str) or not self.gpu_group.strip()
        ):
            raise ValueError(f"gpu_group={self.gpu_group!r} must name a GPU group")
        if self.gpu_tolerations is not None:
            tolerations = frozen_tolerations("gpu_tolerations", self.gpu_tolerations)
            object.__setattr__(self, "gpu_tolerations", tolerations)
        if self.gpu_node_selector is not None:
            selector = check_labels("gpu_node_selector", self.gpu_node_selector)
            object.__setattr__(self, "gpu_node_selector", selector)
        object.__setattr__(self, "node_selector", check_labels("node_selector", self.node_selector))
        object.__setattr__(self, "tolerations", frozen_tolerations("tolerations", self.tolerations))


# ---------------------------------------------------------------------------------------
# Identity and security


def _names(field_name: str, value: object, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise ValueError(f"{field_name}={value!r} must be a list of {what} names, not one string")
    for name in value:
        if not isinstance(name, str) or not pattern.fullmatch(name):
            raise ValueError(f"{field_name}: {name!r} is not a valid {what} name")
    return tuple(value)


def _optional_id(field_name: str, value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID
    ):
        raise ValueError(f"{field_name}={value!r} must be a numeric id between 0 and {_MAX_ID}")


@dataclass(frozen=True)
class Security:
    """Who the pod runs as, and what it may do.

    - ``service_account``: the pod's ServiceAccount (Kubeflow profiles: ``default-editor``);
      ``None`` uses the namespace's ``default``;
    - ``service_account_token``: mount the account's API token into the pod (off: the
      function cannot act on the cluster with the account's rights unless asked);
    - ``run_as_user`` / ``run_as_group`` / ``fs_group``: numeric ids, for base images that
      need them (a non-root ``run_as_user`` also sets ``runAsNonRoot``, which Pod Security
      ``restricted`` requires);
    - ``image_pull_secrets``: Secrets the node uses to pull the image.

    Always set: no privilege escalation, RuntimeDefault seccomp, every capability dropped.
    """

    service_account: str | None = "default-editor"
    service_account_token: bool = False
    run_as_user: int | None = None
    run_as_group: int | None = None
    fs_group: int | None = None
    image_pull_secrets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.service_account is not None and (
            not isinstance(self.service_account, str)
            or not _DNS_SUBDOMAIN.fullmatch(self.service_account)
        ):
            raise ValueError(f"service_account={self.service_account!r} is not a valid name")
        if not isinstance(self.service_account_token, bool):
            raise ValueError(
                f"service_account_token={self.service_account_token!r} must be True or False"
            )
        for name in ("run_as_user", "run_as_group", "fs_group"):
            _optional_id(name, getattr(self, name))
        object.__setattr__(
            self,
            "image_pull_secrets",
            _names("image_pull_secrets", self.image_pull_secrets, _DNS_SUBDOMAIN, "Secret"),
        )


# ---------------------------------------------------------------------------------------
# Volumes


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class ClaimMount:
    """A PersistentVolumeClaim mounted into the pod, e.g. the notebook's workspace."""

    claim: str
    mount_path: str
    read_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.claim, str) or not _DNS_SUBDOMAIN.fullmatch(self.claim):
            raise ValueError(f"claim={self.claim!r} is not a PersistentVolumeClaim name")
        path = self.mount_path
        if (
            not isinstance(path, str)
            or not path.startswith("/")
            or posixpath.normpath(path) != path
            or ":" in path
        ):
            raise ValueError(
                f"mount_path={path!r} for claim {self.claim!r} must be an absolute, "
                "normalised path without ':' (e.g. /home/jovyan/data)"
            )
        for root in (APP_ROOT, RUN_DIR):
            if _under(path, root) or (root == APP_ROOT and _under(root, path)):
                raise ValueError(
                    f"mount_path={path!r} for claim {self.claim!r} would hide {root}, "
                    "which fnjob uses; mount it elsewhere"
                )
        if not isinstance(self.read_only, bool):
            raise ValueError(f"read_only={self.read_only!r} must be True or False")

    @classmethod
    def parse(cls, spec: str) -> ClaimMount:
        """``CLAIM:/mount/path`` or ``CLAIM:/mount/path:ro`` (the CLI's ``--volume``)."""
        claim, sep, rest = spec.partition(":")
        path, _, mode = rest.partition(":")
        if not sep or not path or mode not in ("", "ro", "rw"):
            raise ValueError(
                f"volume {spec!r} must look like CLAIM:/mount/path or CLAIM:/mount/path:ro"
            )
        return cls(claim=claim, mount_path=path, read_only=mode == "ro")


@dataclass(frozen=True)
class Volumes:
    """Storage for the pod: ``claims`` (PersistentVolumeClaims) and ``shm_size``, the size of
    a memory-backed ``/dev/shm`` (PyTorch DataLoader workers share batches through it; the
    container runtime's default is 64 MiB). Its pages count against the memory limit."""

    claims: tuple[ClaimMount, ...] = ()
    shm_size: str | float | int | None = None
    shm_bytes: int | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.claims, ClaimMount | str) or not isinstance(self.claims, tuple | list):
            raise ValueError(f"claims={self.claims!r} must be a list of ClaimMount")
        for claim in self.claims:
            if not isinstance(claim, ClaimMount):
                raise ValueError(f"claims: {claim!r} is not a ClaimMount (or use ClaimMount.parse)")
        object.__setattr__(self, "claims", tuple(self.claims))
        paths = [c.mount_path for c in self.claims]
        for index, path in enumerate(paths):
            for other in paths[:index]:
                if _under(path, other) or _under(other, path):
                    raise ValueError(f"claims: mount paths {other!r} and {path!r} overlap")
        if self.shm_size is not None:
            text, size = memory_amount(self.shm_size, "shm_size")
            object.__setattr__(self, "shm_size", text)
            object.__setattr__(self, "shm_bytes", size)
            for path in paths:
                if _under(path, SHM_PATH) or _under(SHM_PATH, path):
                    raise ValueError(f"claims: mount path {path!r} overlaps {SHM_PATH} (shm_size)")


# ---------------------------------------------------------------------------------------
# Environment from Secrets


@dataclass(frozen=True)
class SecretKey:
    """One key of a Kubernetes Secret (an env var's ``valueFrom.secretKeyRef``)."""

    secret: str
    key: str

    def __post_init__(self) -> None:
        if not isinstance(self.secret, str) or not _DNS_SUBDOMAIN.fullmatch(self.secret):
            raise ValueError(f"secret={self.secret!r} is not a valid Secret name")
        if not isinstance(self.key, str) or not _SECRET_KEY.fullmatch(self.key):
            raise ValueError(f"key={self.key!r} is not a valid Secret key")


@dataclass(frozen=True)
class SecretEnv:
    """Environment variables read from Secrets by the kubelet, so their values never appear
    in the Job: every key of the ``secrets`` (``envFrom``), and single ``keys``
    (``{"WANDB_API_KEY": SecretKey("wandb", "api-key")}``)."""

    secrets: tuple[str, ...] = ()
    keys: Mapping[str, SecretKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "secrets", _names("secrets", self.secrets, _DNS_SUBDOMAIN, "Secret")
        )
        if not isinstance(self.keys, Mapping):
            raise ValueError(f"keys={self.keys!r} must map variable names to SecretKey")
        for name, ref in self.keys.items():
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise ValueError(f"keys: {name!r} is not a valid environment variable name")
            if not isinstance(ref, SecretKey):
                raise ValueError(f"keys[{name!r}]={ref!r} must be a SecretKey(secret, key)")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __bool__(self) -> bool:
        return bool(self.secrets or self.keys)


def check_env(env: object, *, reserved: frozenset[str] = frozenset()) -> Mapping[str, str]:
    """A read-only copy of plain environment variables: names checked, values free of NUL
    bytes, each variable and the sum within what a process (and a Job object) can carry."""
    frozen = frozen_str_mapping("env", env)
    total = 0
    for name, value in frozen.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"env: {name!r} is not a valid environment variable name")
        if name in reserved:
            raise ValueError(f"env may not set {name}: fnjob uses it")
        if "\0" in value:
            raise ValueError(
                f"env[{name!r}] contains a NUL byte, which no environment variable can hold"
            )
        size = len(name.encode()) + 1 + len(value.encode("utf-8", "surrogateescape"))
        if size > MAX_ENV_VARIABLE_BYTES:
            raise ValueError(
                f"env[{name!r}] is {size:,} bytes; a variable can be at most "
                f"{MAX_ENV_VARIABLE_BYTES:,} (the kernel refuses longer ones): ship data as a "
                "file (extra_files) or read it from a volume"
            )
        total += size
    if total > MAX_ENV_TOTAL_BYTES:
        raise ValueError(
            f"env adds up to {total:,} bytes; at most {MAX_ENV_TOTAL_BYTES:,} fit in a Job "
            "(Kubernetes objects are limited to about 1.5 MiB): ship data as a file "
            "(extra_files) or read it from a volume"
        )
    return frozen


# ---------------------------------------------------------------------------------------
# Lifecycle


def _positive_seconds(name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name}={value!r} must be a number of seconds > 0")


@dataclass(frozen=True)
class Lifecycle:
    """Retries, clean-up and how long to wait.

    - ``backoff_limit``: retries of a failed pod (0: the function runs once);
    - ``ttl_seconds_after_finished``: Kubernetes deletes a finished Job (kept ones, or ones
      whose caller vanished) after this long;
    - ``pod_creation_timeout``: no pod after this long (service account missing, quota,
      Pod Security) raises ``PodNotCreated`` with the Job's events; None waits forever;
    - ``unschedulable_timeout``: a pod no node can take for this long raises ``JobFailed``
      (GPU nodes scaling up from zero take minutes); None waits until ``timeout``;
    - ``poll_interval``: seconds between status reads;
    - ``log_stall_timeout``: a log stream that sends nothing for this long is reconnected
      from where it was (a quiet function costs one reconnect per period); None never;
    - ``istio_sidecar``: let Istio inject its sidecar (off: it never exits, so the Job would
      never complete);
    - ``rendezvous_timeout``: with ``nodes > 1``, seconds every node has to join node 0 once
      started; past it the run fails naming the ranks that never joined.
    """

    backoff_limit: int = 0
    ttl_seconds_after_finished: int | None = 3600
    pod_creation_timeout: float | None = 120.0
    unschedulable_timeout: float | None = 600.0
    poll_interval: float = 1.0
    log_stall_timeout: float | None = 120.0
    istio_sidecar: bool = False
    rendezvous_timeout: float = 600.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.backoff_limit, bool)
            or not isinstance(self.backoff_limit, int)
            or self.backoff_limit < 0
        ):
            raise ValueError(f"backoff_limit={self.backoff_limit!r} must be a whole number >= 0")
        ttl = self.ttl_seconds_after_finished
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0):
            raise ValueError(
                f"ttl_seconds_after_finished={ttl!r} must be a whole number of seconds >= 0"
            )
        _positive_seconds("pod_creation_timeout", self.pod_creation_timeout)
        _positive_seconds("unschedulable_timeout", self.unschedulable_timeout)
        _positive_seconds("poll_interval", self.poll_interval, optional=False)
        _positive_seconds("log_stall_timeout", self.log_stall_timeout)
        _positive_seconds("rendezvous_timeout", self.rendezvous_timeout, optional=False)


def check_pieces(owner: object, **kinds: type) -> None:
    """Each named attribute of ``owner`` is an instance of its piece (a clear error if not)."""
    for name, kind in kinds.items():
        value = getattr(owner, name)
        if not isinstance(value, kind):
            raise ValueError(f"{name}={value!r} must be a fnjob.{kind.__name__}(...)")


# A run nobody bounded could hold a GPU for ever once its caller is gone (kill -9, a
# notebook's kernel killed): Job(timeout=None) gets this deadline. A stack sets its own
# through the notebook's environment (PodDefault env).
DEFAULT_TIMEOUT = 24 * 3600
DEFAULT_TIMEOUT_ENV = "FNJOB_DEFAULT_TIMEOUT"


def default_timeout(environ: Mapping[str, str] | None = None) -> int | None:
    """The deadline of a run that gives no ``timeout``: ``$FNJOB_DEFAULT_TIMEOUT`` (whole
    seconds, or ``none`` for no deadline), else ``DEFAULT_TIMEOUT`` (24 h)."""
    text = (os.environ if environ is None else environ).get(DEFAULT_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    if text.lower() == "none":
        return None
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(
            f"${DEFAULT_TIMEOUT_ENV}={text!r} must be whole seconds > 0, or 'none' for no deadline"
        )
    return int(text)


def check_timeout(value: object, name: str = "timeout") -> None:
    """``timeout`` is whole seconds > 0 (it becomes ``activeDeadlineSeconds``) or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name}={value!r} must be a whole number of seconds > 0")


def check_namespace(value: object) -> None:
    if value is not None and (not isinstance(value, str) or not _DNS_LABEL.fullmatch(value)):
        raise ValueError(
            f"namespace={value!r} is not a valid namespace name (lowercase letters, digits and '-')"
        )
