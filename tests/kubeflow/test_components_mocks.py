"""The Pulumi components under mocks: what gets registered, in which order, with which inputs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import bcrypt
import pulumi
import pulumi_kubernetes as k8s
import pytest

import components.kubeflow.component as kubeflow_module
from components.kubeflow.component import DeployInputs, Kubeflow, bcrypt_hash_with_seed
from components.kubeflow.manifests import upstream_components
from tests.kubeflow.conftest import (
    ADMIN_PASSWORD,
    DOCKER_CONFIG,
    FIXTURE_SOURCE,
    make_args,
)
from tests.pulumi_mocks import RecordingMocks, is_secret, run_program

CONFIG_GROUP = "kubernetes:yaml/v2:ConfigGroup"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"


def _decode(value: Any) -> Any:
    assert is_secret(value), "expected a Pulumi secret"
    return value["value"]


@pytest.fixture
def recorded_dependencies(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The depends_on each ConfigGroup was given, by name."""
    seen: dict[str, list[str]] = {}
    original = kubeflow_module.ConfigGroup

    class RecordingConfigGroup(original):  # type: ignore[misc, valid-type]
        def __init__(self, name: str, args: Any, opts: pulumi.ResourceOptions) -> None:
            seen[name] = [d._name for d in (opts.depends_on or [])]  # type: ignore[union-attr]
            super().__init__(name, args, opts=opts)

    monkeypatch.setattr(kubeflow_module, "ConfigGroup", RecordingConfigGroup)
    return seen


def _kubeflow_program(tmp_path: Path, **arg_overrides: Any) -> Any:
    def program() -> dict[str, Any]:
        provider = k8s.Provider("k8s", kubeconfig="{}")
        kf = Kubeflow(
            "kubeflow",
            make_args(**arg_overrides),
            admin_password=pulumi.Output.secret(ADMIN_PASSWORD),
            deploy=DeployInputs(
                docker_configs={"team-vision": pulumi.Output.secret(DOCKER_CONFIG)}
            ),
            cache_dir=tmp_path,
            opts=pulumi.ResourceOptions(providers=[provider]),
        )
        return {
            "admin": kf.admin_email,
            "port_forward": kf.dashboard_port_forward,
        }

    return program


def test_phases_are_registered_in_order_each_depending_on_the_previous(
    tmp_path: Path, recorded_dependencies: dict[str, list[str]]
) -> None:
    run = run_program({}, _kubeflow_program(tmp_path), mocks=RecordingMocks())
    # Registration order under mocks is not deterministic; the dependencies are the order.
    groups = sorted(r.name for r in run.mocks.of_type(CONFIG_GROUP))
    assert groups == [
        "kubeflow-01-namespaces-crds",
        "kubeflow-02-platform",
        "kubeflow-03-platform-webhooks",
        "kubeflow-04-applications",
        "kubeflow-04-applications-secrets",
        "kubeflow-05-application-webhooks",
    ]
    assert recorded_dependencies == {
        "kubeflow-01-namespaces-crds": [],
        "kubeflow-02-platform": ["kubeflow-01-namespaces-crds"],
        "kubeflow-03-platform-webhooks": ["kubeflow-02-platform"],
        "kubeflow-04-applications": ["kubeflow-03-platform-webhooks"],
        "kubeflow-04-applications-secrets": ["kubeflow-03-platform-webhooks"],
        "kubeflow-05-application-webhooks": [
            "kubeflow-04-applications",
            "kubeflow-04-applications-secrets",
        ],
    }
    assert run.outputs["admin"] == "ada@research.example.org"
    assert "port-forward" in run.outputs["port_forward"]


def test_config_groups_carry_every_object_and_only_secrets_are_secret(tmp_path: Path) -> None:
    run = run_program({}, _kubeflow_program(tmp_path), mocks=RecordingMocks())
    by_name = {r.name: r for r in run.mocks.of_type(CONFIG_GROUP)}
    secrets = _decode(by_name["kubeflow-04-applications-secrets"].inputs["objs"])
    for name, resource in by_name.items():
        assert is_secret(resource.inputs["objs"]) == name.endswith("-secrets"), name
    assert {o["kind"] for o in secrets} == {"Secret"}
    plain = by_name["kubeflow-04-applications"].inputs["objs"]
    assert isinstance(plain, list) and "Secret" not in {o["kind"] for o in plain}
    # The real generated values reached the objects, consistent between dex and oauth2-proxy.
    values = {
        o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o["data"].items()}
        for o in secrets
        if o["metadata"].get("namespace") in ("auth", "oauth2-proxy")
    }
    proxy = next(v for n, v in values.items() if n.startswith("oauth2-proxy"))
    assert values["dex-oidc-client"]["OIDC_CLIENT_SECRET"] == proxy["client-secret"]
    assert len(proxy["client-secret"]) == 32
    assert "GENERATED-BY-STACK" not in json.dumps(secrets)
    stored_hash = values["dex-passwords"]["DEX_USER_PASSWORD"]
    assert bcrypt.checkpw(ADMIN_PASSWORD.encode(), stored_hash.encode())


