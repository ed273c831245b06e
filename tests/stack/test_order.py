"""The order a live first `pulumi up` needs, read from what each resource waits for.

Mocks create everything at once, so ordering bugs never fail here by themselves. Each rule
below is what the live system does (written next to it); the test checks the program makes
every resource wait, directly or through its parent, for what that rule needs.
"""

from __future__ import annotations

from functools import cache

import pytest

from tests.pulumi_mocks import Node, RecordingMocks, run_program, stack_file_config

EKS_STACKS = ("dev", "prod")
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ADDON = "aws:eks/addon:Addon"
RELEASE = "kubernetes:helm.sh/v3:Release"
CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"


@cache
def _mocks(stack: str) -> RecordingMocks:
    return run_program(stack_file_config(stack), stack=stack).mocks


def _one(mocks: RecordingMocks, typ: str, name_part: str) -> Node:
    [node] = mocks.nodes(typ, name_part)
    return node


def _after(mocks: RecordingMocks, later: Node, *earlier: Node) -> None:
    waits = mocks.waits_for(later.urn)
    missing = [e.name for e in earlier if e.urn not in waits]
    assert not missing, f"{later.typ} {later.name} does not wait for {missing}"


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_addons_whose_pods_need_nodes_come_after_the_system_nodes(stack: str) -> None:
    """An add-on is ACTIVE only once its pods run: CoreDNS with no node stays DEGRADED and
    fails its creation after 20 minutes (pulumi-eks#1819)."""
    mocks = _mocks(stack)
    system = _one(mocks, NODE_GROUP, "-system-")
    for addon in ("coredns", "eks-pod-identity-agent", "ebs-csi"):
        _after(mocks, _one(mocks, ADDON, addon), system)
    # pulumi-eks must not create its own CoreDNS add-on alongside the control plane.
    [cluster] = mocks.of_type("eks:index:Cluster")
    assert cluster.inputs["corednsAddonOptions"]["enabled"] is False


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_node_groups_wait_for_the_cluster_and_the_routes_out(stack: str) -> None:
    """Joining nodes pull images (vpc-cni, kube-proxy) through NAT or the VPC endpoints; a
    node group created before its routes exist fails with NodeCreationFailure."""
    mocks = _mocks(stack)
    cluster = _one(mocks, "eks:index:Cluster", "")
    routes = mocks.nodes("aws:ec2/routeTableAssociation:RouteTableAssociation", "private")
    nats = mocks.nodes("aws:ec2/natGateway:NatGateway")
    endpoints = mocks.nodes("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert routes and nats and endpoints
    for group in mocks.nodes(NODE_GROUP):
        _after(mocks, group, cluster, *routes, *nats, *endpoints)


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_workloads_come_after_nodes_dns_and_storage(stack: str) -> None:
    """Helm releases are atomic (they wait for their pods) and Kubeflow's databases bind
    PVCs: both need a node, CoreDNS and the default StorageClass first."""
    mocks = _mocks(stack)
    needed = [
        _one(mocks, NODE_GROUP, "-system-"),
        _one(mocks, ADDON, "coredns"),
        _one(mocks, CONFIG_GROUP, "-ebs-class"),
    ]
    releases = mocks.nodes(RELEASE)
    assert {r.name.rsplit("-", 1)[0] for r in releases} >= {f"{_cluster(stack)}-autoscaler"}
    for release in releases:
        _after(mocks, release, *needed)
    first_phase = [g for g in mocks.nodes(CONFIG_GROUP) if "-kubeflow-01-" in g.name]
    assert first_phase
    for group in first_phase:
        _after(mocks, group, *needed)


@pytest.mark.parametrize("stack", EKS_STACKS)
def test_the_autoscaler_starts_after_every_group_it_manages(stack: str) -> None:
    mocks = _mocks(stack)
    autoscaler = next(r for r in mocks.nodes(RELEASE) if "-autoscaler-" in r.name)
    _after(mocks, autoscaler, *mocks.nodes(NODE_GROUP))


def _cluster(stack: str) -> str:
    return {"dev": "kubeflow-dev", "prod": "ml-platform-prod"}[stack]


def test_names_derived_from_the_longest_allowed_names_fit_aws_limits() -> None:
    """The model caps clusterName at 32 and GPU group names at 28 characters so that every
    name derived from them fits: IAM role names (64, Pulumi appends 8), managed node group
    name prefixes (37, Pulumi appends 26)."""
    config = stack_file_config("prod")
    config["kubeflow-eks:clusterName"] = "c" * 32
    groups = config["kubeflow-eks:gpuNodeGroups"]
    groups[0]["name"] = "g" * 28
    kubeflow = config["kubeflow-eks:kubeflow"]
    kubeflow["profiles"] = [*kubeflow["profiles"], {"name": "p" * 63, "owner": "a@example.org"}]
    mocks = run_program(config, stack="prod").mocks
    roles = mocks.of_type("aws:iam/role:Role")
    assert roles
    for role in roles:
        if "namePrefix" in role.inputs:  # IAM appends 26 characters to a prefix
            assert len(role.inputs["namePrefix"]) <= 38, role.inputs["namePrefix"]
        else:  # Pulumi appends 8 to the resource's name
            assert len(role.inputs.get("name", role.name)) + 8 <= 64, role.name
    for group in mocks.of_type(NODE_GROUP):
        assert len(group.inputs["nodeGroupNamePrefix"]) <= 37
    [cluster] = mocks.of_type("eks:index:Cluster")
    assert len(cluster.inputs["name"]) <= 100
