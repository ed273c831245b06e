"""The upgrade plan on real trees: upstream v1.10.2 -> 26.03, and the replace path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.kubeflow.upgrade import ObjectKey, plan_upgrade
from stack import upgrade_plan
from tests.kubeflow.conftest import UpstreamRelease, load_example_output

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINING_OPERATOR_CRDS = {
    f"{kind}jobs.kubeflow.org" for kind in ("jax", "mpi", "paddle", "pytorch", "tf", "xgboost")
}


@pytest.fixture(scope="module")
def before(previous_upstream: UpstreamRelease) -> list[dict[str, Any]]:
    assert previous_upstream.example_output is not None
    return load_example_output(previous_upstream.example_output)


@pytest.fixture(scope="module")
def after(upstream: UpstreamRelease) -> list[dict[str, Any]]:
    assert upstream.example_output is not None
    return load_example_output(upstream.example_output)


def test_v1_10_2_to_26_03_is_refused_for_what_it_would_delete(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    plan = plan_upgrade(before, after)
    # 585 kept by apiVersion; the AuthorizationPolicy and the generated ConfigMap are kept too.
    assert (len(plan.kept), len(plan.removed), len(plan.added)) == (587, 24, 88)
    refused = {(r.key.kind, r.key.namespace, r.key.name) for r in plan.refusals}
    assert refused == {
        ("PersistentVolumeClaim", "kubeflow", "minio-pvc"),
        *(("CustomResourceDefinition", "", name) for name in TRAINING_OPERATOR_CRDS),
    }
    assert not plan.safe
    assert plan.replacements == ()


def test_an_apiversion_move_and_a_new_hash_suffix_are_one_object_each(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    plan = plan_upgrade(before, after)
    policy = ObjectKey(
        "security.istio.io", "AuthorizationPolicy", "istio-system", "cluster-local-gateway"
    )
    assert (policy, "security.istio.io/v1beta1", "security.istio.io/v1") in plan.api_versions
    assert policy not in plan.removed and policy not in plan.added
    [(old, new)] = plan.renamed
    assert old.name.startswith("kubeflow-pipelines-profile-controller-code-")
    assert new.name.startswith("kubeflow-pipelines-profile-controller-code-")
    assert old.name != new.name


def test_istio_crds_move_their_storage_version_without_a_migration(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    plan = plan_upgrade(before, after)
    moved = [
        c for c in plan.crd_versions if (c.storage_before, c.storage_after) == ("v1beta1", "v1")
    ]
    assert len(moved) == 10
    assert all(c.name.endswith(".istio.io") for c in moved)
    # v1beta1 is still listed, so objects stored in it stay readable: nothing to migrate.
    assert not any(c.needs_migration for c in plan.crd_versions)


def test_allowing_the_deletions_by_name_makes_the_step_safe(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> None:
    allowed = [f"CustomResourceDefinition/{n}" for n in TRAINING_OPERATOR_CRDS]
    allowed.append("PersistentVolumeClaim/kubeflow/minio-pvc")
    assert plan_upgrade(before, after, allow_deletion=allowed).safe


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_an_immutable_field_change_is_a_replacement(after: list[dict[str, Any]]) -> None:
    changed = copy.deepcopy(after)
    deployment = _find(changed, "Deployment", "ml-pipeline")
    deployment["spec"]["selector"]["matchLabels"]["tier"] = "api"
    deployment["spec"]["template"]["metadata"]["labels"]["tier"] = "api"
    pvc = _find(changed, "PersistentVolumeClaim", "mysql-pv-claim")
    pvc["spec"]["storageClassName"] = "gp3-fast"
    plan = plan_upgrade(after, changed)
    replaced = {r.key.name: r.fields for r in plan.replacements}
    assert replaced == {
        "ml-pipeline": ("spec.selector",),
        "mysql-pv-claim": ("spec.storageClassName",),
    }
    # Replacing a Deployment is disruptive but loses nothing; replacing a PVC loses its data.
    assert [(r.key.name) for r in plan.refusals] == ["mysql-pv-claim"]
    step = next(s for s in plan.order if any(k.name == "ml-pipeline" for k in s.replaced))
    assert all(k.name != "ml-pipeline" for k in step.changed)


def test_a_dropped_storage_version_needs_a_migration(after: list[dict[str, Any]]) -> None:
    changed = copy.deepcopy(after)
    crd = _find(changed, "CustomResourceDefinition", "virtualservices.networking.istio.io")
    crd["spec"]["versions"] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    before = copy.deepcopy(after)
    old = _find(before, "CustomResourceDefinition", "virtualservices.networking.istio.io")
    for version in old["spec"]["versions"]:
        version["storage"] = version["name"] == "v1beta1"
    plan = plan_upgrade(before, changed)
    [refusal] = plan.refusals
    assert refusal.key.name == "virtualservices.networking.istio.io"
    assert "v1beta1 was the storage version" in refusal.reason


def test_the_cli_prints_the_plan_and_fails_on_a_refusal(
    upstream: UpstreamRelease,
    previous_upstream: UpstreamRelease,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = upgrade_plan.main(
        ["--from", str(previous_upstream.example_output), "--to", str(upstream.example_output)]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "587 objects kept (268 changed), 24 removed, 88 added" in out
    assert "REFUSED (7)" in out
    assert "PersistentVolumeClaim kubeflow/minio-pvc: deleting a PVC" in out
    assert "allow it by name (CustomResourceDefinition/pytorchjobs.kubeflow.org)" in out


def test_the_stack_allows_deletions_in_its_file(
    upstream: UpstreamRelease,
    previous_upstream: UpstreamRelease,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.dev.yaml").read_text())
    allowed = [f"CustomResourceDefinition/{n}" for n in sorted(TRAINING_OPERATOR_CRDS)]
    allowed.append("PersistentVolumeClaim/kubeflow/minio-pvc")
    stack["config"]["kubeflow-eks:kubeflow"]["allowDeletion"] = allowed
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(stack))
    code = upgrade_plan.main(
        [
            "--stack", "dev", "--stacks-dir", str(tmp_path),
            "--from", str(previous_upstream.example_output),
            "--to", str(upstream.example_output),
        ]
    )  # fmt: skip
    assert "safe: nothing users made is deleted" in capsys.readouterr().out
    assert code == 0


def test_the_stack_applied_to_the_same_tree_changes_nothing(
    upstream: UpstreamRelease, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(upstream.source)
    code = upgrade_plan.main(
        ["--stack", "dev", "--from", source, "--to", source, "--cache-dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(0 changed), 0 removed, 0 added" in out
    assert "(as the stack applies it)" in out


def test_a_side_that_is_nothing_known_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = upgrade_plan.main(["--from", str(tmp_path), "--to", str(tmp_path)])
    assert code == 2
    assert "neither a kubeflow/manifests tree" in capsys.readouterr().err
