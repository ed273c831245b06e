"""Node health and GPU metrics: the EKS add-ons (pinned, after the node groups, tolerating the
GPU groups' taints), the on-premises DCGM exporter (GPU nodes only), and the keys that turn
them off."""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from model import Monitoring, versions
from stack.load import load_stack_file, parse_stack_config
from stack.problems import StackConfigError
from tests.pulumi_mocks import (
    ROOT,
    STACKS,
    RecordingMocks,
    Registered,
    run_program,
    stack_file_config,
)

ADDON = "aws:eks/addon:Addon"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"
NODE_HEALTH = "eks-node-monitoring-agent"
GPU_METRICS = "amazon-cloudwatch-observability"
# The add-on's own configuration schema (aws/eks-node-monitoring-agent, tag v1.7.0,
# charts/configuration.schema.json): what EKS checks configurationValues against.
NODE_HEALTH_SCHEMA = (
    ROOT
    / "tests"
    / "fixtures"
    / "eks-addons"
    / "eks-node-monitoring-agent.configuration.schema.json"
)


def _project_keys(config: dict[str, Any]) -> dict[str, Any]:
    return {
        k.removeprefix("kubeflow-eks:"): v
        for k, v in config.items()
        if k.startswith("kubeflow-eks:")
    }


def _gpu_tolerations(stack: str) -> list[dict[str, Any]]:
    """Every toleration the stack file's GPU groups call for (as the model derives them)."""
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    seen: list[dict[str, Any]] = []
    for group in cfg.gpu_node_groups:
        for toleration in group.tolerations():
            if toleration not in seen:
                seen.append(toleration)
    return seen


@cache
def _run(stack: str, overrides: str = "{}") -> RecordingMocks:
    return run_program(stack_file_config(stack, **json.loads(overrides)), stack=stack).mocks


def _addons(mocks: RecordingMocks) -> dict[str, Registered]:
    return {a.inputs["addonName"]: a for a in mocks.of_type(ADDON)}


def _configuration(addon: Registered) -> dict[str, Any]:
    return json.loads(addon.inputs["configurationValues"])


@pytest.mark.parametrize("kubernetes", versions.SUPPORTED_KUBERNETES_VERSIONS)
def test_both_addons_are_installed_at_the_pins_of_the_stacks_kubernetes_version(
    kubernetes: str,
) -> None:
    mocks = _run("dev", json.dumps({"kubeflow-eks:kubernetesVersion": kubernetes}))
    addons = _addons(mocks)
    pins = versions.pins(kubernetes).addons
    assert addons[NODE_HEALTH].inputs["addonVersion"] == pins[NODE_HEALTH]
    assert addons[GPU_METRICS].inputs["addonVersion"] == pins[GPU_METRICS]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_addons_wait_for_every_node_group(stack: str) -> None:
    """Created before the GPU groups, their GPU DaemonSets would have no node to prove
    themselves on, and a first `pulumi up` would race the groups."""
    mocks = _run(stack)
    groups = {n.urn for n in mocks.nodes(NODE_GROUP)}
    gpu = [
        r for r in mocks.of_type(NODE_GROUP) if "kubeflow-eks.io/gpu-group" in r.inputs["labels"]
    ]
    assert gpu and len(groups) > len(gpu)
    for name in (NODE_HEALTH, GPU_METRICS):
        [addon] = [n for n in mocks.nodes(ADDON) if n.name == _addons(mocks)[name].name]
        assert groups <= mocks.waits_for(addon.urn), name


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_addons_gpu_pods_tolerate_exactly_the_gpu_groups_taints(stack: str) -> None:
    addons = _addons(_run(stack))
    wanted = _gpu_tolerations(stack)
    assert wanted, "the example stacks taint their GPU groups"
    node_health = _configuration(addons[NODE_HEALTH])
    # The agent itself tolerates every taint; its GPU health checks (dcgm-server) none.
    assert node_health == {"dcgmAgent": {"tolerations": wanted}}
    jsonschema.validate(node_health, json.loads(NODE_HEALTH_SCHEMA.read_text()))
    assert _configuration(addons[GPU_METRICS]) == {"dcgmExporter": {"tolerations": wanted}}


def test_the_cloudwatch_agent_gets_its_own_irsa_role_with_the_agent_policy() -> None:
    mocks = _run("dev")
    addon = _addons(mocks)[GPU_METRICS]
    [role] = [
        r
        for r in mocks.of_type("aws:iam/role:Role")
        if "system:serviceaccount:amazon-cloudwatch:cloudwatch-agent"
        in r.inputs["assumeRolePolicy"]
    ]
    assert addon.inputs["serviceAccountRoleArn"].endswith(f"role/{role.name}")
    attached = [
        a.inputs["policyArn"]
        for a in mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == role.name
    ]
    assert attached == ["arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"]
    assert role.inputs["path"] == "/kubeflow-eks/"


