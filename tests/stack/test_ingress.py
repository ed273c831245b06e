"""Kubeflow by name over HTTPS on EKS: what the stack registers, read under mocks."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from components.aws.load_balancer import controller_policy, target_group_binding
from model import versions
from tests.crd_schema import crd_errors
from tests.pulumi_mocks import ACCOUNT, RecordingMocks, StackRun, file_config, run_program

GOOD = Path(__file__).parent / "files" / "good"
TGB_CRD = Path(__file__).parents[1] / "fixtures" / "crds" / "targetgroupbindings.elbv2.k8s.aws.yaml"
ZONE = "https-by-name-with-a-zone"
CERTIFICATE = "https-internal-with-a-certificate"


@cache
def _run(case: str) -> StackRun:
    return run_program(file_config(GOOD / f"Pulumi.{case}.yaml"), stack=case)


def _one(mocks: RecordingMocks, typ: str, name_part: str = "") -> Any:
    [resource] = [r for r in mocks.of_type(typ) if name_part in r.name]
    return resource.inputs


def _listener(mocks: RecordingMocks, port: int) -> Any:
    [listener] = [
        r.inputs for r in mocks.of_type("aws:lb/listener:Listener") if r.inputs["port"] == port
    ]
    return listener


def test_the_controller_has_exactly_its_documented_policy_through_pod_identity() -> None:
    mocks = _run(ZONE).mocks
    role = _one(mocks, "aws:iam/role:Role", "lb-controller")
    [statement] = json.loads(role["assumeRolePolicy"])["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert statement["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    tags = statement["Condition"]["StringEquals"]
    assert tags["aws:RequestTag/kubernetes-namespace"] == "kube-system"
    assert tags["aws:RequestTag/kubernetes-service-account"] == "aws-load-balancer-controller"
    assert tags["aws:RequestTag/eks-cluster-arn"] == (
        f"arn:aws:eks:us-west-2:{ACCOUNT}:cluster/{_cluster(ZONE)}"
    )
    policy = _one(mocks, "aws:iam/rolePolicy:RolePolicy", "lb-controller")["policy"]
    assert json.loads(policy) == json.loads(controller_policy())
    association = _one(mocks, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "lb-")
    assert (association["namespace"], association["serviceAccount"]) == (
        "kube-system",
        "aws-load-balancer-controller",
    )
    release = next(
        r.inputs
        for r in mocks.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "aws-load-balancer-controller"
    )
    kubernetes = versions.DEFAULT_KUBERNETES_VERSION
    assert release["version"] == versions.pins(kubernetes).load_balancer_controller_chart
    assert release["values"]["enableServiceMutatorWebhook"] is False
    assert release["values"]["clusterName"] == _cluster(ZONE)


def test_https_listener_with_a_validated_certificate_and_http_redirected() -> None:
    mocks = _run(ZONE).mocks
    certificate = _one(mocks, "aws:acm/certificate:Certificate")
    assert certificate["domainName"] == "kubeflow.example.org"
    assert certificate["validationMethod"] == "DNS"
    validation_record = _one(mocks, "aws:route53/record:Record", "-validation")
    assert validation_record["zoneId"] == "Z0123456789ABC"
    assert validation_record["type"] == "CNAME"
    assert validation_record["records"] == ["_4567ef.acm-validations.aws."]
    validation = _one(mocks, "aws:acm/certificateValidation:CertificateValidation")
    assert validation["validationRecordFqdns"] == ["_0123abcd.kubeflow.example.org"]
    https = _listener(mocks, 443)
    assert (https["port"], https["protocol"]) == (443, "HTTPS")
    assert https["sslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    # The listener serves the certificate only once it is validated.
    assert https["certificateArn"] == validation["certificateArn"]
    [forward] = https["defaultActions"]
    assert forward["type"] == "forward"
    http = _listener(mocks, 80)
    [redirect] = http["defaultActions"]
    assert redirect["redirect"] == {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}


def test_the_alias_record_points_the_domain_at_the_alb() -> None:
    mocks = _run(ZONE).mocks
    alias = _one(mocks, "aws:route53/record:Record", "-alias")
    assert (alias["name"], alias["type"], alias["zoneId"]) == (
        "kubeflow.example.org",
        "A",
        "Z0123456789ABC",
    )
    [target] = alias["aliases"]
    alb = next(r for r in mocks.of_type("aws:lb/loadBalancer:LoadBalancer"))
    assert target["name"] == f"{alb.name}-123.us-west-2.elb.amazonaws.com"
    assert _run(ZONE).outputs["kubeflowUrl"] == "https://kubeflow.example.org/"


def test_internet_facing_alb_admits_only_the_allowed_ranges() -> None:
    mocks = _run(ZONE).mocks
    alb = _one(mocks, "aws:lb/loadBalancer:LoadBalancer")
    assert alb["internal"] is False
    public = {f"{r.name}-id" for r in mocks.of_type("aws:ec2/subnet:Subnet") if "public" in r.name}
    assert set(alb["subnets"]) == public
    group = _one(mocks, "aws:ec2/securityGroup:SecurityGroup", "-alb")
    assert {rule["fromPort"] for rule in group["ingress"]} == {80, 443}
    assert all(rule["cidrBlocks"] == ["203.0.113.0/24"] for rule in group["ingress"])


def test_internal_alb_with_an_existing_certificate_issues_none() -> None:
    mocks = _run(CERTIFICATE).mocks
    alb = _one(mocks, "aws:lb/loadBalancer:LoadBalancer")
    assert alb["internal"] is True
    private = {
        f"{r.name}-id" for r in mocks.of_type("aws:ec2/subnet:Subnet") if "private" in r.name
    }
    assert set(alb["subnets"]) == private
    assert mocks.of_type("aws:acm/certificate:Certificate") == []
    assert mocks.of_type("aws:route53/record:Record") == []
    https = _listener(mocks, 443)
    assert https["certificateArn"].startswith("arn:aws:acm:us-west-2:123456789012:certificate/")


def test_the_target_group_binding_is_valid_and_comes_after_istio_and_the_controller() -> None:
    mocks = _run(ZONE).mocks
    [binding_group] = [
        g for g in mocks.nodes("kubernetes:yaml/v2:ConfigGroup") if "-binding" in g.name
    ]
    waits = mocks.waits_for(binding_group.urn)
    controller = next(
        r for r in mocks.nodes("kubernetes:helm.sh/v3:Release") if "lb-controller" in r.name
    )
    platform = [g for g in mocks.nodes("kubernetes:yaml/v2:ConfigGroup") if "-kubeflow-0" in g.name]
    assert controller.urn in waits
    assert platform and all(g.urn in waits for g in platform)
    binding = target_group_binding("arn:aws:elasticloadbalancing:tg", "sg-0123")
    assert binding["spec"]["serviceRef"] == {"name": "istio-ingressgateway", "port": 80}
    # Valid against the CRD the controller's pinned chart installs.
    crd = yaml.safe_load(TGB_CRD.read_text())
    assert crd_errors(binding, crd) == []
    broken = {**binding, "spec": {**binding["spec"], "targetGroupArn": "typo"}}
    assert crd_errors(broken, crd)


def test_port_forward_stacks_create_no_load_balancer() -> None:
    run = run_program(file_config(GOOD / "Pulumi.minimal-eks.yaml"), stack="minimal-eks")
    assert run.mocks.of_type("aws:lb/loadBalancer:LoadBalancer") == []
    assert run.outputs["kubeflowUrl"] == "http://localhost:8080/"


def _cluster(case: str) -> str:
    return f"kubeflow-{case}"[:32].rstrip("-")


def _access(path: Path) -> Any:
    from stack.load import load_stack_file
    from stack.program.kubeflow import access_of

    return access_of(load_stack_file(path, require_secrets=False))


def test_the_gateway_admits_the_vpc_the_alb_sends_from(tmp_path: Path) -> None:
    """The ALB's interfaces are VPC addresses: its VPC CIDR (default 10.0.0.0/16), or, for an
    existing VPC whose ranges are known only once deployed, any address on those ports."""
    assert _access(GOOD / f"Pulumi.{CERTIFICATE}.yaml").gateway_sources == ("10.0.0.0/16",)
    existing = yaml.safe_load((GOOD / "Pulumi.existing-vpc.yaml").read_text())
    by_name = yaml.safe_load((GOOD / f"Pulumi.{CERTIFICATE}.yaml").read_text())
    existing["config"]["kubeflow-eks:kubeflow"] = by_name["config"]["kubeflow-eks:kubeflow"]
    path = tmp_path / "Pulumi.existing-vpc-by-name.yaml"
    path.write_text(yaml.safe_dump(existing))
    assert _access(path).gateway_sources == ("0.0.0.0/0",)


def test_onprem_gateway_admits_exactly_the_allowed_ranges() -> None:
    access = _access(GOOD / "Pulumi.onprem-node-port-for-the-lab-network.yaml")
    assert access.gateway_sources == ("10.10.0.0/16", "192.168.50.0/24")
    assert access.gateway_service is not None
    assert access.gateway_service.service_type == "NodePort"
