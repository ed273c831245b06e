"""Kubeflow by name over HTTPS on EKS: an ALB with an ACM certificate in front of Istio.

Why an ALB, TLS at the load balancer: ACM certificates renew themselves and cannot be
exported, so TLS ends where ACM can attach them (ALB or NLB); the ALB redirects HTTP to HTTPS,
filters source CIDRs with its security group, and tells the gateway the original scheme
(``X-Forwarded-Proto``), which oauth2-proxy and the web apps need for secure cookies and
redirects. An NLB passes TCP: it can neither redirect nor set that header. From the ALB to
the Istio gateway pods the traffic stays inside the VPC.

Pulumi owns the ALB, its listeners and target group (so ``pulumi destroy`` removes them, and
their inputs are reviewable in a preview); the AWS Load Balancer Controller only keeps the
target group's members in step with the gateway pods, through a ``TargetGroupBinding``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws.iam import (
    AccountArns,
    PodIdentityCluster,
    pod_identity_association,
    pod_identity_trust,
    workload_role,
)
from model import Kubeflow

CONTROLLER_NAMESPACE = "kube-system"
CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"
CONTROLLER_CHART = "aws-load-balancer-controller"
CONTROLLER_REPO = "https://aws.github.io/eks-charts"
CONTROLLER_POLICY = Path(__file__).with_name("policies") / "aws-load-balancer-controller.json"
# Istio's ingress gateway: its Service port 80 targets the pods' 8080; 15021 answers
# /healthz/ready once the gateway can take traffic.
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SERVICE = "istio-ingressgateway"
GATEWAY_POD_PORT = 8080
GATEWAY_HEALTH_PORT = "15021"
GATEWAY_HEALTH_PATH = "/healthz/ready"
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# Idle connections (a notebook's kernel websocket) stay open an hour.
IDLE_TIMEOUT_SECONDS = 3600


def controller_policy() -> str:
    """The controller's documented IAM policy (components/aws/policies, as published)."""
    return json.dumps(json.loads(CONTROLLER_POLICY.read_text()), sort_keys=True)


def controller_trust(cluster_arn: str) -> str:
    """Pod Identity trust for the controller's ServiceAccount of this cluster only."""
    return pod_identity_trust(cluster_arn, CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT)


def controller_values(cluster_name: str, region: str, vpc_id: str) -> dict[str, Any]:
    return {
        "clusterName": cluster_name,
        # Pods cannot read instance metadata (IMDSv2 hop limit 1): say where they run.
        "region": region,
        "vpcId": vpc_id,
        "serviceAccount": {"create": True, "name": CONTROLLER_SERVICE_ACCOUNT},
        # Leave every other Service of type LoadBalancer to its own annotations.
        "enableServiceMutatorWebhook": False,
        "replicaCount": 2,
    }


def target_group_binding(target_group_arn: str, alb_security_group: str) -> dict[str, Any]:
    """Keeps the ALB target group's members equal to the Istio gateway's pod IPs, and lets
    the ALB's security group reach them."""
    return {
        "apiVersion": "elbv2.k8s.aws/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": "kubeflow-alb", "namespace": GATEWAY_NAMESPACE},
        "spec": {
            "serviceRef": {"name": GATEWAY_SERVICE, "port": 80},
            "targetGroupARN": target_group_arn,
            "targetType": "ip",
            "networking": {
                "ingress": [
                    {
                        "from": [{"securityGroup": {"groupID": alb_security_group}}],
                        "ports": [{"protocol": "TCP", "port": GATEWAY_POD_PORT}],
                    },
                    {
                        "from": [{"securityGroup": {"groupID": alb_security_group}}],
                        "ports": [{"protocol": "TCP", "port": int(GATEWAY_HEALTH_PORT)}],
                    },
                ]
            },
        },
    }


@dataclass(frozen=True)
class LoadBalancerControllerArgs:
    cluster_name: str
    pod_identity: PodIdentityCluster
    region: str
    vpc_id: pulumi.Input[str]
    chart_version: str
    provider: k8s.Provider
    depends_on: Sequence[pulumi.Resource] = ()
    permissions_boundary: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class LoadBalancerController(pulumi.ComponentResource):
    """The AWS Load Balancer Controller (Helm), with its documented policy via Pod Identity."""

    def __init__(
        self,
        name: str,
        args: LoadBalancerControllerArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubeflow-eks:ingress:LoadBalancerController", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_arn = AccountArns.lookup(args.region, self).cluster(args.cluster_name)
        role = workload_role(
            f"{name}-role",
            assume_role_policy=cluster_arn.apply(controller_trust),
            description=f"AWS Load Balancer Controller of {args.cluster_name}",
            permissions_boundary=args.permissions_boundary,
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=controller_policy(), opts=child)
        association = pod_identity_association(
            f"{name}-identity",
            args.pod_identity,
            namespace=CONTROLLER_NAMESPACE,
            service_account=CONTROLLER_SERVICE_ACCOUNT,
            role_arn=role.arn,
            tags=args.tags,
            parent=self,
        )
        values = pulumi.Output.from_input(args.vpc_id).apply(
            lambda vpc: controller_values(args.cluster_name, args.region, vpc)
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-chart",
            name=CONTROLLER_CHART,
            chart=CONTROLLER_CHART,
            version=args.chart_version,
            namespace=CONTROLLER_NAMESPACE,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=CONTROLLER_REPO),
            values=values,
            atomic=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.provider,
                # Its pods must get credentials from their first start.
                depends_on=[*args.depends_on, association],
            ),
        )
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn})


