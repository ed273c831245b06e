"""The Kubernetes side of each example stack: device plugin, Kubeflow phases, provider."""

from __future__ import annotations

import re
from functools import cache

import pytest

from stack.load import load_stack_file
from tests.pulumi_mocks import (
    STACKS,
    Registered,
    StackRun,
    is_secret,
    reveal,
    run_program,
    stack_file_config,
)

ALL_STACKS = ("dev", "prod", "onprem")


@cache
def _run(stack: str) -> StackRun:
    return run_program(stack_file_config(stack), stack=stack)


def _device_plugin(run: StackRun) -> Registered:
    (release,) = [
        r
        for r in run.mocks.of_type("kubernetes:helm.sh/v3:Release")
        if r.inputs["chart"] == "nvidia-device-plugin"
    ]
    return release


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_device_plugin_tolerates_exactly_the_gpu_groups_taints(stack: str) -> None:
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    values = _device_plugin(_run(stack)).inputs["values"]
    expected = {
        (t.key, t.value, t.effect)
        for g in cfg.gpu_node_groups
        if not g.bundles_device_plugin
        for t in g.taints
    }
    got = {(t["key"], t.get("value", ""), t["effect"]) for t in values["tolerations"]}
    assert got == expected
    assert len(values["tolerations"]) == len(expected)  # each once


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_device_plugin_runs_only_on_the_gpu_groups(stack: str) -> None:
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    values = _device_plugin(_run(stack)).inputs["values"]
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    selected = {(e["key"], tuple(e["values"])) for term in terms for e in term["matchExpressions"]}
    if cfg.is_eks:
        names = tuple(g.name for g in cfg.gpu_node_groups)
        assert selected == {("kubeflow-eks.io/gpu-group", names)}
    else:
        # On-premises nodes are found by the labels the stack file gives them.
        assert selected == {
            (key, (value,)) for g in cfg.gpu_node_groups for key, value in g.labels.items()
        }


def test_bottlerocket_groups_get_no_second_device_plugin() -> None:
    config = stack_file_config("dev")
    groups = config["kubeflow-eks:gpuNodeGroups"]
    # versions.yaml pins no verified Bottlerocket release: the group names one (a stand-in).
    bottlerocket = {
        **groups[0],
        "name": "gpu-br",
        "amiType": "BOTTLEROCKET_x86_64_NVIDIA",
        "amiReleaseVersion": "1.53.0-00000000",
    }
    config["kubeflow-eks:gpuNodeGroups"] = [*groups, bottlerocket]
    run = run_program(config, stack="dev")
    terms = _device_plugin(run).inputs["values"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    values = [v for t in terms for e in t["matchExpressions"] for v in e["values"]]
    assert "gpu-spot" in values and "gpu-br" not in values

    config["kubeflow-eks:gpuNodeGroups"] = [bottlerocket]
    only_bottlerocket = run_program(config, stack="dev")
    charts = [
        r.inputs["chart"] for r in only_bottlerocket.mocks.of_type("kubernetes:helm.sh/v3:Release")
    ]
    assert "nvidia-device-plugin" not in charts


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_kubeflow_phases_are_applied_in_order(stack: str) -> None:
    run = _run(stack)
    groups = [
        r
        for r in run.mocks.of_type("kubernetes:yaml/v2:ConfigGroup")
        if re.search(r"-kubeflow-\d\d-", r.name)
    ]
    # Registration order under mocks is not deterministic; the dependencies are the order.
    names = sorted(g.name for g in groups)
    phase_of = {name: name.split("-kubeflow-", 1)[1][:2] for name in names}
    for name in names:
        phase = int(phase_of[name])
        earlier = [n for n in run.mocks.dependencies[name] if n in phase_of]
        if phase == 1:
            assert earlier == []
        else:
            assert earlier, f"{name} depends on no earlier phase"
            assert {int(phase_of[n]) for n in earlier} == {phase - 1}
    first = next(n for n in names if phase_of[n] == "01")
    first_kinds = {
        o["kind"] for o in reveal(next(g for g in groups if g.name == first).inputs["objs"])
    }
    assert first_kinds <= {"Namespace", "CustomResourceDefinition"}
    # Webhook configurations are applied after the services behind them exist.
    for group in groups:
        objs = reveal(group.inputs["objs"])
        kinds = {o["kind"] for o in objs}
        # Generated credentials are applied as secrets, and only Secrets carry them.
        assert is_secret(group.inputs["objs"]) == (kinds == {"Secret"}), group.name
        if kinds & {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}:
            assert "webhooks" in group.name


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_kubernetes_objects_go_through_the_stack_provider(stack: str) -> None:
    run = _run(stack)
    (provider,) = run.mocks.of_type("pulumi:providers:kubernetes")
    for resource in run.mocks.resources:
        if resource.typ.startswith("kubernetes:"):
            assert resource.provider and provider.name in resource.provider, resource.name


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_kubeflow_waits_for_the_cluster_to_be_ready(stack: str) -> None:
    run = _run(stack)
    (kubeflow,) = run.mocks.of_type("kubeflow-eks:kubeflow:Kubeflow")
    deps = run.mocks.dependencies[kubeflow.name]
    if stack == "onprem":
        assert deps == []
    else:
        assert any(d.endswith("-system-ng") for d in deps)
        assert any(d.endswith("-ebs-class") for d in deps)


@pytest.mark.parametrize("stack", ALL_STACKS)
def test_outputs_say_how_to_log_in(stack: str) -> None:
    cfg = load_stack_file(STACKS / f"Pulumi.{stack}.yaml", require_secrets=False)
    outputs = _run(stack).outputs
    assert outputs["kubeflowAdmin"] == cfg.kubeflow.admin_email
    assert outputs["kubeflowUrl"] == cfg.kubeflow.url
    if cfg.kubeflow.ingress == "port-forward":
        assert outputs["kubeflowPortForward"].startswith("kubectl port-forward -n istio-system")
    else:  # reached by name: port-forwarding is not the way in
        assert "kubeflowPortForward" not in outputs
