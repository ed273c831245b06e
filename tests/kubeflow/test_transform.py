"""Each transformation of the rendered fixture, asserted on the objects the stack applies."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import bcrypt
import pytest
import yaml

from components.kubeflow.component import bcrypt_hash_with_seed
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.transform import (
    CONFIG_DIGEST_ANNOTATION,
    DefaultCredentialError,
    KubeflowConfigError,
    KubeflowCredentials,
    find_default_credentials,
    secret_values,
    transform_manifests,
)
from model import OnpremGpuGroup, Taint
from model.kubeflow import Profile
from tests.kubeflow.conftest import (
    ADMIN_DOCKER_CONFIG,
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DOCKER_CONFIG,
    GPU_A10,
    GPU_BOTTLEROCKET,
    UpstreamRelease,
    make_args,
    make_upstream_args,
)

WEB_APPS = (
    "jupyter-web-app-deployment",
    "volumes-web-app-deployment",
    "tensorboards-web-app-deployment",
)


def find(objects: Sequence[Mapping[str, Any]], kind: str, name: str, namespace: str = "") -> Any:
    matches = [
        o
        for o in objects
        if o["kind"] == kind
        and (o["metadata"]["name"] == name or o["metadata"]["name"].startswith(name + "-"))
        and o["metadata"].get("namespace", "") == namespace
    ]
    assert len(matches) == 1, f"{kind} {namespace}/{name}: {len(matches)} matches"
    return matches[0]


def env_of(deployment: Mapping[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def spawner(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    config_map = find(objects, "ConfigMap", "jupyter-web-app-config", "kubeflow")
    return yaml.safe_load(config_map["data"]["spawner_ui_config.yaml"])["spawnerFormDefaults"]


# --- HTTP / HTTPS ----------------------------------------------------------------------------


def test_http_mode_turns_secure_cookies_off(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    out = transform_manifests(rendered.objects, make_args(protocol="http"), credentials)
    for app in WEB_APPS:
        assert env_of(find(out, "Deployment", app, "kubeflow"))["APP_SECURE_COOKIES"] == "false"
    params = find(out, "ConfigMap", "oauth2-proxy-parameters", "oauth2-proxy")
    assert params["data"]["FORCE_HTTPS"] == "false"


def test_https_mode_keeps_every_cookie_secure(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    out = transform_manifests(rendered.objects, make_args(protocol="https"), credentials)
    for app in WEB_APPS:
        assert env_of(find(out, "Deployment", app, "kubeflow"))["APP_SECURE_COOKIES"] == "true"
    # Upstream ships oauth2-proxy with FORCE_HTTPS=false; HTTPS mode makes its cookie secure.
    params = find(out, "ConfigMap", "oauth2-proxy-parameters", "oauth2-proxy")
    assert params["data"]["FORCE_HTTPS"] == "true"


# --- credentials -----------------------------------------------------------------------------


def test_dex_static_user_is_the_stack_admin_with_a_bcrypt_of_the_stack_password(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    out = transform_manifests(rendered.objects, make_args(), credentials)
    config = yaml.safe_load(find(out, "ConfigMap", "dex", "auth")["data"]["config.yaml"])
    assert [u["email"] for u in config["staticPasswords"]] == [ADMIN_EMAIL]
    assert config["staticPasswords"][0]["hashFromEnv"] == "DEX_USER_PASSWORD"
    stored = secret_values(find(out, "Secret", "dex-passwords", "auth"))["DEX_USER_PASSWORD"]
    assert bcrypt.checkpw(ADMIN_PASSWORD.encode(), stored.encode())
    assert not bcrypt.checkpw(b"12341234", stored.encode())


def test_oidc_client_secret_is_the_same_in_dex_and_oauth2_proxy(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    out = transform_manifests(rendered.objects, make_args(), credentials)
    dex_side = secret_values(find(out, "Secret", "dex-oidc-client", "auth"))
    proxy_side = secret_values(find(out, "Secret", "oauth2-proxy", "oauth2-proxy"))
    assert dex_side["OIDC_CLIENT_SECRET"] == proxy_side["client-secret"]
    assert dex_side["OIDC_CLIENT_SECRET"] == credentials.oidc_client_secret
    # The client id stays as upstream wires it on both sides.
    assert dex_side["OIDC_CLIENT_ID"] == proxy_side["client-id"]
    assert proxy_side["cookie-secret"] == credentials.oauth2_proxy_cookie_secret
    assert len(proxy_side["cookie-secret"].encode()) in (16, 24, 32)


def test_database_and_object_store_credentials_are_the_stacks(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    out = transform_manifests(rendered.objects, make_args(), credentials)
    katib = secret_values(find(out, "Secret", "katib-mysql-secrets", "kubeflow"))
    assert katib["MYSQL_ROOT_PASSWORD"] == credentials.katib_db_password
    kfp_db = secret_values(find(out, "Secret", "mysql-secret", "kubeflow"))
    assert kfp_db["password"] == credentials.pipelines_db_password
    store = secret_values(find(out, "Secret", "mlpipeline-minio-artifact", "kubeflow"))
    assert store["accesskey"] == credentials.pipelines_object_store_access_key
    assert store["secretkey"] == credentials.pipelines_object_store_secret_key
    # Pipelines' MySQL must now require that password instead of allowing an empty one.
    mysql_env = env_of(find(out, "Deployment", "mysql", "kubeflow"))
    assert "MYSQL_ALLOW_EMPTY_PASSWORD" not in mysql_env
    assert mysql_env["MYSQL_ROOT_PASSWORD"] == {
        "secretKeyRef": {"name": "mysql-secret", "key": "password"}
    }


def test_no_upstream_default_credential_survives(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    # The fixture really does carry them (otherwise this test could not fail)...
    before = find_default_credentials(rendered.objects)
    assert len(before) >= 6
    out = transform_manifests(rendered.objects, make_args(), credentials)
    # ...and none is left in any object, in any encoding we know.
    assert find_default_credentials(out) == []
    text = json.dumps(out)
    for default in ("12341234", "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok", "minio123"):
        assert default not in text
        assert base64.b64encode(default.encode()).decode() not in text
    assert "user@example.com" not in text


def test_a_default_credential_in_an_untransformed_object_fails_loudly(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    extra = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "some-new-upstream-secret", "namespace": "kubeflow"},
        "stringData": {"password": "minio123"},
    }
    with pytest.raises(DefaultCredentialError, match="some-new-upstream-secret"):
        transform_manifests([*rendered.objects, extra], make_args(), credentials)


def test_transforms_do_not_modify_the_cached_render(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    snapshot = copy.deepcopy(list(rendered.objects))
    transform_manifests(rendered.objects, make_args(), credentials)
    assert list(rendered.objects) == snapshot


# --- notebook spawner ------------------------------------------------------------------------


def test_spawner_offers_one_toleration_group_and_affinity_per_gpu_group(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    out = transform_manifests(rendered.objects, make_args(), credentials)
    form = spawner(out)
    groups = {o["groupKey"]: o["tolerations"] for o in form["tolerationGroup"]["options"]}
    assert groups == {
        "a10g": [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ],
        "l4-bottlerocket": [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
        ],
    }
    affinities = {o["configKey"]: o["affinity"] for o in form["affinityConfig"]["options"]}
    assert set(affinities) == {"a10g", "l4-bottlerocket"}
    term = affinities["a10g"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert term == [{"key": "kubeflow-eks.io/gpu-group", "operator": "In", "values": ["a10g"]}]
    assert form["gpus"]["value"]["vendors"] == [{"limitsKey": "nvidia.com/gpu", "uiName": "NVIDIA"}]
    assert form["gpus"]["value"]["vendor"] == "nvidia.com/gpu"


def test_spawner_appends_extra_notebook_images_after_upstreams(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    before = spawner(rendered.objects)["image"]["options"]
    out = transform_manifests(rendered.objects, make_args(), credentials)
    after = spawner(out)["image"]["options"]
    assert after == [*before, "registry.corp.example/notebooks/torch:2.5"]


def test_onprem_group_affinity_uses_its_configured_labels(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    onprem = OnpremGpuGroup(
        name="lab-rtx",
        labels={"lab.example/gpu": "rtx4090"},
        taints=(Taint(key="lab.example/gpu", effect="NoSchedule"),),
    )
    out = transform_manifests(rendered.objects, make_args(gpu_groups=(onprem,)), credentials)
    form = spawner(out)
    [option] = form["affinityConfig"]["options"]
    terms = option["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchExpressions": [{"key": "lab.example/gpu", "operator": "In", "values": ["rtx4090"]}]}
    ]
    [group] = form["tolerationGroup"]["options"]
    assert group["tolerations"] == [
        {"key": "lab.example/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


# --- profiles and registry access ------------------------------------------------------------


def test_each_profile_pulls_and_pushes_with_its_own_credentials(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    out = transform_manifests(rendered.objects, make_args(), credentials)
    profile = find(out, "Profile", "team-vision")
    assert profile["spec"]["owner"] == {"kind": "User", "name": "lin@research.example.org"}
    # Pre-created with the owner annotation, which is how the profile controller adopts it.
    namespace = find(out, "Namespace", "team-vision")
    assert namespace["metadata"]["annotations"] == {"owner": "lin@research.example.org"}
    pull = find(out, "Secret", "registry-credentials", "team-vision")
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    assert json.loads(secret_values(pull)[".dockerconfigjson"]) == json.loads(DOCKER_CONFIG)
    account = find(out, "ServiceAccount", "default-editor", "team-vision")
    assert account["imagePullSecrets"] == [{"name": "registry-credentials"}]
    # Upstream's example profile now belongs to the admin, with the admin's credentials.
    assert find(out, "Profile", "kubeflow-user-example-com")["spec"]["owner"]["name"] == ADMIN_EMAIL
    admin_pull = find(out, "Secret", "registry-credentials", "kubeflow-user-example-com")
    assert json.loads(secret_values(admin_pull)[".dockerconfigjson"]) == json.loads(
        ADMIN_DOCKER_CONFIG
    )
    # No namespace holds another's credentials.
    team_secrets = [
        secret_values(o)
        for o in out
        if o["kind"] == "Secret" and o["metadata"].get("namespace") == "team-vision"
    ]
    assert all(ADMIN_DOCKER_CONFIG not in v.values() for v in team_secrets)


@pytest.mark.parametrize("mode", ["ecr", "none"])
def test_without_docker_config_profiles_get_no_credentials(
    rendered: RenderedManifests, credentials: KubeflowCredentials, mode: str
) -> None:
    out = transform_manifests(rendered.objects, make_args(registry_access=mode), credentials)
    find(out, "Profile", "team-vision")
    in_namespace = [o for o in out if o["metadata"].get("namespace") == "team-vision"]
    assert {o["kind"] for o in in_namespace} == {"ConfigMap", "PodDefault", "NetworkPolicy"}


def test_a_profile_without_credentials_gets_no_pull_secret(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    only_admin = dataclasses.replace(
        credentials, docker_configs={"kubeflow-user-example-com": ADMIN_DOCKER_CONFIG}
    )
    out = transform_manifests(rendered.objects, make_args(), only_admin)
    kinds = {o["kind"] for o in out if o["metadata"].get("namespace") == "team-vision"}
    assert "Secret" not in kinds and "ServiceAccount" not in kinds


def test_profile_clashing_with_upstreams_is_rejected(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    # The model refuses upstream's example profile by name; a local manifests tree may
    # define other profiles.
    theirs = {"apiVersion": "kubeflow.org/v1", "kind": "Profile", "metadata": {"name": "team-x"}}
    args = make_args(profiles=(Profile(name="team-x", owner="x@y.org"),))
    with pytest.raises(KubeflowConfigError, match="team-x"):
        transform_manifests([*rendered.objects, theirs], args, credentials)


def test_generated_credentials_are_checked_and_never_shown(
    credentials: KubeflowCredentials,
) -> None:
    with pytest.raises(KubeflowConfigError, match="16, 24 or 32 bytes"):
        dataclasses.replace(credentials, oauth2_proxy_cookie_secret="short-one")
    with pytest.raises(KubeflowConfigError, match="bcrypt"):
        dataclasses.replace(credentials, admin_password_hash="12341234")
    assert "oidc" not in repr(credentials)


def test_bottlerocket_groups_are_still_offered_in_the_form(
    rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    # They bundle their own device plugin, but notebooks can still use their GPUs.
    out = transform_manifests(
        rendered.objects, make_args(gpu_groups=(GPU_BOTTLEROCKET,)), credentials
    )
    assert [o["groupKey"] for o in spawner(out)["tolerationGroup"]["options"]] == [
        "l4-bottlerocket"
    ]


# --- upstream's real release -----------------------------------------------------------------


def effective_env(objects: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any]) -> dict:
    """A Deployment's first container env as the pod sees it: whole ConfigMaps (`envFrom`),
    then literal values and values taken from the rendered ConfigMaps (`configMapKeyRef`),
    which win."""
    namespace = deployment["metadata"]["namespace"]
    maps = {
        o["metadata"]["name"]: o.get("data", {})
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"].get("namespace") == namespace
    }
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {}).get("configMapKeyRef")
        env[entry["name"]] = maps[source["name"]][source["key"]] if source else entry.get("value")
    return env


def test_upstream_no_default_credential_survives(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
) -> None:
    # Upstream really ships them (otherwise this test could not fail)...
    before = find_default_credentials(upstream_rendered.objects)
    assert len(before) >= 6, before
    out = transform_manifests(
        upstream_rendered.objects, make_upstream_args(upstream.source), credentials
    )
    # ...and none is left in any of the 675 objects, in any encoding we know.
    assert find_default_credentials(out) == []
    text = json.dumps(out)
    for default in ("12341234", "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok", "minio123"):
        assert default not in text
        assert base64.b64encode(default.encode()).decode() not in text
    assert "user@example.com" not in text


@pytest.mark.parametrize("http_mode", [True, False])
def test_upstream_secure_cookies_follow_the_protocol(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
    http_mode: bool,
) -> None:
    args = make_upstream_args(upstream.source, protocol="http" if http_mode else "https")
    out = transform_manifests(upstream_rendered.objects, args, credentials)
    secure = "false" if http_mode else "true"
    # The KServe models web app reads its settings from a ConfigMap (envFrom).
    for app in (*WEB_APPS, "kserve-models-web-app"):
        env = effective_env(out, find(out, "Deployment", app, "kubeflow"))
        # Unset, the web apps default to secure cookies.
        assert env.get("APP_SECURE_COOKIES", "true") == secure, app
    proxy = effective_env(out, find(out, "Deployment", "oauth2-proxy", "oauth2-proxy"))
    assert proxy["OAUTH2_PROXY_COOKIE_SECURE"] == secure


def test_upstream_notebook_form_offers_the_gpu_groups_and_images(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
) -> None:
    before = spawner(upstream_rendered.objects)
    out = transform_manifests(
        upstream_rendered.objects, make_upstream_args(upstream.source), credentials
    )
    form = spawner(out)
    assert form["image"]["options"] == [
        *before["image"]["options"],
        "registry.corp.example/notebooks/torch:2.5",
    ]
    tolerations = {o["groupKey"]: o["tolerations"] for o in form["tolerationGroup"]["options"]}
    assert tolerations == {g.name: g.tolerations() for g in (GPU_A10, GPU_BOTTLEROCKET)}
    affinities = {o["configKey"]: o["affinity"] for o in form["affinityConfig"]["options"]}
    assert affinities == {g.name: g.node_affinity() for g in (GPU_A10, GPU_BOTTLEROCKET)}
    assert form["gpus"]["value"]["vendors"] == [{"limitsKey": "nvidia.com/gpu", "uiName": "NVIDIA"}]
    # Everything else upstream's form offers is kept.
    assert set(before) <= set(form)


# --- configuration changes roll the workloads that read them ---------------------------------


def _pod_template(objects: Sequence[Mapping[str, Any]], name: str, namespace: str) -> Any:
    return find(objects, "Deployment", name, namespace)["spec"]["template"]


OTHER_HASH = bcrypt_hash_with_seed("another-long-password", "seed-1", rounds=4)


@pytest.mark.parametrize(
    ("args_change", "credentials_change", "deployment"),
    [
        (
            {"notebook_images": ("registry.corp.example/notebooks/jax:0.4",)},
            {},
            ("jupyter-web-app-deployment", "kubeflow"),
        ),
        ({"protocol": "https"}, {}, ("oauth2-proxy", "oauth2-proxy")),
        ({}, {"admin_password_hash": OTHER_HASH}, ("dex", "auth")),
        ({"admin_email": "grace@research.example.org"}, {}, ("dex", "auth")),
    ],
    ids=["notebook-images", "protocol", "admin-password", "admin-email"],
)
def test_upstream_config_changes_roll_the_workloads_that_read_them(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
    args_change: dict[str, object],
    credentials_change: dict[str, str],
    deployment: tuple[str, str],
) -> None:
    args = make_upstream_args(upstream.source)
    first = transform_manifests(upstream_rendered.objects, args, credentials)
    again = transform_manifests(upstream_rendered.objects, args, credentials)
    assert again == first  # identical inputs, identical output
    second = transform_manifests(
        upstream_rendered.objects,
        make_upstream_args(upstream.source, **args_change),
        KubeflowCredentials(**{**credentials.__dict__, **credentials_change}),  # type: ignore[arg-type]
    )
    before, after = (_pod_template(o, *deployment) for o in (first, second))
    assert before != after
    digest = before["metadata"]["annotations"][CONFIG_DIGEST_ANNOTATION]
    assert digest != after["metadata"]["annotations"][CONFIG_DIGEST_ANNOTATION]
    # Only a digest: no value of what it covers appears in the pod template.
    assert credentials.oidc_client_secret not in json.dumps(before)
    assert credentials.admin_password_hash not in json.dumps(before)
    # Workloads that read none of the changed data keep their pod template.
    unrelated = _pod_template(first, "katib-controller", "kubeflow")
    assert _pod_template(second, "katib-controller", "kubeflow") == unrelated
