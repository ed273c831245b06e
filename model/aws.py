"""The AWS side of an EKS stack: network, API endpoint, system nodes, autoscaler."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, model_validator
from pydantic.alias_generators import to_camel

from model import catalog, versions
from model.base import MISSING, CidrV4, Model, Rules, UniqueStrings, matches

AZ_PATTERN = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$")
SUBNET_PATTERN = re.compile(r"^subnet-[0-9a-f]{8,17}$")
VPC_PATTERN = r"^vpc-[0-9a-f]{8,17}$"
SystemAmiType = Literal["AL2023_x86_64_STANDARD", "AL2023_ARM_64_STANDARD"]
SYSTEM_AMI_TYPES: dict[SystemAmiType, catalog.Architecture] = {
    "AL2023_x86_64_STANDARD": "x86_64",
    "AL2023_ARM_64_STANDARD": "arm64",
}
SYSTEM_NODE_LABEL = "kubeflow-eks.io/node-role"
# The system node group's name (``model.naming.node_group_name``); no GPU group may take it.
SYSTEM_NODE_GROUP = "system"


def _system_ami(instance_types: Any) -> SystemAmiType:
    first = instance_types[0] if instance_types else "m6i.large"
    arch = catalog.cpu_architecture(first)
    return next(name for name, a in SYSTEM_AMI_TYPES.items() if a == arch)


class Vpc(Model):
    """A new VPC (``availabilityZones``) or an existing one (``existingVpcId``)."""

    cidr: CidrV4 = Field(default="10.0.0.0/16", description="new VPC: IPv4 /16 to /20")
    availability_zones: UniqueStrings = Field(
        default=(), description="new VPC: at least two AZs of the region"
    )
    nat_gateways: Literal["single", "perAz"] = Field(
        default="single", description="new VPC: one NAT gateway, or one per AZ"
    )
    endpoints: bool = Field(
        default=True,
        description="new VPC: S3 gateway and ECR interface endpoints, so image pulls skip NAT",
    )
    existing_vpc_id: Annotated[str, matches(VPC_PATTERN, "vpc-0123456789abcdef0")] | None = Field(
        default=None, description="use this VPC instead of creating one"
    )
    private_subnet_ids: UniqueStrings = Field(
        default=(), description="existing VPC: the nodes' subnets"
    )
    public_subnet_ids: UniqueStrings = Field(
        default=(), description="existing VPC: the load balancers' subnets"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Vpc:
        rules = Rules()
        if self.existing_vpc_id is not None:
            self._existing_rules(rules)
        else:
            self._new_rules(rules)
        rules.raise_if_any()
        return self

    def _existing_rules(self, rules: Rules) -> None:
        for key in ("cidr", "availability_zones", "nat_gateways", "endpoints"):
            if key in self.model_fields_set:
                rules.add(to_camel(key), getattr(self, key), "remove it: only for a new VPC")
        if len(self.private_subnet_ids) < 2:
            rules.add(
                "privateSubnetIds",
                list(self.private_subnet_ids) or MISSING,
                "list at least two private subnets in two AZs, e.g. [subnet-0a..., subnet-0b...]",
            )
        for key, ids in (
            ("privateSubnetIds", self.private_subnet_ids),
            ("publicSubnetIds", self.public_subnet_ids),
        ):
            for index, subnet in enumerate(ids):
                if not SUBNET_PATTERN.match(subnet):
                    rules.add(
                        f"{key}[{index}]",
                        subnet,
                        "use a subnet id such as subnet-0123456789abcdef0",
                    )
        overlap = sorted(set(self.private_subnet_ids) & set(self.public_subnet_ids))
        if overlap:
            rules.add("publicSubnetIds", overlap, "a subnet is private or public, not both")

    def _new_rules(self, rules: Rules) -> None:
        for key in ("private_subnet_ids", "public_subnet_ids"):
            if key in self.model_fields_set:
                rules.add(
                    to_camel(key), list(getattr(self, key)), "set existingVpcId too, or remove it"
                )
        zones = self.availability_zones
        if len(zones) < 2:
            rules.add(
                "availabilityZones",
                list(zones) or MISSING,
                "list two or more AZs of the region (EKS needs two), e.g. [us-west-2a, us-west-2b]",
            )
        if len(zones) > 7:
            rules.add("availabilityZones", list(zones), "use at most 7 AZs")
        for index, zone in enumerate(zones):
            if not AZ_PATTERN.match(zone):
                rules.add(f"availabilityZones[{index}]", zone, "use an AZ name such as us-west-2a")
        if not 16 <= ipaddress.ip_network(self.cidr).prefixlen <= 20:
            rules.add("cidr", self.cidr, "use a block from /16 to /20, e.g. 10.0.0.0/16")

    @property
    def creates_vpc(self) -> bool:
        return self.existing_vpc_id is None

    @property
    def zones(self) -> tuple[str, ...]:
        """The node groups' placement units: AZ names (new VPC) or private subnet ids."""
        return self.availability_zones if self.creates_vpc else self.private_subnet_ids

    def zone_suffix(self, zone: str, region: str) -> str:
        """A short, stable name for a placement unit: the AZ letter, or the subnet's position."""
        if self.creates_vpc:
            return zone.removeprefix(region)
        return f"s{self.private_subnet_ids.index(zone) + 1}"


