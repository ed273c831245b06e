"""The training runtimes the stacks ship, on the real render of upstream 26.03.

Every ClusterTrainingRuntime the dev, prod and onprem stacks apply keeps the Istio sidecar
out of every pod it makes (the sidecar breaks torch's rendezvous, kubeflow/trainer#2794) and
tolerates every GPU group's taints, so a TrainJob placed on a group through the release's
per-job override (``spec.podTemplateOverrides``) can land there. The placement fnjob sends
for each group survives the release's TrainJob CRD unpruned, and notebooks are told the
default runtime (``kubeflow.training.defaultRuntime``) only when Trainer is deployed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.objects import name_of, namespace_of, selector_matches
from components.kubeflow.profiles import FNJOB_PODDEFAULT, TRAINING_RUNTIME_ENV
from components.kubeflow.transform import (
    KubeflowCredentials,
    TransformError,
    apply_training_runtimes,
    transform_manifests,
)
from model import StackConfig, Taint
from model.kubeflow import kubeflow_releases
from stack.load import load_stack_file
from stack.problems import StackConfigError
from stack.program.kubeflow import plan
from stack.render import stack_plan
from tests.crd_schema import pruned
from tests.kubeflow.conftest import (
    GPU_A10,
    GPU_BOTTLEROCKET,
    REPO_ROOT,
    UpstreamRelease,
    make_args,
)

STACKS = {name: REPO_ROOT / "stacks" / f"Pulumi.{name}.yaml" for name in ("dev", "prod", "onprem")}
TRAINJOB_CRD = "trainjobs.trainer.kubeflow.org"


@dataclass(frozen=True)
class StackRender:
    config: StackConfig
    objects: Sequence[Mapping[str, Any]]

    def of_kind(self, kind: str) -> list[Mapping[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def runtime(self, name: str) -> Mapping[str, Any]:
        [found] = [r for r in self.of_kind("ClusterTrainingRuntime") if name_of(r) == name]
        return found


@pytest.fixture(scope="module")
def renders(upstream: UpstreamRelease, upstream_cache: Path) -> dict[str, StackRender]:
    out = {}
    for name, path in STACKS.items():
        _, kubeflow_plan = stack_plan(path, source=str(upstream.source), cache_dir=upstream_cache)
        out[name] = StackRender(
            load_stack_file(path, require_secrets=False),
            [o for phase in kubeflow_plan.phases for o in phase.objects],
        )
    return out


def _pod_templates(runtime: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return [(job["name"], job["template"]["spec"]["template"]) for job in jobs]


def _tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Taint) -> bool:
    """Kubernetes' rule: some toleration matches the taint's key, value and effect."""
    for toleration in tolerations:
        if toleration.get("effect") not in (None, "", taint.effect):
            continue
        key = toleration.get("key")
        if toleration.get("operator") == "Exists":
            if not key or key == taint.key:
                return True
        elif key == taint.key and toleration.get("value", "") == taint.value:
            return True
    return False


@pytest.mark.parametrize("stack", list(STACKS))
def test_every_runtime_keeps_the_sidecar_out_and_tolerates_every_gpu_group(
    renders: dict[str, StackRender], stack: str
) -> None:
    render = renders[stack]
    runtimes = render.of_kind("ClusterTrainingRuntime")
    assert sorted(name_of(r) for r in runtimes) == sorted(
        kubeflow_releases()["26.03"].training_runtimes
    )
    taints = [t for group in render.config.gpu_node_groups for t in group.taints]
    assert taints, f"{stack} has no tainted GPU group to check"
    problems = []
    for runtime in runtimes:
        for job, template in _pod_templates(runtime):
            where = f"{name_of(runtime)} {job}"
            labels = (template.get("metadata") or {}).get("labels") or {}
            if labels.get("sidecar.istio.io/inject") != "false":
                problems.append(f"{where}: Istio injects its sidecar")
            tolerations = (template.get("spec") or {}).get("tolerations") or []
            problems += [
                f"{where}: does not tolerate {taint}"
                for taint in taints
                if not _tolerates(tolerations, taint)
            ]
    assert problems == []


# How a profile namespace may be labelled for Istio: the profile controller turns injection
# on by name, or a revision label does.
INJECTION_NAMESPACES = (
    {"istio-injection": "enabled"},
    {"istio.io/rev": "default"},
    {},
)


@pytest.mark.parametrize("stack", list(STACKS))
def test_the_releases_sidecar_injectors_skip_every_training_pod(
    renders: dict[str, StackRender], stack: str
) -> None:
    """Istio's own injector webhooks, as rendered, mutate no pod of any runtime, whatever
    injection label its profile namespace carries."""
    render = renders[stack]
    injectors = [
        hook
        for config in render.of_kind("MutatingWebhookConfiguration")
        for hook in config.get("webhooks") or []
        if "sidecar-injector.istio.io" in hook["name"]
    ]
    assert len(injectors) >= 2
    injected = [
        f"{name_of(runtime)} {job} in a namespace labelled {namespace}: {hook['name']}"
        for runtime in render.of_kind("ClusterTrainingRuntime")
        for job, template in _pod_templates(runtime)
        for namespace in INJECTION_NAMESPACES
        for hook in injectors
        if selector_matches(hook.get("namespaceSelector"), namespace)
        and selector_matches(
            hook.get("objectSelector"), (template.get("metadata") or {}).get("labels") or {}
        )
    ]
    assert injected == []


@pytest.mark.parametrize("stack", list(STACKS))
def test_the_placement_fnjob_sends_survives_the_releases_trainjob_crd(
    renders: dict[str, StackRender], stack: str
) -> None:
    """For each GPU group, a TrainJob on the stack's default runtime placed on the group with
    the release's per-job override is stored as sent: nothing pruned."""
    render = renders[stack]
    [crd] = [c for c in render.of_kind("CustomResourceDefinition") if name_of(c) == TRAINJOB_CRD]
    runtime = render.config.kubeflow.training.default_runtime
    jobs = [job for job, _ in _pod_templates(render.runtime(runtime))]
    for group in render.config.gpu_node_groups:
        trainjob = {
            "apiVersion": "trainer.kubeflow.org/v1alpha1",
            "kind": "TrainJob",
            "metadata": {"name": "fnjob-train", "namespace": "team-ml"},
            "spec": {
                "runtimeRef": {"name": runtime},
                "trainer": {"numNodes": 2, "resourcesPerNode": {"limits": {"nvidia.com/gpu": 4}}},
                "podTemplateOverrides": [
                    {
                        "targetJobs": [{"name": job} for job in jobs],
                        "metadata": {"labels": {"kubeflow-eks.io/gpu-group": group.name}},
                        "spec": {
                            "nodeSelector": group.selector_labels(),
                            "tolerations": group.tolerations(),
                        },
                    }
                ],
            },
        }
        stored, dropped = pruned(trainjob, crd)
        assert dropped == [], group.name
        assert stored == trainjob


