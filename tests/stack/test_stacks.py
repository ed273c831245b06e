"""What a reviewer checks in each example stack, from the resources registered under mocks."""

from __future__ import annotations

import ipaddress
import json
from functools import cache
from typing import Any

import pytest
import yaml

from components.aws.network import plan_subnets
from components.aws.storage import default_storage_class
from model import versions
from stack.load import load_stack_file
from tests.pulumi_mocks import (
    STACKS,
    RecordingMocks,
    StackRun,
    is_secret,
    run_program,
    stack_file_config,
)

EKS_STACKS = ("dev", "prod")


@cache
def _run(stack: str) -> StackRun:
    return run_program(stack_file_config(stack), stack=stack)


def _stack_yaml(stack: str) -> dict[str, Any]:
    return yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())["config"]


def _gpu_node_groups(mocks: RecordingMocks) -> dict[str, list[Any]]:
    """Registered managed node groups, by the GPU group they belong to."""
    groups: dict[str, list[Any]] = {}
    for r in mocks.of_type("aws:eks/nodeGroup:NodeGroup"):
        name = r.inputs.get("labels", {}).get("kubeflow-eks.io/gpu-group")
        if name is not None:
            groups.setdefault(name, []).append(r)
    return groups


def _private_subnet_ids(mocks: RecordingMocks) -> dict[str, str]:
    """Private subnet id (as the mocks name it) -> its AZ."""
    return {
        f"{r.name}-id": r.inputs["availabilityZone"]
        for r in mocks.of_type("aws:ec2/subnet:Subnet")
        if "private" in r.name
    }


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_gpu_groups_get_nvidia_ami_labels_and_taints(stack: str) -> None:
    mocks = _run(stack).mocks
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    registered = _gpu_node_groups(mocks)
    assert set(registered) == {g.name for g in cfg.gpu_node_groups}
    effects = {
        "NoSchedule": "NO_SCHEDULE",
        "NoExecute": "NO_EXECUTE",
        "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    }
    for group in cfg.gpu_node_groups:
        for node_group in registered[group.name]:
            inputs = node_group.inputs
            assert inputs["amiType"] == group.ami_type
            assert inputs["amiType"].endswith("_NVIDIA")
            assert inputs["capacityType"] == group.capacity_type
            assert inputs["instanceTypes"] == list(group.instance_types)
            assert inputs["scalingConfig"] == {
                "minSize": group.min_size,
                "desiredSize": group.desired_size,
                "maxSize": group.max_size,
            }
            labels = inputs["labels"]
            assert labels["nvidia.com/gpu.present"] == "true"
            # The autoscaler waits for GPUs on nodes with this label before adding more.
            assert labels["k8s.amazonaws.com/accelerator"] == group.accelerator
            assert {k: labels[k] for k in group.labels} == dict(group.labels)
            assert inputs["taints"] == [
                {"key": t.key, "value": t.value, "effect": effects[t.effect]} for t in group.taints
            ]
            # 37 characters at most: Pulumi appends 26 to the prefix, EKS allows 63.
            assert len(inputs["nodeGroupNamePrefix"]) <= 37
            # A GPU node that stays unhealthy is replaced by EKS (on by default).
            assert inputs["nodeRepairConfig"] == {"enabled": True}


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_zonal_gpu_groups_get_one_node_group_per_az(stack: str) -> None:
    """A notebook's EBS volume lives in one AZ: a zonal group can bring a node back there."""
    mocks = _run(stack).mocks
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    zones = _private_subnet_ids(mocks)
    for group in cfg.gpu_node_groups:
        node_groups = _gpu_node_groups(mocks)[group.name]
        if group.placement == "zonal":
            covered = [zones[s] for ng in node_groups for s in ng.inputs["subnetIds"]]
            assert sorted(covered) == sorted(cfg.vpc.availability_zones)
            assert all(len(ng.inputs["subnetIds"]) == 1 for ng in node_groups)
        else:
            [node_group] = node_groups
            assert set(node_group.inputs["subnetIds"]) == set(zones)
    release = next(
        r
        for r in mocks.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "cluster-autoscaler"
    )
    # Scale-ups are spread over the zonal groups of one GPU group, not piled into one AZ.
    assert release.inputs["values"]["extraArgs"]["balance-similar-node-groups"] == "true"


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_gpu_groups_carry_autoscaler_node_template_tags(stack: str) -> None:
    mocks = _run(stack).mocks
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    tags = mocks.of_type("aws:autoscaling/tag:Tag")
    prefix = "k8s.io/cluster-autoscaler/node-template"
    for group in cfg.gpu_node_groups:
        for node_group in _gpu_node_groups(mocks)[group.name]:
            asg = f"eks-{node_group.name}-asg"
            mine = {
                t.inputs["tag"]["key"]: t.inputs["tag"]["value"]
                for t in tags
                if t.inputs["autoscalingGroupName"] == asg
            }
            assert mine[f"{prefix}/resources/nvidia.com/gpu"] == str(group.gpus_per_node)
            assert mine[f"{prefix}/label/nvidia.com/gpu.present"] == "true"
            assert mine[f"{prefix}/label/kubeflow-eks.io/gpu-group"] == group.name
            assert mine[f"{prefix}/label/k8s.amazonaws.com/accelerator"] == group.accelerator
            for taint in group.taints:
                assert mine[f"{prefix}/taint/{taint.key}"] == f"{taint.value}:{taint.effect}"
    # The multi-GPU spot group advertises 4 GPUs per node.
    if stack == "prod":
        multi = next(g for g in cfg.gpu_node_groups if g.name == "gpu-multi-spot")
        assert multi.gpus_per_node == 4


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_nodes_live_in_private_subnets_with_imdsv2_and_encrypted_gp3(stack: str) -> None:
    mocks = _run(stack).mocks
    private_ids = {
        f"{r.name}-id" for r in mocks.of_type("aws:ec2/subnet:Subnet") if "private" in r.name
    }
    public = [r for r in mocks.of_type("aws:ec2/subnet:Subnet") if "public" in r.name]
    assert private_ids and public
    for subnet in mocks.of_type("aws:ec2/subnet:Subnet"):
        assert subnet.inputs.get("mapPublicIpOnLaunch") is False
    for group in mocks.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert set(group.inputs["subnetIds"]) <= private_ids
    for template in mocks.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        assert template.inputs["metadataOptions"]["httpTokens"] == "required"
        (device,) = template.inputs["blockDeviceMappings"]
        assert device["ebs"]["volumeType"] == "gp3"
        assert device["ebs"]["encrypted"] == "true"
    cluster = mocks.of_type("eks:index:Cluster")[0].inputs
    assert cluster["nodeAssociatePublicIpAddress"] is False


def test_private_subnets_do_not_overlap_and_fit_the_vpc() -> None:
    plans = plan_subnets("10.40.0.0/16", ["a", "b", "c"])
    networks = [ipaddress.ip_network(p.cidr) for p in plans]
    vpc = ipaddress.ip_network("10.40.0.0/16")
    assert all(n.subnet_of(vpc) for n in networks)
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])
    private = [n for n, p in zip(networks, plans, strict=True) if not p.public]
    assert all(n.num_addresses >= 8192 for n in private)  # pods take VPC addresses