class Endpoint(Model):
    """Who reaches the Kubernetes API: the private endpoint always, the public one if on."""

    public_access: bool = Field(
        default=True, description="public API endpoint on (the private one always is)"
    )
    public_access_cidrs: tuple[CidrV4, ...] = Field(
        default_factory=lambda data: ("0.0.0.0/0",) if data.get("public_access", True) else (),
        description='IPv4 CIDRs allowed to reach the public endpoint (default ["0.0.0.0/0"])',
    )

    @model_validator(mode="after")
    def _consistent(self) -> Endpoint:
        rules = Rules()
        cidrs = self.public_access_cidrs
        if not self.public_access and cidrs:
            rules.add(
                "publicAccessCidrs",
                list(cidrs),
                "remove it, or set publicAccess: true; with the public endpoint off these "
                "CIDRs would be ignored",
            )
        elif self.public_access and not cidrs:
            rules.add("publicAccessCidrs", [], "list at least one CIDR, or set publicAccess: false")
        rules.raise_if_any()
        return self


def ami_release_rule(rules: Rules, ami_type: str, release: str | None) -> None:
    """A node group's ``amiReleaseVersion`` has the form of its AMI type's family."""
    if release is not None:
        problem = versions.ami_release_problem(versions.ami_family(ami_type), release)
        if problem:
            rules.add("amiReleaseVersion", release, problem)


CapacityType = Literal["ON_DEMAND", "SPOT"]


class NodeGroupShape(Protocol):
    """What every managed node group is made of, the system group and each GPU group alike
    (``SystemNodeGroup``, ``model.gpu.EksGpuGroup``): the component creating node groups
    takes this rather than copies of the fields."""

    @property
    def instance_types(self) -> Sequence[str]: ...

    @property
    def ami_type(self) -> str: ...

    @property
    def capacity_type(self) -> CapacityType: ...

    @property
    def min_size(self) -> int: ...

    @property
    def desired_size(self) -> int: ...

    @property
    def max_size(self) -> int: ...

    @property
    def disk_size_gb(self) -> int: ...


class SystemNodeGroup(Model):
    """The on-demand CPU group that runs the platform (Kubeflow, CoreDNS, controllers)."""

    instance_types: UniqueStrings = Field(
        default=("m6i.large",), min_length=1, description="CPU instance types of one architecture"
    )
    ami_type: SystemAmiType = Field(
        default_factory=lambda data: _system_ami(data.get("instance_types")),
        description="default: AL2023 standard for the instances' CPU",
    )
    min_size: int = Field(default=1, ge=1, le=100, description="at least one node")
    max_size: int = Field(default=3, ge=1, le=100, description="most nodes")
    desired_size: int = Field(
        default_factory=lambda data: min(max(data.get("min_size", 1), 2), data.get("max_size", 3)),
        ge=1,
        le=100,
        description="default: 2 within minSize..maxSize",
    )
    disk_size_gb: int = Field(default=50, ge=20, le=16384, description="encrypted gp3 root volume")
    ami_release_version: str | None = Field(
        default=None,
        description="the group's EKS AMI release, e.g. 1.35.6-20260714 (default: "
        "nodeAmiReleases, then the release model/versions.yaml pins)",
    )

    @property
    def capacity_type(self) -> CapacityType:
        """On-demand: the platform's own pods are not to be interrupted by a spot reclaim."""
        return "ON_DEMAND"

    @model_validator(mode="after")
    def _fits(self) -> SystemNodeGroup:
        rules = Rules()
        ami_release_rule(rules, self.ami_type, self.ami_release_version)
        architectures = set()
        for index, name in enumerate(self.instance_types):
            if catalog.split_instance_type(name) is None:
                rules.add(f"instanceTypes[{index}]", name, "use an instance type such as m6i.large")
            elif catalog.gpu_instance_type(name) is not None:
                rules.add(
                    f"instanceTypes[{index}]",
                    name,
                    "the system group runs on CPU instances; put GPU types in gpuNodeGroups",
                )
            else:
                architectures.add(catalog.cpu_architecture(name))
        if len(architectures) > 1:
            rules.add("instanceTypes", list(self.instance_types), "use one CPU architecture")
        elif architectures:
            (arch,) = architectures
            if SYSTEM_AMI_TYPES[self.ami_type] != arch:
                fix = next(name for name, a in SYSTEM_AMI_TYPES.items() if a == arch)
                rules.add(
                    "amiType",
                    self.ami_type,
                    f"{self.instance_types[0]} is {arch}; use amiType {fix}",
                )
        rules.check_sizes(self.min_size, self.desired_size, self.max_size)
        rules.raise_if_any()
        return self


class ClusterAutoscaler(Model):
    """cluster-autoscaler, pinned per Kubernetes version in model/versions.yaml."""

    enabled: bool = Field(
        default=True,
        description="cluster-autoscaler with an IRSA role limited to this cluster's groups",
    )
    chart_version: Annotated[str, matches(r"^\d+\.\d+\.\d+$", "9.54.0")] | None = Field(
        default=None, description="override the pinned chart"
    )
    image_tag: Annotated[str, matches(r"^v\d+\.\d+\.\d+$", "v1.34.2")] | None = Field(
        default=None, description="override the pinned image (the cluster's minor version)"
    )