@dataclass(frozen=True)
class KubeflowLoadBalancerArgs:
    # The stack's kubeflow section: domain, hostedZoneId or certificateArn, loadBalancer.
    kubeflow: Kubeflow
    vpc_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    # The private subnets for an internal ALB, else the public ones.
    subnet_ids: pulumi.Input[Sequence[str]]
    provider: k8s.Provider
    # The controller's release and the Istio gateway must exist before the binding.
    binding_after: Sequence[pulumi.Resource] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        # The model requires it with ingress: load-balancer, the only case with an ALB.
        assert self.kubeflow.domain is not None
        return self.kubeflow.domain


class KubeflowLoadBalancer(pulumi.ComponentResource):
    """ALB + ACM certificate (+ validation, + alias record) for ``https://<domain>/``."""

    dns_name: pulumi.Output[str]
    certificate_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: KubeflowLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubeflow-eks:ingress:KubeflowLoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        certificate = self._certificate(name, args, child)
        security_group = aws.ec2.SecurityGroup(
            f"{name}-alb",
            vpc_id=args.vpc_id,
            description=f"HTTPS to Kubeflow at {args.domain} from the allowed ranges",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_blocks=list(args.kubeflow.load_balancer.allowed_cidrs),
                )
                for port in (443, 80)
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="tcp",
                    from_port=GATEWAY_POD_PORT,
                    to_port=int(GATEWAY_HEALTH_PORT),
                    cidr_blocks=[args.vpc_cidr],
                )
            ],
            tags={**args.tags, "Name": f"{name}-alb"},
            opts=child,
        )
        balancer = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=args.kubeflow.load_balancer.internal,
            subnets=args.subnet_ids,
            security_groups=[security_group.id],
            idle_timeout=IDLE_TIMEOUT_SECONDS,
            drop_invalid_header_fields=True,
            tags=dict(args.tags),
            opts=child,
        )
        target_group = aws.lb.TargetGroup(
            f"{name}-gateway",
            target_type="ip",
            protocol="HTTP",
            port=GATEWAY_POD_PORT,
            vpc_id=args.vpc_id,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                path=GATEWAY_HEALTH_PATH, port=GATEWAY_HEALTH_PORT, matcher="200"
            ),
            tags=dict(args.tags),
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=balancer.arn,
            port=443,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=certificate,
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=target_group.arn)
            ],
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=balancer.arn,
            port=80,
            protocol="HTTP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="redirect",
                    redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                        protocol="HTTPS", port="443", status_code="HTTP_301"
                    ),
                )
            ],
            opts=child,
        )
        if args.kubeflow.hosted_zone_id is not None:
            aws.route53.Record(
                f"{name}-alias",
                zone_id=args.kubeflow.hosted_zone_id,
                name=args.domain,
                type="A",
                aliases=[
                    aws.route53.RecordAliasArgs(
                        name=balancer.dns_name,
                        zone_id=balancer.zone_id,
                        evaluate_target_health=True,
                    )
                ],
                opts=child,
            )
        binding = pulumi.Output.all(target_group.arn, security_group.id).apply(
            lambda values: [target_group_binding(values[0], values[1])]
        )
        k8s.yaml.v2.ConfigGroup(
            f"{name}-binding",
            objs=binding,
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.provider, depends_on=list(args.binding_after)
            ),
        )
        self.dns_name = balancer.dns_name
        self.certificate_arn = pulumi.Output.from_input(certificate)
        self.register_outputs({"dns_name": self.dns_name})

    def _certificate(
        self, name: str, args: KubeflowLoadBalancerArgs, child: pulumi.ResourceOptions
    ) -> pulumi.Input[str]:
        """The given ACM certificate, or a new one validated through the Route53 zone."""
        if args.kubeflow.certificate_arn is not None:
            return args.kubeflow.certificate_arn
        zone = args.kubeflow.hosted_zone_id
        assert zone is not None  # the model requires one of the two
        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            domain_name=args.domain,
            validation_method="DNS",
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=False),
        )
        option = certificate.domain_validation_options[0]
        record = aws.route53.Record(
            f"{name}-validation",
            zone_id=zone,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=300,
            allow_overwrite=True,
            opts=child,
        )
        # Pulumi waits here until ACM sees the record and issues the certificate.
        validation = aws.acm.CertificateValidation(
            f"{name}-certificate",
            certificate_arn=certificate.arn,
            validation_record_fqdns=[record.fqdn],
            opts=child,
        )
        return validation.certificate_arn