def test_generated_secrets_are_random_passwords_owned_by_the_component(tmp_path: Path) -> None:
    run = run_program({}, _kubeflow_program(tmp_path), mocks=RecordingMocks())
    names = sorted(r.name for r in run.mocks.of_type(RANDOM_PASSWORD))
    assert names == [
        "kubeflow-admin-password-salt-seed",
        "kubeflow-katib-db-password",
        "kubeflow-oauth2-proxy-cookie-secret",
        "kubeflow-object-store-access-key",
        "kubeflow-object-store-secret-key",
        "kubeflow-oidc-client-secret",
        "kubeflow-pipelines-db-password",
    ]
    cookie = run.mocks.named("kubeflow-oauth2-proxy-cookie-secret")
    assert cookie.inputs["length"] in (16, 24, 32)


def test_admin_hash_is_stable_for_the_same_seed_and_changes_with_it() -> None:
    first = bcrypt_hash_with_seed(ADMIN_PASSWORD, "seed-a", rounds=4)
    assert first == bcrypt_hash_with_seed(ADMIN_PASSWORD, "seed-a", rounds=4)
    assert first != bcrypt_hash_with_seed(ADMIN_PASSWORD, "seed-b", rounds=4)
    assert bcrypt.checkpw(ADMIN_PASSWORD.encode(), first.encode())


def test_a_subset_with_dangling_references_is_refused_before_any_child_resource(
    tmp_path: Path,
) -> None:
    without_gateway = tuple(
        e
        for e in upstream_components(FIXTURE_SOURCE)
        if e != "../common/istio/kubeflow-istio-resources/base"
    )
    mocks = RecordingMocks()
    with pytest.raises(Exception, match="kubeflow-istio-resources"):
        run_program({}, _kubeflow_program(tmp_path, components=without_gateway), mocks=mocks)
    assert mocks.of_type(CONFIG_GROUP) == []
    assert mocks.of_type(RANDOM_PASSWORD) == []


@pytest.fixture
def recorded_groups(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Any, Any]]:
    """Each ConfigGroup's resource prefix and transforms, by name."""
    seen: dict[str, tuple[Any, Any]] = {}
    original = kubeflow_module.ConfigGroup

    class RecordingConfigGroup(original):  # type: ignore[misc, valid-type]
        def __init__(self, name: str, args: Any, opts: pulumi.ResourceOptions) -> None:
            seen[name] = (args.resource_prefix, opts.transforms)
            super().__init__(name, args, opts=opts)

    monkeypatch.setattr(kubeflow_module, "ConfigGroup", RecordingConfigGroup)
    return seen


def _child(prefix: str, obj: dict[str, Any]) -> pulumi.ResourceTransformArgs:
    """How a ConfigGroup registers one of its objects (the provider names it after the prefix)."""
    metadata = obj["metadata"]
    where = f"{metadata['namespace']}/{metadata['name']}" if "namespace" in metadata else ""
    return pulumi.ResourceTransformArgs(
        custom=True,
        type_=f"kubernetes:{obj['apiVersion']}:{obj['kind']}",
        name=f"{prefix}:{where or metadata['name']}",
        props=obj,
        opts=pulumi.ResourceOptions(),
    )


def test_an_object_keeps_its_name_whichever_phase_applies_it(
    tmp_path: Path, recorded_groups: dict[str, tuple[Any, Any]]
) -> None:
    run_program({}, _kubeflow_program(tmp_path), mocks=RecordingMocks())
    prefixes = {prefix for prefix, _ in recorded_groups.values()}
    # Before, each ConfigGroup's name (its phase) prefixed its objects' names.
    assert prefixes == {"kubeflow"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "ml-pipeline", "namespace": "kubeflow"},
    }
    # The same object applied by the platform phase, then by the applications phase: one name,
    # and the names stacks deployed under the old scheme gave it, as aliases.
    results = []
    for group in ("kubeflow-02-platform", "kubeflow-04-applications"):
        [transform] = recorded_groups[group][1]
        result = transform(_child("kubeflow", deployment))
        assert result is not None
        results.append(result)
    assert {
        "kubeflow-02-platform:kubeflow/ml-pipeline",
        "kubeflow-04-applications:kubeflow/ml-pipeline",
    } <= {a.name for a in results[0].opts.aliases}
    assert [a.name for a in results[0].opts.aliases] == [a.name for a in results[1].opts.aliases]
    assert not results[0].opts.retain_on_delete


def test_user_data_outlives_the_stack_unless_it_allows_the_deletion(
    tmp_path: Path, recorded_groups: dict[str, tuple[Any, Any]]
) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "notebooks.kubeflow.org"},
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "mysql-pv-claim", "namespace": "kubeflow"},
    }
    profile = {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": {"name": "team"}}
    run_program(
        {},
        _kubeflow_program(
            tmp_path, allow_deletion=("PersistentVolumeClaim/kubeflow/mysql-pv-claim",)
        ),
        mocks=RecordingMocks(),
    )
    [transform] = recorded_groups["kubeflow-01-namespaces-crds"][1]
    retained = {}
    for obj in (crd, pvc, profile):
        result = transform(_child("kubeflow", obj))
        assert result is not None
        retained[obj["kind"]] = bool(result.opts.retain_on_delete)
    assert retained == {
        "CustomResourceDefinition": True,
        "PersistentVolumeClaim": False,
        "Profile": True,
    }
    # The ConfigGroup itself is left alone.
    group = pulumi.ResourceTransformArgs(
        custom=False,
        type_=CONFIG_GROUP,
        name="kubeflow-02-platform",
        props={},
        opts=pulumi.ResourceOptions(),
    )
    assert transform(group) is None
