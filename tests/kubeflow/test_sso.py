"""Single sign-on and contributors on upstream 26.03's render; no client secret in clear."""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml

from components.kubeflow.access import Access
from components.kubeflow.component import build_phases
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.transform import KubeflowCredentials, sso_secret_variable
from model.kubeflow import Contributor, Profile, Sso
from tests.crd_schema import crd_errors
from tests.kubeflow.conftest import UpstreamRelease, make_upstream_args

SECRETS = {"okta": "okta-client-secret-9d2e", "github": "github-client-secret-41bc"}
SSO = Sso.model_validate(
    {
        "staticLogin": False,
        "connectors": [
            {
                "id": "okta",
                "name": "Okta",
                "type": "oidc",
                "issuer": "https://example.okta.com",
                "clientId": "0oa1b2c3d4",
            },
            {
                "id": "github",
                "name": "GitHub",
                "type": "github",
                "clientId": "Iv1.x",
                "orgs": ["ml"],
            },
        ],
    }
)
VISION = Profile(
    name="team-vision",
    owner="lin@example.org",
    contributors=(
        Contributor(email="ana@example.org", role="edit"),
        Contributor(email="auditor@example.org", role="view"),
    ),
)


def _objects(
    upstream: UpstreamRelease, rendered: RenderedManifests, credentials: KubeflowCredentials
) -> list[dict[str, Any]]:
    args = make_upstream_args(
        upstream.source,
        profiles=(VISION,),
        sso=SSO,
        ingress="load-balancer",
        domain="kubeflow.example.org",
        protocol="https",
        access=Access(domain="kubeflow.example.org", behind_load_balancer=True),
    )
    with_sso = KubeflowCredentials(**{**credentials.__dict__, "sso_client_secrets": SECRETS})
    return [dict(o) for p in build_phases(rendered.objects, args, with_sso) for o in p.objects]


def _find(objects: list[dict[str, Any]], kind: str, name: str, namespace: str = "") -> Any:
    return next(
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and o["metadata"].get("namespace", "") == namespace
    )


def test_dex_offers_the_connectors_and_no_static_login(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
) -> None:
    objects = _objects(upstream, upstream_rendered, credentials)
    config = yaml.safe_load(_find(objects, "ConfigMap", "dex", "auth")["data"]["config.yaml"])
    assert config["enablePasswordDB"] is False
    assert "staticPasswords" not in config
    okta, github = config["connectors"]
    assert okta == {
        "type": "oidc",
        "id": "okta",
        "name": "Okta",
        "config": {
            "clientID": "0oa1b2c3d4",
            "clientSecret": "$SSO_OKTA_CLIENT_SECRET",
            "redirectURI": "https://kubeflow.example.org/dex/callback",
            "issuer": "https://example.okta.com",
            "scopes": ["openid", "profile", "email"],
            "getUserInfo": True,
            "insecureSkipEmailVerified": False,
        },
    }
    assert github["config"]["orgs"] == [{"name": "ml"}]
    # dex reads the secrets from the environment its Secret gives it.
    passwords = _find(objects, "Secret", "dex-passwords", "auth")
    for connector, secret in SECRETS.items():
        key = sso_secret_variable(connector)
        assert base64.b64decode(passwords["data"][key]).decode() == secret
    dex = _find(objects, "Deployment", "dex", "auth")
    env_from = dex["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "dex-passwords"}} in env_from


def test_no_client_secret_outside_secrets(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
) -> None:
    objects = _objects(upstream, upstream_rendered, credentials)
    for obj in objects:
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        for secret in SECRETS.values():
            assert secret not in text, f"{obj['kind']} {obj['metadata']['name']} holds a secret"


def test_contributors_get_kubeflows_own_bindings(
    upstream: UpstreamRelease,
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
) -> None:
    objects = _objects(upstream, upstream_rendered, credentials)
    binding = _find(objects, "RoleBinding", "user-ana-example-org-clusterrole-edit", "team-vision")
    assert binding["roleRef"]["name"] == "kubeflow-edit"
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ana@example.org"}
    ]
    assert binding["metadata"]["annotations"] == {"user": "ana@example.org", "role": "edit"}
    policy = _find(
        objects, "AuthorizationPolicy", "user-auditor-example-org-clusterrole-view", "team-vision"
    )
    assert policy["spec"]["rules"] == [
        {"when": [{"key": "request.headers[kubeflow-userid]", "values": ["auditor@example.org"]}]}
    ]
    crd = _find(objects, "CustomResourceDefinition", "authorizationpolicies.security.istio.io")
    assert crd_errors(policy, crd) == []
    # The roles they are bound to are rendered.
    _find(objects, "ClusterRole", "kubeflow-view")
