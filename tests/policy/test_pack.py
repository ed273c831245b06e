"""The pack process as the CLI talks to it: policies, enforcement, unknowns, secrets, config."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2

from platform_policy.rules import RULES
from tests.policy.conftest import RunningPack

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
EKS_CLUSTER = "eks:index:Cluster"
# How the engine writes values a preview does not know yet, and secrets.
UNKNOWN_OBJECT = "dd056dcd-154b-4c76-9bd3-c8f88648b5ff"
SECRET_SIG = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}

OPEN_CLUSTER: dict[str, Any] = {
    "endpointPublicAccess": True,
    "publicAccessCidrs": ["0.0.0.0/0"],
    "nodeAssociatePublicIpAddress": False,
    "corednsAddonOptions": {"enabled": True, "version": "v1.12.1-eksbuild.2"},
    "kubeProxyAddonOptions": {"enabled": True, "version": "v1.34.0-eksbuild.1"},
    "vpcCniOptions": {"addonVersion": "v1.20.1-eksbuild.1"},
    "enabledClusterLogTypes": ["api", "audit", "authenticator"],
}


def policies_hit(response: analyzer_pb2.AnalyzeResponse) -> list[str]:
    return sorted(d.policyName for d in response.diagnostics)


def test_the_pack_offers_every_rule_as_a_mandatory_policy(policy_pack: RunningPack) -> None:
    info = policy_pack.stub.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "kubeflow-eks-platform"
    assert {p.name: p.enforcementLevel for p in info.policies} == {
        r.name: analyzer_pb2.MANDATORY for r in RULES
    }


def test_a_broken_launch_template_is_refused_with_the_input_named(
    policy_pack: RunningPack,
) -> None:
    props = {
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"encrypted": "true"}}],
        "metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 2},
    }
    response = policy_pack.analyze(LAUNCH_TEMPLATE, "gpu-lt", props, stack="dev")
    assert policies_hit(response) == ["imdsv2-hop-limit-1", "imdsv2-hop-limit-1"]
    assert all(d.enforcementLevel == analyzer_pb2.MANDATORY for d in response.diagnostics)
    messages = " | ".join(d.message for d in response.diagnostics)
    assert "gpu-lt: metadataOptions.httpTokens is 'optional'" in messages
    assert "httpPutResponseHopLimit is 2.0; set it to 1" in messages

    props["metadataOptions"] = {"httpTokens": "required", "httpPutResponseHopLimit": 1}
    assert policies_hit(policy_pack.analyze(LAUNCH_TEMPLATE, "gpu-lt", props, stack="dev")) == []


def test_values_unknown_in_a_preview_do_not_break_the_pack(policy_pack: RunningPack) -> None:
    props = {"blockDeviceMappings": UNKNOWN_OBJECT, "metadataOptions": UNKNOWN_OBJECT}
    response = policy_pack.analyze(LAUNCH_TEMPLATE, "lt", props, stack="prod")
    assert list(response.diagnostics) == []


def test_secret_values_are_still_checked(policy_pack: RunningPack) -> None:
    leaked = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mlpipeline-minio-artifact"},
        "stringData": {"secretkey": "minio123"},
    }
    props = {"objs": {**SECRET_SIG, "value": [leaked]}}
    response = policy_pack.analyze(
        "kubernetes:yaml/v2:ConfigGroup", "kf-secrets", props, stack="prod"
    )
    [diagnostic] = response.diagnostics
    assert diagnostic.policyName == "kubernetes-secrets-not-plaintext"
    assert "Secret mlpipeline-minio-artifact key secretkey" in diagnostic.message


def test_production_rules_follow_the_stack_name_in_the_urn(policy_pack: RunningPack) -> None:
    on_dev = policy_pack.analyze(EKS_CLUSTER, "eks", OPEN_CLUSTER, stack="dev")
    assert policies_hit(on_dev) == []
    assert {n.policy_name for n in on_dev.not_applicable} == {
        "eks-control-plane-logs",
        "eks-public-endpoint-restricted",
        "eks-secrets-encryption",
    }
    on_staging = policy_pack.analyze(EKS_CLUSTER, "eks", OPEN_CLUSTER, stack="staging")
    assert policies_hit(on_staging) == ["eks-public-endpoint-restricted", "eks-secrets-encryption"]


def test_policy_config_names_more_non_production_stacks(fresh_policy_pack: RunningPack) -> None:
    relaxed = {"nonProductionStacks": ["dev", "staging"]}
    fresh_policy_pack.configure(
        {"eks-public-endpoint-restricted": relaxed, "eks-secrets-encryption": relaxed}
    )
    response = fresh_policy_pack.analyze(EKS_CLUSTER, "eks", OPEN_CLUSTER, stack="staging")
    assert policies_hit(response) == []
    response = fresh_policy_pack.analyze(EKS_CLUSTER, "eks", OPEN_CLUSTER, stack="prod")
    assert policies_hit(response) == ["eks-public-endpoint-restricted", "eks-secrets-encryption"]
