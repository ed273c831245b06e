"""The stack's one typed configuration, read once and validated before any resource exists.

``load_stack_config`` reads the running Pulumi program's config; ``load_stack_file`` reads a
``stacks/Pulumi.<stack>.yaml`` file offline. Both feed the same parser, which reports every
problem at once, each naming the key path, the bad value and what is allowed.

Run ``python -m stack.config stacks/Pulumi.dev.yaml`` to check a stack file offline.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from components.gpu.scheduling import (
    DEFAULT_GPU_TAINT,
    GPU_GROUP_LABEL,
    GPU_PRESENT_LABEL,
    TAINT_EFFECTS,
    SchedulingConfigError,
    Taint,
)
from stack.naming import is_dns_label, is_email, is_label_key, is_label_value

PROJECT = "kubeflow-eks"

# Kubernetes versions EKS runs at the end of 2026 (standard and extended support).
SUPPORTED_KUBERNETES_VERSIONS = ("1.32", "1.33", "1.34", "1.35")
DEFAULT_KUBERNETES_VERSION = "1.34"

GPU_AMI_TYPES: Mapping[str, str] = {
    "AL2023_x86_64_NVIDIA": "x86_64",
    "AL2023_ARM_64_NVIDIA": "arm64",
    "BOTTLEROCKET_x86_64_NVIDIA": "x86_64",
    "BOTTLEROCKET_ARM_64_NVIDIA": "arm64",
}
SYSTEM_AMI_TYPES: Mapping[str, str] = {
    "AL2023_x86_64_STANDARD": "x86_64",
    "AL2023_ARM_64_STANDARD": "arm64",
}

# NVIDIA GPU instance families: architecture and GPUs per size. The count feeds the
# cluster-autoscaler's node template, so a group scaled to zero advertises the right capacity.
_ONE_FOUR_EIGHT = {
    "xlarge": 1,
    "2xlarge": 1,
    "4xlarge": 1,
    "8xlarge": 1,
    "16xlarge": 1,
    "12xlarge": 4,
    "24xlarge": 4,
    "48xlarge": 8,
}
GPU_INSTANCE_FAMILIES: Mapping[str, tuple[str, Mapping[str, int]]] = {
    "g4dn": ("x86_64", {**_ONE_FOUR_EIGHT, "12xlarge": 4, "metal": 8}),
    "g5": ("x86_64", _ONE_FOUR_EIGHT),
    "g6": ("x86_64", _ONE_FOUR_EIGHT),
    "g6e": ("x86_64", _ONE_FOUR_EIGHT),
    "gr6": ("x86_64", {"4xlarge": 1, "8xlarge": 1}),
    "g5g": (
        "arm64",
        {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 2, "metal": 2},
    ),
    "p3": ("x86_64", {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}),
    "p3dn": ("x86_64", {"24xlarge": 8}),
    "p4d": ("x86_64", {"24xlarge": 8}),
    "p4de": ("x86_64", {"24xlarge": 8}),
    "p5": ("x86_64", {"4xlarge": 1, "48xlarge": 8}),
    "p5e": ("x86_64", {"48xlarge": 8}),
    "p5en": ("x86_64", {"48xlarge": 8}),
}

CAPACITY_TYPES = ("ON_DEMAND", "SPOT")
NAT_MODES = ("single", "perAz", "none")
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")
REGISTRY_ACCESS_MODES = ("none", "docker-config", "ecr")
KUBEFLOW_PROTOCOLS = ("http", "https")


# Keys that only make sense with AWS; onprem stacks must not carry them.
AWS_ONLY_KEYS = (
    "vpc",
    "endpoint",
    "controlPlaneLogs",
    "secretsEncryption",
    "adminRoleArns",
    "systemNodeGroup",
    "clusterAutoscaler",
    "kubernetesVersion",
)
AWS_ONLY_GPU_GROUP_KEYS = (
    "instanceTypes",
    "amiType",
    "capacityType",
    "minSize",
    "desiredSize",
    "maxSize",
    "diskSizeGb",
)

SECRET_KEYS = ("kubeflowAdminPassword", "registryDockerConfig", "onpremKubeconfig")
TOP_LEVEL_KEYS = (
    "mode",
    "clusterName",
    "tags",
    "gpuNodeGroups",
    "devicePlugin",
    "kubeflow",
    "onprem",
    *AWS_ONLY_KEYS,
    *SECRET_KEYS,
)

_AZ = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_IAM_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_CHART_VERSION = re.compile(r"^\d+\.\d+\.\d+$")

SECRET_PLACEHOLDER = "<secure>"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigProblem:
    """One bad value: where it is, what it was, what would be accepted."""

    path: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        shown = "(missing)" if self.value is _MISSING else _show(self.value)
        return f"{self.path}: got {shown}; {self.allowed}"


class StackConfigError(ValueError):
    """The stack configuration is invalid; ``problems`` lists every bad value."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid stack configuration ({len(self.problems)} problems):\n{lines}")


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING: Any = _Missing()


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- typed config


