"""The data scientist's loop on EKS, under mocks: the notebook image, each profile's ECR prefix
and push identity, and what its notebooks are told (the rendered PodDefault and form)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from components.aws.registry import PULL_ACTIONS
from model import versions
from tests.pulumi_mocks import ACCOUNT, RecordingMocks, StackRun, file_config, reveal, run_program

CASE = "notebook-image-built"
FILE = Path(__file__).parent / "files" / "good" / f"Pulumi.{CASE}.yaml"
CLUSTER = f"kubeflow-{CASE}"
REGISTRY_HOST = f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com"
PROFILES = ("team-ml", "research", "kubeflow-user-example-com")


@cache
def _run() -> StackRun:
    return run_program(file_config(FILE), stack=CASE)


def _named(mocks: RecordingMocks, typ: str, part: str) -> dict[str, Any]:
    [found] = [r.inputs for r in mocks.of_type(typ) if r.name.endswith(part)]
    return found


def _kubeflow_objects(mocks: RecordingMocks) -> list[dict[str, Any]]:
    groups = [g for g in mocks.of_type("kubernetes:yaml/v2:ConfigGroup") if "-kubeflow-0" in g.name]
    return [o for g in groups for o in reveal(g.inputs["objs"])]


def test_each_profile_gets_its_own_ecr_prefix_scanned_and_trimmed() -> None:
    mocks = _run().mocks
    for profile in PROFILES:
        repository = _named(mocks, "aws:ecr/repository:Repository", f"registries-{profile}")
        assert repository["name"] == f"{CLUSTER}/{profile}/fnjob"
        assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
        lifecycle = _named(
            mocks, "aws:ecr/lifecyclePolicy:LifecyclePolicy", f"registries-{profile}"
        )
        [rule] = json.loads(lifecycle["policy"])["rules"]
        assert rule["selection"] == {
            "tagStatus": "untagged",
            "countType": "imageCountMoreThan",
            "countNumber": 15,
        }
        template = _named(
            mocks,
            "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate",
            f"registries-{profile}",
        )
        assert template["prefix"] == f"{CLUSTER}/{profile}"
        assert template["appliedFors"] == ["CREATE_ON_PUSH"]
        assert json.loads(template["lifecyclePolicy"]) == json.loads(lifecycle["policy"])


def test_each_profile_role_trusts_only_its_editor_and_pushes_only_under_its_prefix() -> None:
    mocks = _run().mocks
    for profile in PROFILES:
        role = _named(mocks, "aws:iam/role:Role", f"registries-{profile}")
        assert len(role["namePrefix"]) <= 38
        [trust] = json.loads(role["assumeRolePolicy"])["Statement"]
        assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        assert trust["Condition"]["StringEquals"] == {
            "aws:RequestTag/eks-cluster-arn": f"arn:aws:eks:us-west-2:{ACCOUNT}:cluster/{CLUSTER}",
            "aws:RequestTag/kubernetes-namespace": profile,
            "aws:RequestTag/kubernetes-service-account": "default-editor",
        }
        policy = json.loads(
            _named(mocks, "aws:iam/rolePolicy:RolePolicy", f"registries-{profile}")["policy"]
        )
        by_resource = {json.dumps(s["Resource"]): s["Action"] for s in policy["Statement"]}
        own = f"arn:aws:ecr:us-west-2:{ACCOUNT}:repository/{CLUSTER}/{profile}/*"
        assert "ecr:PutImage" in by_resource[json.dumps(own)]
        # Nothing else may be written to; the notebook image (the jobs' base) may be read.
        writable = [s for s in policy["Statement"] if "ecr:PutImage" in s["Action"]]
        assert [s["Resource"] for s in writable] == [own]
        notebook = f"arn:aws:ecr:us-west-2:{ACCOUNT}:repository/{CLUSTER}/notebook"
        assert by_resource[json.dumps([notebook])] == list(PULL_ACTIONS)
        association = _named(
            mocks, "aws:eks/podIdentityAssociation:PodIdentityAssociation", f"registries-{profile}"
        )
        assert (association["namespace"], association["serviceAccount"]) == (
            profile,
            "default-editor",
        )


def test_the_notebook_image_is_built_from_the_recipe_and_pinned_by_digest() -> None:
    run = _run()
    image = _named(run.mocks, "docker-build:index:Image", "notebook-image")
    assert image["context"]["location"].endswith("images/notebook")
    assert image["context"]["named"]["fnjob"]["location"].endswith("fnjob")
    assert image["dockerfile"]["location"].endswith("images/notebook/Dockerfile")
    pins = versions.pins(versions.DEFAULT_KUBERNETES_VERSION)
    assert image["buildArgs"] == {
        "BASE_IMAGE": versions.notebook_base("scipy"),
        "KUBECTL_IMAGE": f"registry.k8s.io/kubectl:{pins.kubectl}",
    }
    assert image["push"] is True and image["platforms"] == ["linux/amd64"]
    [registry] = image["registries"]
    assert registry["address"] == f"{REGISTRY_HOST}/{CLUSTER}/notebook"
    ref = run.outputs["notebookImage"]
    assert ref.startswith(f"{REGISTRY_HOST}/{CLUSTER}/notebook@sha256:")
    repository = _named(run.mocks, "aws:ecr/repository:Repository", "notebook-repo")
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}


def test_notebooks_are_told_their_registry_base_image_and_gpu_groups() -> None:
    run = _run()
    objects = _kubeflow_objects(run.mocks)
    ref = run.outputs["notebookImage"]
    for profile in PROFILES:
        [pod_default] = [
            o
            for o in objects
            if o["kind"] == "PodDefault" and o["metadata"]["namespace"] == profile
        ]
        env = {e["name"]: e["value"] for e in pod_default["spec"]["env"]}
        assert env["FNJOB_REGISTRY"] == f"{REGISTRY_HOST}/{CLUSTER}/{profile}"
        assert env["FNJOB_BASE_IMAGE"] == ref
        # A job started without a timeout stops after kubeflow.jobTimeoutHours (24 by default).
        assert env["FNJOB_DEFAULT_TIMEOUT"] == str(24 * 3600)
        [groups] = [
            o
            for o in objects
            if o["kind"] == "ConfigMap"
            and o["metadata"]["namespace"] == profile
            and o["metadata"]["name"] == "fnjob-gpu-groups"
        ]
        document = json.loads(groups["data"]["gpu-groups.json"])
        [spot] = document["groups"]
        assert spot["nodeSelector"] == {"kubeflow-eks.io/gpu-group": "gpu-spot"}
        assert {t["key"] for t in spot["tolerations"]} == {"nvidia.com/gpu", "capacity"}
    [form] = [
        yaml.safe_load(o["data"]["spawner_ui_config.yaml"])["spawnerFormDefaults"]
        for o in objects
        if o["kind"] == "ConfigMap" and "spawner_ui_config.yaml" in (o.get("data") or {})
    ]
    assert form["image"]["options"][0] == ref
    assert "kubeflow-eks.io/fnjob" in form["configurations"]["value"]
    assert run.outputs["jobRegistries"]["team-ml"] == f"{REGISTRY_HOST}/{CLUSTER}/team-ml"