def test_prod_has_a_nat_gateway_per_az_and_dev_one() -> None:
    assert len(_run("prod").mocks.of_type("aws:ec2/natGateway:NatGateway")) == 3
    assert len(_run("dev").mocks.of_type("aws:ec2/natGateway:NatGateway")) == 1
    # Every private route table sends 0.0.0.0/0 through a NAT gateway, never the IGW.
    for table in _run("prod").mocks.of_type("aws:ec2/routeTable:RouteTable"):
        route = table.inputs["routes"][0]
        if "private" in table.name:
            assert "natGatewayId" in route and "gatewayId" not in route


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_endpoint_and_cluster_settings_follow_the_stack(stack: str) -> None:
    cluster = _run(stack).mocks.of_type("eks:index:Cluster")[0].inputs
    endpoint = _stack_yaml(stack)["kubeflow-eks:endpoint"]
    assert cluster["endpointPrivateAccess"] is True
    assert cluster["endpointPublicAccess"] is endpoint["publicAccess"]
    assert cluster["publicAccessCidrs"] == endpoint["publicAccessCidrs"]
    assert cluster["authenticationMode"] == "API"
    assert cluster["createOidcProvider"] is True
    assert cluster["skipDefaultNodeGroup"] is True
    assert cluster["version"] == "1.35"
    assert cluster["encryptionConfigKeyArn"]
    if stack == "prod":
        assert cluster["enabledClusterLogTypes"] == ["api", "audit", "authenticator"]
        admin = cluster["accessEntries"]["admin-0"]
        assert admin["principalArn"] == "arn:aws:iam::123456789012:role/platform-admin"
        assert set(cluster["accessEntries"]) == {"admin-0", "viewer-0"}
        assert "0.0.0.0/0" not in cluster["publicAccessCidrs"]


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_irsa_roles_trust_exactly_one_service_account(stack: str) -> None:
    mocks = _run(stack).mocks
    roles = {r.name: r.inputs for r in mocks.of_type("aws:iam/role:Role")}
    expected = {
        "-ebs-csi-role": "system:serviceaccount:kube-system:ebs-csi-controller-sa",
        "-autoscaler-irsa-role": "system:serviceaccount:kube-system:cluster-autoscaler",
    }
    for suffix, subject in expected.items():
        (name,) = [n for n in roles if n.endswith(suffix)]
        policy = json.loads(roles[name]["assumeRolePolicy"])
        (statement,) = policy["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement["Principal"]["Federated"].startswith("arn:aws:iam::")
        conditions = statement["Condition"]["StringEquals"]
        subs = [v for k, v in conditions.items() if k.endswith(":sub")]
        auds = [v for k, v in conditions.items() if k.endswith(":aud")]
        assert subs == [subject]
        assert auds == ["sts.amazonaws.com"]


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_autoscaler_may_only_resize_this_clusters_groups(stack: str) -> None:
    mocks = _run(stack).mocks
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    (policy_resource,) = [
        r for r in mocks.of_type("aws:iam/rolePolicy:RolePolicy") if "-autoscaler-" in r.name
    ]
    policy = json.loads(policy_resource.inputs["policy"])
    writes = [s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"]]
    (write,) = writes
    condition = write["Condition"]["StringEquals"]
    assert condition[f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cfg.cluster_name}"] == "owned"
    describe = [s for s in policy["Statement"] if s["Action"] == ["eks:DescribeNodegroup"]]
    node_groups = mocks.of_type("aws:eks/nodeGroup:NodeGroup")
    assert sorted(describe[0]["Resource"]) == sorted(
        f"arn:aws:eks:us-west-2:123456789012:nodegroup/{g.name}" for g in node_groups
    )
    (release,) = [
        r
        for r in mocks.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "cluster-autoscaler"
    ]
    values = release.inputs["values"]
    assert values["autoDiscovery"]["clusterName"] == cfg.cluster_name
    # The autoscaler's minor version must match the cluster's; the patch is the table's latest.
    assert values["image"]["tag"].startswith(f"v{cfg.kubernetes_version}.")
    assert values["image"]["tag"] == versions.pins(cfg.kubernetes_version).autoscaler_image
    assert release.inputs["version"] == cfg.autoscaler_chart


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_default_storage_class_is_encrypted_gp3_on_the_ebs_csi_driver(stack: str) -> None:
    mocks = _run(stack).mocks
    (addon,) = [
        a
        for a in mocks.of_type("aws:eks/addon:Addon")
        if a.inputs["addonName"] == "aws-ebs-csi-driver"
    ]
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    assert (
        addon.inputs["addonVersion"]
        == versions.pins(cfg.kubernetes_version).addons["aws-ebs-csi-driver"]
    )
    assert addon.inputs["serviceAccountRoleArn"].endswith("-ebs-csi-role")
    (group,) = [
        g for g in mocks.of_type("kubernetes:yaml/v2:ConfigGroup") if g.name.endswith("-ebs-class")
    ]
    (storage_class,) = group.inputs["objs"]
    assert storage_class == default_storage_class()
    assert (
        storage_class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
        == "true"
    )
    assert storage_class["parameters"] == {"type": "gp3", "encrypted": "true", "fsType": "ext4"}


def test_storage_class_is_valid_kubernetes() -> None:
    import kubernetes_validate

    kubernetes_validate.validate(default_storage_class(), "1.34", strict=True)


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_outputs_say_how_to_reach_the_cluster(stack: str) -> None:
    outputs = _run(stack).outputs
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    assert outputs["clusterName"] == cfg.cluster_name
    assert outputs["connectCommand"] == (
        f"aws eks update-kubeconfig --region {cfg.region} --name {cfg.cluster_name}"
    )
    assert outputs["oidcProviderArn"].startswith("arn:aws:iam::")
    assert set(outputs["nodeGroups"]) == {"system", *(g.name for g in cfg.gpu_node_groups)}
    zones = len(cfg.vpc.availability_zones)
    for group in cfg.gpu_node_groups:
        assert len(outputs["nodeGroups"][group.name]) == (
            zones if group.placement == "zonal" else 1
        )
    assert json.loads(outputs["kubeconfig"])["kind"] == "Config"


def test_onprem_creates_nothing_on_aws() -> None:
    run = _run("onprem")
    aws_like = [r for r in run.mocks.resources if r.typ.startswith(("aws:", "eks:"))]
    assert aws_like == []
    (provider,) = run.mocks.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "onprem-admin"
    assert provider.inputs["kubeconfig"].endswith("/.kube/config")
    assert run.outputs["clusterName"] == "onprem-gpu"


def test_onprem_kubeconfig_secret_wins_over_path() -> None:
    config = stack_file_config("onprem")
    config["kubeflow-eks:onprem"] = {"context": "lab"}
    config["kubeflow-eks:onpremKubeconfig"] = "apiVersion: v1\nkind: Config\n"
    run = run_program(config, stack="onprem")
    (provider,) = run.mocks.of_type("pulumi:providers:kubernetes")
    kubeconfig = provider.inputs["kubeconfig"]
    assert is_secret(kubeconfig), "the kubeconfig must reach state as a secret"
    assert "kind: Config" in kubeconfig["value"]


def test_kubeconfig_is_a_secret_end_to_end() -> None:
    (provider,) = _run("dev").mocks.of_type("pulumi:providers:kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_image_pulls_skip_nat_through_vpc_endpoints(stack: str) -> None:
    mocks = _run(stack).mocks
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    endpoints = {
        e.inputs["serviceName"]: e.inputs for e in mocks.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    region = cfg.region
    s3 = endpoints[f"com.amazonaws.{region}.s3"]
    assert s3["vpcEndpointType"] == "Gateway"
    private_tables = {
        f"{r.name}-id"
        for r in mocks.of_type("aws:ec2/routeTable:RouteTable")
        if "private" in r.name
    }
    assert set(s3["routeTableIds"]) == private_tables
    for service in ("ecr.api", "ecr.dkr"):
        ecr = endpoints[f"com.amazonaws.{region}.{service}"]
        assert ecr["vpcEndpointType"] == "Interface"
        assert ecr["privateDnsEnabled"] is True
        assert set(ecr["subnetIds"]) == set(_private_subnet_ids(mocks))
    [group] = [
        g
        for g in mocks.of_type("aws:ec2/securityGroup:SecurityGroup")
        if g.name.endswith("-endpoints")
    ]
    [rule] = group.inputs["ingress"]
    assert (rule["fromPort"], rule["toPort"], rule["protocol"]) == (443, 443, "tcp")


def test_vpc_endpoints_can_be_turned_off() -> None:
    config = stack_file_config("dev")
    config["kubeflow-eks:vpc"] = {**config["kubeflow-eks:vpc"], "endpoints": False}
    mocks = run_program(config, stack="dev").mocks
    assert mocks.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") == []