@dataclass(frozen=True)
class NetworkConfig:
    """A new VPC (``vpc_cidr`` over ``availability_zones``) or an existing one."""

    availability_zones: tuple[str, ...]
    vpc_cidr: str = "10.0.0.0/16"
    nat_gateways: Literal["single", "perAz", "none"] = "single"
    existing_vpc_id: str | None = None
    existing_private_subnet_ids: tuple[str, ...] = ()
    existing_public_subnet_ids: tuple[str, ...] = ()

    @property
    def creates_vpc(self) -> bool:
        return self.existing_vpc_id is None


@dataclass(frozen=True)
class EndpointConfig:
    public_access: bool = True
    public_access_cidrs: tuple[str, ...] = ("0.0.0.0/0",)


@dataclass(frozen=True)
class SystemNodeGroupConfig:
    instance_types: tuple[str, ...] = ("m6i.large",)
    ami_type: str = "AL2023_x86_64_STANDARD"
    min_size: int = 1
    desired_size: int = 2
    max_size: int = 3
    disk_size_gb: int = 50


@dataclass(frozen=True)
class GpuNodeGroupConfig:
    """A GPU node group. In onprem mode only name, labels and taints are meaningful."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    instance_types: tuple[str, ...] = ()
    ami_type: str = "AL2023_x86_64_NVIDIA"
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    min_size: int = 0
    desired_size: int = 0
    max_size: int = 1
    disk_size_gb: int = 100
    gpus_per_node: int = 1

    @property
    def bundles_device_plugin(self) -> bool:
        """Bottlerocket NVIDIA AMIs ship their own device plugin."""
        return self.ami_type.startswith("BOTTLEROCKET")

    @property
    def node_labels(self) -> Mapping[str, str]:
        """Every label the group's nodes carry: ours first, then the user's."""
        return {GPU_PRESENT_LABEL: "true", GPU_GROUP_LABEL: self.name, **self.labels}


@dataclass(frozen=True)
class ClusterAutoscalerConfig:
    enabled: bool = True
    chart_version: str = "9.46.6"


@dataclass(frozen=True)
class DevicePluginConfig:
    enabled: bool = True
    chart_version: str = "0.20.0"
    time_slicing_replicas: int = 0


@dataclass(frozen=True)
class ProfileConfig:
    name: str
    owner: str


@dataclass(frozen=True)
class KubeflowConfig:
    enabled: bool = True
    version: str = "26.03"
    local_path: str | None = None
    components: tuple[str, ...] | None = None  # None: upstream example's set
    protocol: Literal["http", "https"] = "https"
    admin_email: str = ""
    notebook_images: tuple[str, ...] = ()
    profiles: tuple[ProfileConfig, ...] = ()
    registry_access: Literal["none", "docker-config", "ecr"] = "none"

    @property
    def http_mode(self) -> bool:
        return self.protocol == "http"


@dataclass(frozen=True)
class OnpremConfig:
    kubeconfig_path: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class StackSecrets:
    """Secret values as plain text, only ever handed to ``pulumi.Output.secret``."""

    kubeflow_admin_password: str | None = field(default=None, repr=False)
    registry_docker_config: str | None = field(default=None, repr=False)
    onprem_kubeconfig: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StackConfig:
    stack: str
    mode: Literal["eks", "onprem"]
    cluster_name: str
    tags: Mapping[str, str]
    gpu_node_groups: tuple[GpuNodeGroupConfig, ...]
    device_plugin: DevicePluginConfig
    kubeflow: KubeflowConfig
    secrets: StackSecrets
    region: str | None = None
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    network: NetworkConfig | None = None
    endpoint: EndpointConfig = EndpointConfig()
    control_plane_logs: tuple[str, ...] = ()
    secrets_encryption: bool = True
    admin_role_arns: tuple[str, ...] = ()
    system_node_group: SystemNodeGroupConfig | None = None
    cluster_autoscaler: ClusterAutoscalerConfig = ClusterAutoscalerConfig()
    onprem: OnpremConfig | None = None

    @property
    def is_eks(self) -> bool:
        return self.mode == "eks"


# --------------------------------------------------------------------------- parsing

T = TypeVar("T")


class _Reader:
    """Walks raw config values, collecting a problem for each bad one."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []

    def bad(self, path: str, value: Any, allowed: str) -> None:
        self.problems.append(ConfigProblem(path, value, allowed))

    def obj(self, raw: Any, path: str, allowed_keys: Sequence[str]) -> Mapping[str, Any]:
        if raw is _MISSING or raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.bad(path, raw, "expected an object")
            return {}
        for key in raw:
            if key not in allowed_keys:
                self.bad(
                    f"{path}.{key}", raw[key], f"unknown key; allowed: {', '.join(allowed_keys)}"
                )
        return raw

    def get(
        self,
        raw: Mapping[str, Any],
        key: str,
        path: str,
        kind: type[T],
        default: T,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        full = f"{path}.{key}" if path else key
        value = raw.get(key, _MISSING)
        if value is _MISSING or value is None:
            return default
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            self.bad(full, value, "expected an integer")
            return default
        if kind is not int and not isinstance(value, kind):
            self.bad(full, value, f"expected a {kind.__name__}")
            return default
        if check is not None and (message := check(value)) is not None:
            self.bad(full, value, message)
            return default
        return value

    def strings(
        self,
        raw: Mapping[str, Any],
        key: str,
        path: str,
        default: tuple[str, ...],
        check: Callable[[str], str | None] | None = None,
    ) -> tuple[str, ...]:
        full = f"{path}.{key}" if path else key
        value = raw.get(key, _MISSING)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(full, value, "expected a list of strings")
            return default
        good = True
        for i, item in enumerate(value):
            if check is not None and (message := check(item)) is not None:
                self.bad(f"{full}[{i}]", item, message)
                good = False
        return tuple(value) if good else default

    def string_map(self, raw: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        full = f"{path}.{key}" if path else key
        value = raw.get(key, _MISSING)
        if value is _MISSING or value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.bad(full, value, "expected a map of strings to strings")
            return {}
        return dict(value)


def _one_of(options: Sequence[str]) -> Callable[[str], str | None]:
    return lambda v: None if v in options else f"allowed: {', '.join(options)}"


def _dns_name(max_len: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if is_dns_label(value, max_len):
            return None
        return (
            f"must be a DNS label: lowercase letters, digits and '-', starting and ending "
            f"with a letter or digit, at most {max_len} characters"
        )

    return check


def _cidr(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return "must be a CIDR block such as 10.0.0.0/16 (host bits zero)"
    return None


def _pattern(regex: re.Pattern[str], example: str) -> Callable[[str], str | None]:
    return lambda v: None if regex.match(v) else f"must look like {example}"


def _rule(test: Callable[[str], bool], expected: str) -> Callable[[str], str | None]:
    return lambda v: None if test(v) else f"must be {expected}"


def _at_least(low: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def _between(low: int, high: int) -> Callable[[int], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def _time_slicing(value: int) -> str | None:
    if value == 0 or 2 <= value <= 64:
        return None
    return "0 (off) or 2 to 64 pods per GPU"


def gpu_instance_info(instance_type: str) -> tuple[str, int] | None:
    """Architecture and GPUs per node of an NVIDIA GPU instance type, None if not one."""
    family, _, size = instance_type.partition(".")
    info = GPU_INSTANCE_FAMILIES.get(family)
    if info is None or size not in info[1]:
        return None
    return info[0], info[1][size]


def _cpu_architecture(instance_type: str) -> str:
    family = instance_type.partition(".")[0]
    # Graviton families carry a 'g' after the generation digit (m7g, c6gn, r8g, t4g).
    return "arm64" if re.match(r"^[a-z]+\d+g", family) else "x86_64"


def _taints(r: _Reader, raw: Any, path: str) -> tuple[Taint, ...]:
    if raw is _MISSING or raw is None:
        return (DEFAULT_GPU_TAINT,)
    if not isinstance(raw, list):
        r.bad(path, raw, "expected a list of {key, value, effect}")
        return ()
    taints: list[Taint] = []
    for i, item in enumerate(raw):
        p = f"{path}[{i}]"
        obj = r.obj(item, p, ("key", "value", "effect"))
        key = r.get(obj, "key", p, str, "", _rule(is_label_key, "a key such as nvidia.com/gpu"))
        value = r.get(
            obj,
            "value",
            p,
            str,
            "",
            _rule(is_label_value, "up to 63 of [A-Za-z0-9-_.], e.g. 'true'"),
        )
        effect = r.get(obj, "effect", p, str, "NoSchedule", _one_of(TAINT_EFFECTS))
        if not key:
            r.bad(f"{p}.key", obj.get("key", _MISSING), "a taint needs a key")
            continue
        try:
            taints.append(Taint(key, value, effect))
        except SchedulingConfigError as error:
            r.bad(p, item, str(error))
    return tuple(taints)


def _labels(r: _Reader, raw: Mapping[str, Any], path: str) -> dict[str, str]:
    labels = r.string_map(raw, "labels", path)
    for key, value in labels.items():
        if not is_label_key(key):
            r.bad(f"{path}.labels.{key}", key, "label keys must be [prefix/]name, DNS-safe")
        if not is_label_value(value):
            r.bad(f"{path}.labels.{key}", value, "label values: up to 63 of [A-Za-z0-9-_.]")
        if key in (GPU_PRESENT_LABEL, GPU_GROUP_LABEL):
            r.bad(f"{path}.labels.{key}", value, "this label is set by the stack itself")
    return labels


def _scaling(
    r: _Reader, raw: Mapping[str, Any], path: str, defaults: tuple[int, int, int]
) -> tuple[int, int, int]:
    low = r.get(raw, "minSize", path, int, defaults[0], _at_least(0))
    want = r.get(raw, "desiredSize", path, int, max(defaults[1], low), _at_least(0))
    high = r.get(raw, "maxSize", path, int, max(defaults[2], want), _at_least(1))
    if not low <= want <= high:
        r.bad(
            f"{path}.desiredSize",
            {"minSize": low, "desiredSize": want, "maxSize": high},
            "need minSize <= desiredSize <= maxSize",
        )
    return low, want, high


def _gpu_group(r: _Reader, raw: Any, path: str, eks: bool) -> GpuNodeGroupConfig | None:
    allowed = ("name", "labels", "taints", *AWS_ONLY_GPU_GROUP_KEYS)
    obj = r.obj(raw, path, allowed)
    if not obj:
        r.bad(path, raw, "expected an object with at least a name")
        return None
    name = r.get(obj, "name", path, str, "", _dns_name(40))
    if not name:
        r.bad(f"{path}.name", obj.get("name", _MISSING), "every GPU node group needs a name")
    labels = _labels(r, obj, path)
    taints = _taints(r, obj.get("taints", _MISSING), f"{path}.taints")
    if not eks:
        for key in AWS_ONLY_GPU_GROUP_KEYS:
            if key in obj:
                r.bad(f"{path}.{key}", obj[key], "not allowed in onprem mode (AWS only)")
        return GpuNodeGroupConfig(name=name, labels=labels, taints=taints)

    ami_type = r.get(
        obj, "amiType", path, str, "AL2023_x86_64_NVIDIA", _one_of(list(GPU_AMI_TYPES))
    )
    capacity = r.get(obj, "capacityType", path, str, "ON_DEMAND", _one_of(CAPACITY_TYPES))
    low, want, high = _scaling(r, obj, path, (0, 0, 1))
    disk = r.get(obj, "diskSizeGb", path, int, 100, _between(20, 16384))
    types = r.strings(obj, "instanceTypes", path, ())
    if "instanceTypes" not in obj:
        r.bad(f"{path}.instanceTypes", _MISSING, "list one or more NVIDIA GPU instance types")
    gpu_counts: set[int] = set()
    for i, itype in enumerate(types):
        info = gpu_instance_info(itype)
        if info is None:
            families = ", ".join(sorted(GPU_INSTANCE_FAMILIES))
            r.bad(
                f"{path}.instanceTypes[{i}]", itype, f"not an NVIDIA GPU instance type ({families})"
            )
            continue
        arch, gpus = info
        gpu_counts.add(gpus)
        if arch != GPU_AMI_TYPES.get(ami_type, arch):
            r.bad(f"{path}.amiType", ami_type, f"{itype} is {arch}; use an {arch} NVIDIA AMI type")
    if len(gpu_counts) > 1:
        r.bad(
            f"{path}.instanceTypes",
            list(types),
            "all instance types in a group need the same GPU count (autoscaler node template)",
        )
    return GpuNodeGroupConfig(
        name=name,
        labels=labels,
        taints=taints,
        instance_types=types,
        ami_type=ami_type,
        capacity_type=capacity,  # type: ignore[arg-type]
        min_size=low,
        desired_size=want,
        max_size=high,
        disk_size_gb=disk,
        gpus_per_node=min(gpu_counts) if gpu_counts else 1,
    )


def _network(r: _Reader, raw: Any) -> NetworkConfig:
    keys = (
        "cidr",
        "availabilityZones",
        "natGateways",
        "existingVpcId",
        "privateSubnetIds",
        "publicSubnetIds",
    )
    obj = r.obj(raw, "vpc", keys)
    vpc_id = r.get(obj, "existingVpcId", "vpc", str, "", _pattern(_VPC_ID, "vpc-0123456789abcdef0"))
    private = r.strings(obj, "privateSubnetIds", "vpc", (), _pattern(_SUBNET_ID, "subnet-0abc..."))
    public = r.strings(obj, "publicSubnetIds", "vpc", (), _pattern(_SUBNET_ID, "subnet-0abc..."))
    azs = r.strings(obj, "availabilityZones", "vpc", (), _pattern(_AZ, "us-west-2a"))
    cidr = r.get(obj, "cidr", "vpc", str, "10.0.0.0/16", _cidr)
    nat = r.get(obj, "natGateways", "vpc", str, "single", _one_of(NAT_MODES))
    if vpc_id:
        if len(private) < 2:
            r.bad(
                "vpc.privateSubnetIds",
                list(private),
                "an existing VPC needs at least two private subnet ids (two AZs)",
            )
        for key in ("cidr", "availabilityZones", "natGateways"):
            if key in obj:
                r.bad(f"vpc.{key}", obj[key], "only for a new VPC; remove it or existingVpcId")
    else:
        if private or public:
            r.bad(
                "vpc.privateSubnetIds",
                list(private) + list(public),
                "subnet ids need vpc.existingVpcId",
            )
        if len(set(azs)) < 2:
            r.bad("vpc.availabilityZones", list(azs), "EKS needs at least two distinct AZs")
        elif len(set(azs)) != len(azs):
            r.bad("vpc.availabilityZones", list(azs), "AZs must be distinct")
        net = ipaddress.ip_network(cidr) if _cidr(cidr) is None else None
        if net is not None and (net.version != 4 or not 16 <= net.prefixlen <= 20):
            r.bad("vpc.cidr", cidr, "an IPv4 block from /16 to /20, to fit the subnets")
        if nat == "none":
            r.bad("vpc.natGateways", nat, "nodes in private subnets need NAT; use single or perAz")
    return NetworkConfig(
        availability_zones=azs,
        vpc_cidr=cidr,
        nat_gateways=nat,  # type: ignore[arg-type]
        existing_vpc_id=vpc_id or None,
        existing_private_subnet_ids=private,
        existing_public_subnet_ids=public,
    )


def _kubeflow(r: _Reader, raw: Any, secrets_set: set[str]) -> KubeflowConfig:
    keys = (
        "enabled",
        "version",
        "localPath",
        "components",
        "protocol",
        "adminEmail",
        "notebookImages",
        "profiles",
        "registryAccess",
    )
    obj = r.obj(raw, "kubeflow", keys)
    enabled = r.get(obj, "enabled", "kubeflow", bool, True)
    version = r.get(
        obj,
        "version",
        "kubeflow",
        str,
        "26.03",
        _pattern(re.compile(r"^(v?\d+\.\d+(\.\d+)?(-rc\.?\d+)?)$"), "26.03 or v1.11.0"),
    )
    local_path = r.get(obj, "localPath", "kubeflow", str, "") or None
    components = r.strings(obj, "components", "kubeflow", ()) or None
    protocol = r.get(obj, "protocol", "kubeflow", str, "https", _one_of(KUBEFLOW_PROTOCOLS))
    email = r.get(
        obj,
        "adminEmail",
        "kubeflow",
        str,
        "",
        _rule(is_email, "an email address such as admin@example.org"),
    )
    images = r.strings(obj, "notebookImages", "kubeflow", ())
    access = r.get(obj, "registryAccess", "kubeflow", str, "none", _one_of(REGISTRY_ACCESS_MODES))
    profiles: list[ProfileConfig] = []
    raw_profiles = obj.get("profiles", [])
    if not isinstance(raw_profiles, list):
        r.bad("kubeflow.profiles", raw_profiles, "expected a list of {name, owner}")
        raw_profiles = []
    for i, item in enumerate(raw_profiles):
        p = f"kubeflow.profiles[{i}]"
        pobj = r.obj(item, p, ("name", "owner"))
        pname = r.get(pobj, "name", p, str, "", _dns_name(63))
        owner = r.get(
            pobj,
            "owner",
            p,
            str,
            "",
            _rule(is_email, "an email address such as someone@example.org"),
        )
        if not pname or not owner:
            r.bad(p, item, "a profile needs a name and an owner email")
            continue
        profiles.append(ProfileConfig(pname, owner))
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        r.bad("kubeflow.profiles", names, "profile names must be unique")
    if enabled:
        if not email:
            r.bad(
                "kubeflow.adminEmail",
                obj.get("adminEmail", _MISSING),
                "set the Kubeflow admin's login email (upstream's user@example.com is replaced)",
            )
        elif email == "user@example.com":
            r.bad("kubeflow.adminEmail", email, "choose your own; this is upstream's default user")
        if "kubeflowAdminPassword" not in secrets_set:
            r.bad(
                "kubeflowAdminPassword",
                _MISSING,
                "set it: pulumi config set --secret kubeflowAdminPassword <password>",
            )
        if access == "docker-config" and "registryDockerConfig" not in secrets_set:
            r.bad(
                "registryDockerConfig",
                _MISSING,
                "registryAccess docker-config needs: pulumi config set --secret "
                'registryDockerConfig "$(cat ~/.docker/config.json)"',
            )
    return KubeflowConfig(
        enabled=enabled,
        version=version,
        local_path=local_path,
        components=components,
        protocol=protocol,  # type: ignore[arg-type]
        admin_email=email,
        notebook_images=images,
        profiles=tuple(profiles),
        registry_access=access,  # type: ignore[arg-type]
    )


def _check_secrets(r: _Reader, secrets: Mapping[str, str]) -> StackSecrets:
    password = secrets.get("kubeflowAdminPassword")
    if password is not None and password != SECRET_PLACEHOLDER and len(password) < 12:
        r.bad("kubeflowAdminPassword", "(secret)", "use at least 12 characters")
    docker_config = secrets.get("registryDockerConfig")
    if docker_config is not None and docker_config != SECRET_PLACEHOLDER:
        try:
            parsed = json.loads(docker_config)
            if not isinstance(parsed, dict) or not isinstance(parsed.get("auths"), dict):
                raise ValueError
        except ValueError:
            r.bad("registryDockerConfig", "(secret)", "must be a docker config.json with 'auths'")
    return StackSecrets(
        kubeflow_admin_password=password,
        registry_docker_config=docker_config,
        onprem_kubeconfig=secrets.get("onpremKubeconfig"),
    )


def parse_stack_config(
    raw: Mapping[str, Any], *, stack: str, region: str | None, secrets: Mapping[str, str]
) -> StackConfig:
    """Validate raw values (project keys without the ``kubeflow-eks:`` prefix).

    ``secrets`` maps secret keys to their plain text, or to ``SECRET_PLACEHOLDER`` when only
    their presence is known (offline checks). Raises ``StackConfigError`` listing every problem.
    """
    r = _Reader()
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            r.bad(key, raw[key], f"unknown key; allowed: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    secret_values = {k: v for k, v in secrets.items() if k in SECRET_KEYS}
    secrets_set = set(secret_values)
    mode = r.get(raw, "mode", "", str, "eks", _one_of(("eks", "onprem")))
    eks = mode == "eks"
    default_name = f"kubeflow-{stack}"[:100].lower()
    cluster_name = r.get(raw, "clusterName", "", str, default_name, _dns_name(100))
    tags = r.string_map(raw, "tags", "")

    groups: list[GpuNodeGroupConfig] = []
    raw_groups = raw.get("gpuNodeGroups", [])
    if not isinstance(raw_groups, list):
        r.bad("gpuNodeGroups", raw_groups, "expected a list of GPU node groups")
        raw_groups = []
    for i, item in enumerate(raw_groups):
        group = _gpu_group(r, item, f"gpuNodeGroups[{i}]", eks)
        if group is not None:
            groups.append(group)
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        r.bad("gpuNodeGroups", names, "GPU node group names must be unique")

    dp = r.obj(
        raw.get("devicePlugin", _MISSING),
        "devicePlugin",
        ("enabled", "chartVersion", "timeSlicingReplicas"),
    )
    device_plugin = DevicePluginConfig(
        enabled=r.get(dp, "enabled", "devicePlugin", bool, True),
        chart_version=r.get(
            dp,
            "chartVersion",
            "devicePlugin",
            str,
            "0.20.0",
            _pattern(re.compile(r"^0\.20\.\d+$"), "0.20.0 (pinned 0.20.x)"),
        ),
        time_slicing_replicas=r.get(
            dp, "timeSlicingReplicas", "devicePlugin", int, 0, _time_slicing
        ),
    )
    kubeflow = _kubeflow(r, raw.get("kubeflow", _MISSING), secrets_set)
    checked_secrets = _check_secrets(r, secret_values)

    if not eks:
        for key in AWS_ONLY_KEYS:
            if key in raw:
                r.bad(key, raw[key], "not allowed in onprem mode (AWS only)")
        if region:
            r.bad("aws:region", region, "not allowed in onprem mode (no AWS resource is made)")
        if kubeflow.registry_access == "ecr":
            r.bad("kubeflow.registryAccess", "ecr", "ecr needs EKS nodes; use docker-config")
        op = r.obj(raw.get("onprem", _MISSING), "onprem", ("kubeconfigPath", "context"))
        onprem = OnpremConfig(
            kubeconfig_path=r.get(op, "kubeconfigPath", "onprem", str, "") or None,
            context=r.get(op, "context", "onprem", str, "") or None,
        )
        if onprem.kubeconfig_path is None and "onpremKubeconfig" not in secrets_set:
            r.bad(
                "onprem.kubeconfigPath",
                _MISSING,
                "onprem needs onprem.kubeconfigPath or the secret onpremKubeconfig",
            )
        if not groups:
            r.bad(
                "gpuNodeGroups",
                [],
                "describe the GPU servers' labels and taints (at least one entry with a name)",
            )
        if r.problems:
            raise StackConfigError(r.problems)
        return StackConfig(
            stack=stack,
            mode="onprem",
            cluster_name=cluster_name,
            tags=tags,
            gpu_node_groups=tuple(groups),
            device_plugin=device_plugin,
            kubeflow=kubeflow,
            secrets=checked_secrets,
            onprem=onprem,
        )

    if "onprem" in raw:
        r.bad("onprem", raw["onprem"], "only for mode: onprem")
    if "onpremKubeconfig" in secrets_set:
        r.bad("onpremKubeconfig", "(secret)", "only for mode: onprem")
    if not region:
        r.bad("aws:region", region or _MISSING, "set it: pulumi config set aws:region us-west-2")
    elif not _REGION.match(region):
        r.bad("aws:region", region, "must look like us-west-2")
    version = r.get(
        raw,
        "kubernetesVersion",
        "",
        str,
        DEFAULT_KUBERNETES_VERSION,
        _one_of(SUPPORTED_KUBERNETES_VERSIONS),
    )
    network = _network(r, raw.get("vpc", _MISSING))
    if region and network.creates_vpc:
        for i, az in enumerate(network.availability_zones):
            if not az.startswith(region):
                r.bad(f"vpc.availabilityZones[{i}]", az, f"must be an AZ of {region}")
    ep = r.obj(raw.get("endpoint", _MISSING), "endpoint", ("publicAccess", "publicAccessCidrs"))
    endpoint = EndpointConfig(
        public_access=r.get(ep, "publicAccess", "endpoint", bool, True),
        public_access_cidrs=r.strings(ep, "publicAccessCidrs", "endpoint", ("0.0.0.0/0",), _cidr),
    )
    if endpoint.public_access and not endpoint.public_access_cidrs:
        r.bad("endpoint.publicAccessCidrs", [], "list CIDRs allowed to reach the public endpoint")
    logs = r.strings(raw, "controlPlaneLogs", "", (), _one_of(CONTROL_PLANE_LOG_TYPES))
    encryption = r.get(raw, "secretsEncryption", "", bool, True)
    admins = r.strings(
        raw,
        "adminRoleArns",
        "",
        (),
        _pattern(_IAM_ARN, "arn:aws:iam::123456789012:role/platform-admin"),
    )

    sg = r.obj(
        raw.get("systemNodeGroup", _MISSING),
        "systemNodeGroup",
        ("instanceTypes", "amiType", "minSize", "desiredSize", "maxSize", "diskSizeGb"),
    )
    sys_defaults = SystemNodeGroupConfig()
    sys_ami = r.get(
        sg,
        "amiType",
        "systemNodeGroup",
        str,
        sys_defaults.ami_type,
        _one_of(list(SYSTEM_AMI_TYPES)),
    )
    sys_types = r.strings(sg, "instanceTypes", "systemNodeGroup", sys_defaults.instance_types)
    for i, itype in enumerate(sys_types):
        if gpu_instance_info(itype) is not None:
            r.bad(
                f"systemNodeGroup.instanceTypes[{i}]",
                itype,
                "the system group runs on CPU instances; put GPU types in gpuNodeGroups",
            )
        elif _cpu_architecture(itype) != SYSTEM_AMI_TYPES.get(sys_ami, "x86_64"):
            r.bad("systemNodeGroup.amiType", sys_ami, f"{itype} needs a matching architecture")
    low, want, high = _scaling(r, sg, "systemNodeGroup", (1, 2, 3))
    if "minSize" in sg and low < 1:
        r.bad("systemNodeGroup.minSize", low, "the system group needs at least one node")
    system = SystemNodeGroupConfig(
        instance_types=sys_types,
        ami_type=sys_ami,
        min_size=max(low, 1),
        desired_size=want,
        max_size=high,
        disk_size_gb=r.get(sg, "diskSizeGb", "systemNodeGroup", int, 50, _between(20, 16384)),
    )
    ca = r.obj(
        raw.get("clusterAutoscaler", _MISSING), "clusterAutoscaler", ("enabled", "chartVersion")
    )
    autoscaler = ClusterAutoscalerConfig(
        enabled=r.get(ca, "enabled", "clusterAutoscaler", bool, True),
        chart_version=r.get(
            ca,
            "chartVersion",
            "clusterAutoscaler",
            str,
            "9.46.6",
            _pattern(_CHART_VERSION, "9.46.6"),
        ),
    )
    if any(g.min_size == 0 for g in groups) and not autoscaler.enabled:
        r.bad(
            "clusterAutoscaler.enabled",
            False,
            "a GPU group with minSize 0 never scales up without the cluster-autoscaler",
        )

    if r.problems:
        raise StackConfigError(r.problems)
    return StackConfig(
        stack=stack,
        mode="eks",
        region=region,
        cluster_name=cluster_name,
        tags=tags,
        kubernetes_version=version,
        network=network,
        endpoint=endpoint,
        control_plane_logs=logs,
        secrets_encryption=encryption,
        admin_role_arns=admins,
        system_node_group=system,
        gpu_node_groups=tuple(groups),
        cluster_autoscaler=autoscaler,
        device_plugin=device_plugin,
        kubeflow=kubeflow,
        secrets=checked_secrets,
    )


# --------------------------------------------------------------------------- sources


def _decode(value: Any) -> Any:
    """Pulumi hands structured values to the program as JSON text."""
    if isinstance(value, str) and (value[:1] in ("{", "[") or value in ("true", "false")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _split(values: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        yield namespace, key, value


def load_stack_config() -> StackConfig:
    """Read and validate the running Pulumi program's configuration."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    region: str | None = None
    for namespace, key, value in _split(values):
        if namespace == "aws" and key == "region":
            region = str(value)
        elif namespace == PROJECT and key in SECRET_KEYS:
            secrets[key] = str(value)
        elif namespace == PROJECT:
            raw[key] = _decode(value)
    return parse_stack_config(raw, stack=pulumi.get_stack(), region=region, secrets=secrets)


def load_stack_file(path: str | Path, *, require_secrets: bool = True) -> StackConfig:
    """Validate a ``stacks/Pulumi.<stack>.yaml`` file offline (secret values stay opaque).

    With ``require_secrets=False`` secrets not set yet count as set (see ``unset_secrets``),
    so an example stack file checks clean before its secrets are chosen.
    """
    path = Path(path)
    match = re.fullmatch(r"Pulumi\.(.+)\.yaml", path.name)
    if match is None:
        raise StackConfigError(
            [ConfigProblem(str(path), path.name, "name stack files Pulumi.<stack>.yaml")]
        )
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") or {}
    raw: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    region: str | None = None
    problems: list[ConfigProblem] = []
    for namespace, key, value in _split(config):
        is_secure = isinstance(value, Mapping) and set(value) == {"secure"}
        if namespace == "aws" and key == "region":
            region = str(value)
        elif namespace == PROJECT and key in SECRET_KEYS:
            if not is_secure:
                problems.append(
                    ConfigProblem(
                        key, "(plain text)", "must be a secret: pulumi config set --secret"
                    )
                )
            secrets[key] = SECRET_PLACEHOLDER
        elif namespace == PROJECT:
            raw[key] = value
        elif namespace not in ("aws", "pulumi", "kubernetes"):
            problems.append(
                ConfigProblem(
                    f"{namespace}:{key}", value, f"unknown namespace; use {PROJECT}:<key>"
                )
            )
    if not require_secrets:
        for key in unset_secrets(path):
            secrets[key] = SECRET_PLACEHOLDER
    try:
        parsed = parse_stack_config(raw, stack=match.group(1), region=region, secrets=secrets)
    except StackConfigError as error:
        raise StackConfigError([*problems, *error.problems]) from None
    if problems:
        raise StackConfigError(problems)
    return parsed


def unset_secrets(path: str | Path) -> tuple[str, ...]:
    """The secrets a stack file's settings call for that it does not hold yet."""
    config = (yaml.safe_load(Path(path).read_text()) or {}).get("config") or {}
    kubeflow = config.get(f"{PROJECT}:kubeflow") or {}
    needed = []
    if kubeflow.get("enabled", True):
        needed.append("kubeflowAdminPassword")
        if kubeflow.get("registryAccess") == "docker-config":
            needed.append("registryDockerConfig")
    onprem = config.get(f"{PROJECT}:onprem") or {}
    if config.get(f"{PROJECT}:mode") == "onprem" and not onprem.get("kubeconfigPath"):
        needed.append("onpremKubeconfig")
    return tuple(key for key in needed if f"{PROJECT}:{key}" not in config)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stack.config STACK_FILE...``: check stack files offline."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m stack.config stacks/Pulumi.<stack>.yaml ...", file=sys.stderr)
        return 2
    status = 0
    for name in args:
        try:
            cfg = load_stack_file(name, require_secrets=False)
        except StackConfigError as error:
            print(f"{name}: {error}", file=sys.stderr)
            status = 1
        except (OSError, yaml.YAMLError) as error:
            print(f"{name}: cannot read: {error}", file=sys.stderr)
            status = 1
        else:
            groups = ", ".join(g.name for g in cfg.gpu_node_groups) or "none"
            print(f"{name}: ok ({cfg.mode}, cluster {cfg.cluster_name}, GPU groups: {groups})")
            for key in unset_secrets(name):
                print(
                    f"{name}: note: secret {key} is not set yet; before deploying run: "
                    f"pulumi config set --secret {key} ..."
                )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
