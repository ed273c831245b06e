"""The VPC the cluster lives in: new (public + private subnets per AZ, NAT) or existing."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from model import Vpc


@dataclass(frozen=True)
class SubnetPlan:
    availability_zone: str
    cidr: str
    public: bool


def plan_subnets(vpc_cidr: str, availability_zones: Sequence[str]) -> tuple[SubnetPlan, ...]:
    """Carve the VPC into one small public and one large private subnet per AZ.

    The VPC is split in eight; each AZ's private subnet gets one eighth (pods take one VPC
    address each with the VPC CNI), and the last eighth is cut further into public subnets,
    which only hold load balancers and NAT gateways.
    """
    if len(availability_zones) > 7:
        raise ValueError(
            f"at most 7 availability zones fit this layout, got {len(availability_zones)}"
        )
    network = ipaddress.IPv4Network(vpc_cidr)
    eighths: list[ipaddress.IPv4Network] = list(network.subnets(prefixlen_diff=3))
    public_blocks = list(eighths[-1].subnets(prefixlen_diff=3))
    plans = [
        SubnetPlan(az, str(eighths[i]), public=False) for i, az in enumerate(availability_zones)
    ]
    plans += [
        SubnetPlan(az, str(public_blocks[i]), public=True)
        for i, az in enumerate(availability_zones)
    ]
    return tuple(plans)


@dataclass(frozen=True)
class NetworkArgs:
    config: Vpc
    cluster_name: str
    region: str
    tags: Mapping[str, str]


# Interface endpoints that keep image pulls off NAT: ECR's API and its registry (the layers
# themselves come from S3, through the gateway endpoint).
ECR_ENDPOINT_SERVICES = ("ecr.api", "ecr.dkr")


class Network(pulumi.ComponentResource):
    """A VPC whose private subnets hold the nodes; public subnets hold NAT and load balancers."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_ids: pulumi.Output[list[str]]
    # Placement unit (an AZ of a new VPC, or an existing private subnet) -> its subnet id.
    private_subnet_by_zone: dict[str, pulumi.Output[str]]
    vpc_cidr: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kubeflow-eks:network:Network", name, None, opts)
        cfg = args.config
        if not cfg.creates_vpc:
            self.vpc_id = pulumi.Output.from_input(cfg.existing_vpc_id or "")
            self.private_subnet_ids = pulumi.Output.from_input(list(cfg.private_subnet_ids))
            self.public_subnet_ids = pulumi.Output.from_input(list(cfg.public_subnet_ids))
            self.private_subnet_by_zone = {
                subnet: pulumi.Output.from_input(subnet) for subnet in cfg.private_subnet_ids
            }
            self.vpc_cidr = aws.ec2.get_vpc_output(
                id=cfg.existing_vpc_id, opts=pulumi.InvokeOutputOptions(parent=self)
            ).cidr_block
            self.register_outputs({"vpc_id": self.vpc_id})
            return

        child = pulumi.ResourceOptions(parent=self)
        shared_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}
        tags = {**args.tags, **shared_tag}
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cfg.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**tags, "Name": f"{args.cluster_name}"},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={**args.tags, "Name": args.cluster_name}, opts=child
        )
        public_routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags={**args.tags, "Name": f"{args.cluster_name}-public"},
            opts=child,
        )

        public: dict[str, aws.ec2.Subnet] = {}
        private: dict[str, aws.ec2.Subnet] = {}
        for plan in plan_subnets(cfg.cidr, cfg.availability_zones):
            kind = "public" if plan.public else "private"
            role = "kubernetes.io/role/elb" if plan.public else "kubernetes.io/role/internal-elb"
            subnet = aws.ec2.Subnet(
                f"{name}-{kind}-{plan.availability_zone}",
                vpc_id=vpc.id,
                cidr_block=plan.cidr,
                availability_zone=plan.availability_zone,
                map_public_ip_on_launch=False,
                tags={
                    **tags,
                    role: "1",
                    "Name": f"{args.cluster_name}-{kind}-{plan.availability_zone}",
                },
                opts=child,
            )
            (public if plan.public else private)[plan.availability_zone] = subnet
            if plan.public:
                aws.ec2.RouteTableAssociation(
                    f"{name}-public-{plan.availability_zone}",
                    subnet_id=subnet.id,
                    route_table_id=public_routes.id,
                    opts=child,
                )

        nat_zones = (
            cfg.availability_zones if cfg.nat_gateways == "perAz" else cfg.availability_zones[:1]
        )
        nat_by_zone: dict[str, aws.ec2.NatGateway] = {}
        for zone in nat_zones:
            address = aws.ec2.Eip(
                f"{name}-nat-{zone}",
                domain="vpc",
                tags={**args.tags, "Name": f"{args.cluster_name}-nat-{zone}"},
                opts=child,
            )
            nat_by_zone[zone] = aws.ec2.NatGateway(
                f"{name}-nat-{zone}",
                subnet_id=public[zone].id,
                allocation_id=address.id,
                tags={**args.tags, "Name": f"{args.cluster_name}-{zone}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
            )
        private_routes: list[aws.ec2.RouteTable] = []
        for zone, subnet in private.items():
            nat = nat_by_zone.get(zone, nat_by_zone[nat_zones[0]])
            routes = aws.ec2.RouteTable(
                f"{name}-private-{zone}",
                vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={**args.tags, "Name": f"{args.cluster_name}-private-{zone}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{zone}", subnet_id=subnet.id, route_table_id=routes.id, opts=child
            )
            private_routes.append(routes)
        if cfg.endpoints:
            self._endpoints(name, args, vpc, list(private.values()), private_routes, child)

        self.vpc_id = vpc.id
        self.vpc_cidr = vpc.cidr_block
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private.values()])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public.values()])
        self.private_subnet_by_zone = {zone: subnet.id for zone, subnet in private.items()}
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "private_subnet_ids": self.private_subnet_ids,
                "public_subnet_ids": self.public_subnet_ids,
            }
        )

    @staticmethod
    def _endpoints(
        name: str,
        args: NetworkArgs,
        vpc: aws.ec2.Vpc,
        subnets: list[aws.ec2.Subnet],
        route_tables: list[aws.ec2.RouteTable],
        child: pulumi.ResourceOptions,
    ) -> None:
        """S3 (gateway, free) and ECR (interface) endpoints: multi-GB CUDA image pulls stay
        inside the VPC instead of paying NAT processing per GB."""
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[table.id for table in route_tables],
            tags={**args.tags, "Name": f"{args.cluster_name}-s3"},
            opts=child,
        )
        https_from_vpc = aws.ec2.SecurityGroup(
            f"{name}-endpoints",
            vpc_id=vpc.id,
            description=f"HTTPS from {args.cluster_name}'s VPC to its interface endpoints",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=443, to_port=443, cidr_blocks=[vpc.cidr_block]
                )
            ],
            tags={**args.tags, "Name": f"{args.cluster_name}-endpoints"},
            opts=child,
        )
        for service in ECR_ENDPOINT_SERVICES:
            aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}",
                vpc_id=vpc.id,
                service_name=f"com.amazonaws.{args.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[subnet.id for subnet in subnets],
                security_group_ids=[https_from_vpc.id],
                tags={**args.tags, "Name": f"{args.cluster_name}-{service}"},
                opts=child,
            )