@pytest.mark.parametrize("stack", list(STACKS))
def test_notebooks_are_told_the_default_runtime(
    renders: dict[str, StackRender], stack: str
) -> None:
    render = renders[stack]
    runtime = render.config.kubeflow.training.default_runtime
    pod_defaults = [p for p in render.of_kind("PodDefault") if name_of(p) == FNJOB_PODDEFAULT]
    assert pod_defaults
    for pod_default in pod_defaults:
        env = {e["name"]: e.get("value") for e in pod_default["spec"]["env"]}
        assert env.get(TRAINING_RUNTIME_ENV) == runtime, namespace_of(pod_default)


def test_without_trainer_notebooks_are_told_no_runtime(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    # Our small fixture has the notebook webhook (PodDefaults) but no Trainer; the model's
    # default runtime (torch-distributed) is named but nothing ships it.
    objects = transform_manifests(rendered.objects, make_args(), credentials)
    assert not [o for o in objects if o.get("kind") == "ClusterTrainingRuntime"]
    pod_defaults = [o for o in objects if o.get("kind") == "PodDefault"]
    assert pod_defaults
    for pod_default in pod_defaults:
        assert TRAINING_RUNTIME_ENV not in {e["name"] for e in pod_default["spec"]["env"]}


def test_a_default_runtime_the_rendered_trainer_lacks_is_refused_naming_the_key(
    upstream: UpstreamRelease, upstream_cache: Path
) -> None:
    """A local checkout is only known once rendered; still before any resource exists."""
    config = load_stack_file(STACKS["dev"], require_secrets=False)
    kubeflow = config.kubeflow.model_copy(
        update={
            "local_path": str(upstream.source),
            "training": config.kubeflow.training.model_copy(
                update={"default_runtime": "pytorch-distributed"}
            ),
        }
    )
    with pytest.raises(StackConfigError) as refused:
        plan(config.model_copy(update={"kubeflow": kubeflow}), cache_dir=upstream_cache)
    [problem] = refused.value.problems
    assert problem.path == "kubeflow.training.defaultRuntime"
    assert "pytorch-distributed" in str(problem)
    assert "available: deepspeed-distributed, mlx-distributed, torch-distributed" in problem.fix


def _runtime(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": "custom"},
        "spec": {"template": {"spec": {"replicatedJobs": jobs}}},
    }


def test_a_runtimes_own_tolerations_stay_and_none_is_repeated() -> None:
    own = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}
    gpu = GPU_A10.taints[0].toleration()
    runtime = _runtime(
        [
            {
                "name": "worker",
                "template": {
                    "spec": {"template": {"spec": {"tolerations": [own, gpu], "containers": []}}}
                },
            }
        ]
    )
    before = copy.deepcopy(runtime)
    [out] = apply_training_runtimes([runtime], (GPU_A10, GPU_BOTTLEROCKET))
    assert runtime == before  # the shared render is never changed in place
    template = out["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    tolerations = template["spec"]["tolerations"]
    assert tolerations[:2] == [own, gpu]
    assert len(tolerations) == len({json.dumps(t, sort_keys=True) for t in tolerations})
    for taint in (*GPU_A10.taints, *GPU_BOTTLEROCKET.taints):
        assert _tolerates(tolerations, taint)
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


def test_a_runtime_of_another_shape_is_refused() -> None:
    with pytest.raises(TransformError, match="custom: replicated job worker has no pod template"):
        apply_training_runtimes([_runtime([{"name": "worker", "template": {}}])], (GPU_A10,))
    with pytest.raises(TransformError, match=r"custom has no spec\.template\.spec\.replicatedJobs"):
        apply_training_runtimes([_runtime([])], (GPU_A10,))
