"""Each rule of the policy pack, with a resource that keeps the promise and one that breaks it.

Inputs are written the way the engine hands them to a policy (camelCase, numbers as floats,
some booleans as strings), as recorded under mocks from the real program.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from model.catalog import gpu_families
from platform_policy.rules import (
    ECR_REPOSITORY,
    EKS_ADDON,
    EKS_CLUSTER,
    EKS_COMPONENT_CLUSTER,
    HELM_RELEASE,
    KUBE_SECRET,
    LAUNCH_TEMPLATE,
    NODE_GROUP,
    RULES,
    SECURITY_GROUP,
    SUBNET,
    UNKNOWN,
    PolicySettings,
    ResourceInputs,
    is_gpu_node_group,
    rule_named,
    violations,
)

CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"
CPU_AMI = "AL2023_x86_64_STANDARD"
UPSTREAM_OIDC_SECRET = "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"

GOOD_TEMPLATE: dict[str, Any] = {
    "blockDeviceMappings": [
        {"deviceName": "/dev/xvda", "ebs": {"volumeType": "gp3", "encrypted": "true"}}
    ],
    "metadataOptions": {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1.0,
    },
}
GPU_GROUP: dict[str, Any] = {
    "amiType": "AL2023_x86_64_NVIDIA",
    "instanceTypes": ["g5.xlarge"],
    "launchTemplate": {"id": "lt-1", "version": "1"},
    "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
}
RESTRICTED_CLUSTER: dict[str, Any] = {
    "endpointPublicAccess": True,
    "publicAccessCidrs": ["203.0.113.0/24"],
    "encryptionConfigKeyArn": "arn:aws:kms:eu-central-1:123456789012:key/abc",
    "nodeAssociatePublicIpAddress": False,
    "skipDefaultNodeGroup": True,
    "corednsAddonOptions": {"enabled": True, "version": "v1.12.1-eksbuild.2"},
    "kubeProxyAddonOptions": {"enabled": True, "version": "v1.34.0-eksbuild.1"},
    "vpcCniOptions": {"addonVersion": "v1.20.1-eksbuild.1", "enableNetworkPolicy": True},
    "enabledClusterLogTypes": ["api", "audit", "authenticator"],
}

# The Kubeflow ALB's group as the program registers it on prod.
ALB_GROUP: dict[str, Any] = {
    "ingress": [
        {"protocol": "tcp", "fromPort": 443.0, "toPort": 443.0, "cidrBlocks": ["203.0.113.0/24"]}
    ],
    "egress": [
        {"protocol": "tcp", "fromPort": 8080.0, "toPort": 15021.0, "cidrBlocks": ["10.40.0.0/16"]}
    ],
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: b64(v) for k, v in data.items()},
    }


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


# rule, resource type, inputs that keep the promise, inputs that break it, words the message has
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], str]] = [
    (
        "node-volumes-encrypted",
        LAUNCH_TEMPLATE,
        GOOD_TEMPLATE,
        with_(
            GOOD_TEMPLATE,
            blockDeviceMappings=[{"deviceName": "/dev/xvda", "ebs": {"encrypted": "false"}}],
        ),
        "blockDeviceMappings[0] (/dev/xvda) has ebs.encrypted 'false'",
    ),
    (
        "node-volumes-encrypted",
        NODE_GROUP,
        GPU_GROUP,
        {k: v for k, v in GPU_GROUP.items() if k != "launchTemplate"},
        "no launchTemplate",
    ),
    (
        "imdsv2-hop-limit-1",
        LAUNCH_TEMPLATE,
        GOOD_TEMPLATE,
        with_(
            GOOD_TEMPLATE,
            metadataOptions={"httpTokens": "required", "httpPutResponseHopLimit": 2.0},
        ),
        "httpPutResponseHopLimit is 2.0; set it to 1",
    ),
    (
        "imdsv2-hop-limit-1",
        LAUNCH_TEMPLATE,
        with_(GOOD_TEMPLATE, metadataOptions={"httpEndpoint": "disabled"}),
        with_(
            GOOD_TEMPLATE,
            metadataOptions={"httpTokens": "optional", "httpPutResponseHopLimit": 1.0},
        ),
        "httpTokens is 'optional'",
    ),
    (
        "no-public-node-ips",
        LAUNCH_TEMPLATE,
        with_(GOOD_TEMPLATE, networkInterfaces=[{"associatePublicIpAddress": "false"}]),
        with_(GOOD_TEMPLATE, networkInterfaces=[{"associatePublicIpAddress": "true"}]),
        "networkInterfaces[0].associatePublicIpAddress is true",
    ),
    (
        "no-public-node-ips",
        SUBNET,
        {"cidrBlock": "10.0.224.0/22", "mapPublicIpOnLaunch": False},
        {"cidrBlock": "10.0.224.0/22", "mapPublicIpOnLaunch": True},
        "mapPublicIpOnLaunch is true",
    ),
    (
        "no-public-node-ips",
        EKS_COMPONENT_CLUSTER,
        RESTRICTED_CLUSTER,
        {k: v for k, v in RESTRICTED_CLUSTER.items() if k != "skipDefaultNodeGroup"}
        | {"nodeAssociatePublicIpAddress": None},
        "unset (pulumi-eks gives public IPs)",
    ),
    (
        "gpu-node-groups-tainted",
        NODE_GROUP,
        GPU_GROUP,
        with_(GPU_GROUP, taints=[{"key": "a", "value": "b", "effect": "PREFER_NO_SCHEDULE"}]),
        "GPU node group without a NoSchedule taint",
    ),
    (
        "gpu-node-groups-tainted",
        NODE_GROUP,
        # A CPU group needs no taint.
        with_(GPU_GROUP, amiType="AL2023_x86_64_STANDARD", instanceTypes=["m6i.xlarge"], taints=[]),
        # The instance type alone makes it a GPU group; no taints input at all is no decision.
        {
            k: v
            for k, v in with_(
                GPU_GROUP, amiType="AL2023_x86_64_STANDARD", instanceTypes=["p5.48xlarge"]
            ).items()
            if k != "taints"
        },
        "GPU node group",
    ),
    (
        "gpu-node-groups-tainted",
        NODE_GROUP,
        # `taints: []` in the stack file (the model's "no taint on purpose") registers [].
        with_(GPU_GROUP, taints=[]),
        with_(GPU_GROUP, taints=None),
        "or write taints: [] to leave it untainted on purpose",
    ),
    (
        "gpu-node-groups-bounded",
        NODE_GROUP,
        with_(GPU_GROUP, scalingConfig={"minSize": 0.0, "desiredSize": 0.0, "maxSize": 100.0}),
        with_(GPU_GROUP, scalingConfig={"minSize": 0.0, "desiredSize": 0.0, "maxSize": 1000.0}),
        "scalingConfig.maxSize is 1000 GPU nodes; at most 100 per group",
    ),
    (
        "eks-public-endpoint-restricted",
        EKS_COMPONENT_CLUSTER,
        RESTRICTED_CLUSTER,
        with_(RESTRICTED_CLUSTER, publicAccessCidrs=["203.0.113.0/24", "0.0.0.0/0"]),
        "publicAccessCidrs 0.0.0.0/0",
    ),
    (
        "eks-public-endpoint-restricted",
        EKS_COMPONENT_CLUSTER,
        with_(RESTRICTED_CLUSTER, endpointPublicAccess=False, publicAccessCidrs=None),
        # Public access by default, no CIDRs: EKS allows the whole internet.
        {k: v for k, v in RESTRICTED_CLUSTER.items() if not k.startswith(("endpoint", "public"))},
        "unset (EKS then allows 0.0.0.0/0)",
    ),
    (
        "eks-public-endpoint-restricted",
        EKS_COMPONENT_CLUSTER,
        # Wide but not the internet: a /9 and a /10 of private space.
        with_(RESTRICTED_CLUSTER, publicAccessCidrs=["10.0.0.0/9", "172.16.0.0/12"]),
        # 0.0.0.0/0 in two halves is still 0.0.0.0/0.
        with_(RESTRICTED_CLUSTER, publicAccessCidrs=["0.0.0.0/1", "128.0.0.0/1"]),
        "publicAccessCidrs 0.0.0.0/1, 128.0.0.0/1",
    ),
    (
        "eks-public-endpoint-restricted",
        EKS_CLUSTER,
        {"vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["198.51.100.0/24"]}},
        {"vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["::/0"]}},
        "vpcConfig.publicAccessCidrs ::/0",
    ),
    (
        "eks-secrets-encryption",
        EKS_COMPONENT_CLUSTER,
        # The key's ARN is unknown until the key exists: still set.
        with_(RESTRICTED_CLUSTER, encryptionConfigKeyArn=UNKNOWN),
        {k: v for k, v in RESTRICTED_CLUSTER.items() if k != "encryptionConfigKeyArn"},
        "set encryptionConfigKeyArn",
    ),
    (
        "eks-secrets-encryption",
        EKS_CLUSTER,
        {"encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:k"}}},
        {"encryptionConfig": {"resources": [], "provider": {"keyArn": "arn:k"}}},
        "resources: [secrets]",
    ),
    (
        "eks-control-plane-logs",
        EKS_COMPONENT_CLUSTER,
        RESTRICTED_CLUSTER,
        # prod without control-plane logs (the stack key controlPlaneLogs left out).
        {k: v for k, v in RESTRICTED_CLUSTER.items() if k != "enabledClusterLogTypes"},
        "control-plane logs api, audit, authenticator are off",
    ),
    (
        "eks-control-plane-logs",
        EKS_CLUSTER,
        {"enabledClusterLogTypes": ["api", "audit", "authenticator", "scheduler"]},
        {"enabledClusterLogTypes": ["api"]},
        "control-plane logs audit, authenticator are off",
    ),
    (
        "security-groups-not-open-to-world",
        SECURITY_GROUP,
        ALB_GROUP,
        # The ALB's group open to the internet (kubeflow.loadBalancer.allowedCidrs: [0.0.0.0/0]).
        with_(ALB_GROUP, ingress=[{**ALB_GROUP["ingress"][0], "cidrBlocks": ["0.0.0.0/0"]}]),
        "ingress[0] admits 0.0.0.0/0, the whole internet",
    ),
    (
        "security-groups-not-open-to-world",
        SECURITY_GROUP,
        ALB_GROUP,
        with_(
            ALB_GROUP,
            ingress=[
                ALB_GROUP["ingress"][0],
                {"protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "ipv6CidrBlocks": ["::/0"]},
            ],
        ),
        "ingress[1] admits ::/0",
    ),
    (
        "security-groups-not-open-to-world",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        {"cidrIpv4": "203.0.113.0/24", "ipProtocol": "tcp", "fromPort": 443.0, "toPort": 443.0},
        {"cidrIpv4": "0.0.0.0/0", "ipProtocol": "-1"},
        "admits 0.0.0.0/0",
    ),
    (
        "security-groups-not-open-to-world",
        "aws:ec2/securityGroupRule:SecurityGroupRule",
        # Egress to anywhere is how nodes reach the internet; only ingress is checked.
        {"type": "egress", "cidrBlocks": ["0.0.0.0/0"], "protocol": "-1"},
        {"type": "ingress", "cidrBlocks": ["0.0.0.0/1", "128.0.0.0/1"], "protocol": "tcp"},
        "admits 0.0.0.0/1, 128.0.0.0/1",
    ),
    (
        "load-balancers-guarded",
        "aws:lb/loadBalancer:LoadBalancer",
        {"loadBalancerType": "application", "internal": False, "securityGroups": ["sg-1"]},
        {"loadBalancerType": "application", "internal": False},
        "without securityGroups gets the VPC's default group",
    ),
    (
        "kubernetes-secrets-not-plaintext",
        CONFIG_GROUP,
        {"objs": [secret("dex-passwords", DEX_USER_PASSWORD="$2b$12$realhash")]},
        {"objs": [secret("dex-oidc-client", OIDC_CLIENT_SECRET=UPSTREAM_OIDC_SECRET)]},
        "Secret dex-oidc-client key OIDC_CLIENT_SECRET (objs[0]) holds a credential upstream",
    ),
    (
        "kubernetes-secrets-not-plaintext",
        KUBE_SECRET,
        {"metadata": {"name": "db"}, "stringData": {"password": "x8Jd02kLqp"}},
        {"metadata": {"name": "db"}, "stringData": {"password": "GENERATED-BY-STACK-db"}},
        "the render placeholder GENERATED-BY-STACK",
    ),
    (
        "kubernetes-secrets-not-plaintext",
        CONFIG_GROUP,
        {"yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: minio123}\n"},
        {"yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s3}\nstringData: {k: minio123}\n"},
        "Secret s3 key k (yaml) holds a credential upstream Kubeflow publishes",
    ),
    (
        "helm-charts-pinned",
        HELM_RELEASE,
        {"chart": "nvidia-device-plugin", "version": "0.20.0"},
        {"chart": "nvidia-device-plugin", "version": "~0.20"},
        "has version '~0.20'",
    ),
    (
        "helm-charts-pinned",
        HELM_RELEASE,
        {"chart": "./charts/local", "version": None},
        {"chart": "cluster-autoscaler"},
        "has version None",
    ),
    (
        "eks-addons-pinned",
        EKS_ADDON,
        {"addonName": "aws-ebs-csi-driver", "addonVersion": "v1.48.0-eksbuild.1"},
        {"addonName": "aws-ebs-csi-driver"},
        "add-on 'aws-ebs-csi-driver' has no addonVersion",
    ),
    (
        "eks-addons-pinned",
        EKS_COMPONENT_CLUSTER,
        RESTRICTED_CLUSTER,
        with_(RESTRICTED_CLUSTER, corednsAddonOptions={"enabled": True}),
        "the coredns add-on is not pinned; set corednsAddonOptions.version",
    ),
    (
        "ecr-scan-on-push",
        ECR_REPOSITORY,
        {"name": "ml/train", "imageScanningConfiguration": {"scanOnPush": True}},
        {"name": "ml/train"},
        "set imageScanningConfiguration.scanOnPush: true",
    ),
]


def check(rule_name: str, typ: str, props: dict[str, Any], stack: str = "prod") -> list[str]:
    rule = rule_named(rule_name)
    assert typ in rule.resource_types
    return list(rule.check(ResourceInputs(type=typ, name="res", stack=stack, props=props)))


@pytest.mark.parametrize(
    ("rule", "typ", "good", "bad", "words"),
    CASES,
    ids=[f"{c[0]}-{c[1].rsplit(':', 1)[-1]}-{i}" for i, c in enumerate(CASES)],
)
def test_rule_passes_a_keeping_resource_and_names_the_breaking_input(
    rule: str, typ: str, good: dict[str, Any], bad: dict[str, Any], words: str
) -> None:
    assert check(rule, typ, good) == []
    messages = check(rule, typ, bad)
    assert len(messages) == 1, messages
    assert messages[0].startswith("res: ")
    assert words in messages[0]


def test_every_rule_has_a_passing_and_a_failing_case() -> None:
    assert {c[0] for c in CASES} == {r.name for r in RULES}


def test_unknown_values_are_left_for_the_update_to_check() -> None:
    # During a first preview the ids of not-yet-created resources are unknown.
    template = with_(GOOD_TEMPLATE, metadataOptions=UNKNOWN, blockDeviceMappings=UNKNOWN)
    assert check("imdsv2-hop-limit-1", LAUNCH_TEMPLATE, template) == []
    assert check("node-volumes-encrypted", LAUNCH_TEMPLATE, template) == []
    assert (
        check("node-volumes-encrypted", NODE_GROUP, with_(GPU_GROUP, launchTemplate=UNKNOWN)) == []
    )
    objs = {"objs": UNKNOWN}
    assert check("kubernetes-secrets-not-plaintext", CONFIG_GROUP, objs) == []


def test_secret_objects_must_arrive_as_pulumi_secrets_when_that_is_visible() -> None:
    rule = rule_named("kubernetes-secrets-not-plaintext")
    props = {"objs": [secret("katib-mysql-secrets", MYSQL_ROOT_PASSWORD="Zk29sLq0Pw")]}

    def run(secret_props: frozenset[str] | None) -> list[str]:
        resource = ResourceInputs(CONFIG_GROUP, "kf-secrets", "dev", props, secret_props)
        return list(rule.check(resource))

    assert run(frozenset({"objs"})) == []
    # The Python policy SDK cannot tell (pulumi/pulumi-policy#241): only values are checked.
    assert run(None) == []
    [message] = run(frozenset())
    assert "input objs holds Kubernetes Secrets in plain text" in message
    assert "pulumi.Output.secret" in message


def test_production_rules_skip_only_the_listed_stacks() -> None:
    open_cluster = ResourceInputs(
        EKS_COMPONENT_CLUSTER,
        "eks",
        "dev",
        with_(RESTRICTED_CLUSTER, publicAccessCidrs=["0.0.0.0/0"], encryptionConfigKeyArn=None),
    )
    assert violations([open_cluster]) == []  # dev is the default non-production stack
    staging = ResourceInputs(open_cluster.type, "eks", "staging", open_cluster.props)
    assert sorted(rule for rule, _ in violations([staging])) == [
        "eks-public-endpoint-restricted",
        "eks-secrets-encryption",
    ]
    relaxed = PolicySettings.from_config({"nonProductionStacks": ["dev", "staging"]})
    assert violations([staging], relaxed) == []
    assert PolicySettings.from_config({}).non_production_stacks == ("dev",)


def test_bad_policy_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="nonProductionStacks: expected a list of stack names"):
        PolicySettings.from_config({"nonProductionStacks": "dev"})


def test_every_catalog_gpu_instance_type_is_a_gpu_group_to_the_policy() -> None:
    # The pack has its own venv and does not import the stack's model, so it recognises GPU
    # groups by a pattern; the catalog the stack accepts is the list that pattern must cover.
    catalog = [f"{family}.{size}" for family, spec in gpu_families().items() for size in spec.sizes]
    assert len(catalog) > 30
    missed = [name for name in catalog if not is_gpu_node_group({"instanceTypes": [name]})]
    assert missed == []
    cpu_types = ["m6i.xlarge", "c7g.2xlarge", "t3.medium", "r7i.large", "inf2.xlarge"]
    assert [name for name in cpu_types if is_gpu_node_group({"instanceTypes": [name]})] == []