@pytest.mark.parametrize(
    ("monitoring", "installed"),
    [
        ({"gpuMetrics": False}, {NODE_HEALTH}),
        ({"nodeHealth": False}, {GPU_METRICS}),
        ({"gpuMetrics": False, "nodeHealth": False}, set()),
    ],
)
def test_the_monitoring_keys_turn_each_addon_off(
    monitoring: dict[str, bool], installed: set[str]
) -> None:
    mocks = _run("dev", json.dumps({"kubeflow-eks:monitoring": monitoring}))
    assert set(_addons(mocks)) & {NODE_HEALTH, GPU_METRICS} == installed
    trusts = [r.inputs["assumeRolePolicy"] for r in mocks.of_type("aws:iam/role:Role")]
    assert any("amazon-cloudwatch" in str(t) for t in trusts) == (GPU_METRICS in installed)


def _dcgm_objects(mocks: RecordingMocks) -> list[dict[str, Any]]:
    groups = [g for g in mocks.of_type(CONFIG_GROUP) if g.name.endswith("-dcgm-exporter-objects")]
    return [obj for g in groups for obj in g.inputs["objs"]]


def test_onprem_runs_the_pinned_dcgm_exporter_on_the_gpu_nodes_only() -> None:
    mocks = _run("onprem")
    assert not mocks.of_type(ADDON)
    [daemon_set] = [o for o in _dcgm_objects(mocks) if o["kind"] == "DaemonSet"]
    pod = daemon_set["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == [versions.image("dcgm-exporter")]
    cfg = load_stack_file(STACKS / "Pulumi.onprem.yaml", require_secrets=False)
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    # One term per GPU group, each requiring that group's labels: no other node matches.
    assert [
        {(e["key"], e["operator"], *e["values"]) for e in term["matchExpressions"]}
        for term in terms
    ] == [
        {(key, "In", value) for key, value in group.selector_labels().items()}
        for group in cfg.gpu_node_groups
    ]
    assert pod["tolerations"] == _gpu_tolerations("onprem")


@pytest.mark.parametrize("kubernetes", versions.SUPPORTED_KUBERNETES_VERSIONS)
def test_the_dcgm_exporter_objects_are_valid_kubernetes(kubernetes: str) -> None:
    objects = _dcgm_objects(_run("onprem"))
    assert {o["kind"] for o in objects} == {"Namespace", "DaemonSet", "Service"}
    for obj in objects:
        kubernetes_validate.validate(obj, f"{kubernetes}.0", strict=True)


def test_onprem_gpu_metrics_off_renders_no_exporter() -> None:
    mocks = _run("onprem", json.dumps({"kubeflow-eks:monitoring": {"gpuMetrics": False}}))
    assert _dcgm_objects(mocks) == []
    assert mocks.of_type(CONFIG_GROUP), "the rest of the stack still renders"


@pytest.mark.parametrize(
    ("monitoring", "message"),
    [
        ({"gpuMetrics": "maybe"}, "monitoring.gpuMetrics: got 'maybe'; expected true or false"),
        ({"nodeHealth": 2}, "monitoring.nodeHealth: got 2; expected true or false"),
        ({"gpuMetric": True}, "monitoring.gpuMetric:"),
    ],
)
def test_a_bad_monitoring_value_is_refused_naming_the_key(
    monitoring: dict[str, Any], message: str
) -> None:
    raw = _project_keys(stack_file_config("dev")) | {"monitoring": monitoring}
    with pytest.raises(StackConfigError) as caught:
        parse_stack_config(raw, stack="dev", region="us-west-2")
    assert any(str(p).startswith(message) for p in caught.value.problems), caught.value.problems


def test_node_health_on_premises_is_refused_naming_the_key() -> None:
    raw = _project_keys(stack_file_config("onprem")) | {"monitoring": {"nodeHealth": True}}
    with pytest.raises(StackConfigError) as caught:
        parse_stack_config(raw, stack="onprem")
    [problem] = caught.value.problems
    assert str(problem).startswith("monitoring.nodeHealth: got true; remove it")


def test_both_are_on_by_default() -> None:
    cfg = parse_stack_config(
        _project_keys(stack_file_config("dev")), stack="dev", region="us-west-2"
    )
    assert cfg.monitoring.gpu_metrics and cfg.monitoring.node_health


DOC = ROOT / "docs" / "gpu-metrics-and-node-health.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)


def test_the_doc_s_stack_keys_validate_and_its_commands_parse() -> None:
    [stack_block] = _blocks("yaml")
    monitoring = yaml.safe_load(stack_block)["config"]["kubeflow-eks:monitoring"]
    assert Monitoring.model_validate(monitoring, by_alias=True, by_name=False) == Monitoring()
    commands = _blocks("bash")
    assert len(commands) >= 4
    for command in commands:
        subprocess.run(["bash", "-n"], input=command, text=True, check=True)


def test_the_doc_s_version_table_is_the_pinned_one() -> None:
    text = DOC.read_text()
    for kubernetes in versions.SUPPORTED_KUBERNETES_VERSIONS:
        pins = versions.pins(kubernetes).addons
        assert f"| `{NODE_HEALTH}` | `{pins[NODE_HEALTH]}` |" in text
        assert f"| `{GPU_METRICS}` | `{pins[GPU_METRICS]}` |" in text
    tag = versions.image("dcgm-exporter").rsplit(":", 1)[1]
    assert f"| `{tag}` |" in text
