"""Reaching Kubeflow by name, on upstream's real objects: login URLs, the gateway's TLS and
exposure, and every object the stack changes still valid (schema, CRD)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import kubernetes_validate
import pytest
import yaml

from components.kubeflow.access import Access, AccessError, apply_access
from components.kubeflow.component import build_phases
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.phases import is_builtin
from components.kubeflow.transform import KubeflowCredentials
from model.kubeflow import LoadBalancer, Tls
from tests.crd_schema import crd_errors
from tests.kubeflow.conftest import make_upstream_args

DOMAIN = "kubeflow.example.org"
EKS = Access(domain=DOMAIN, behind_load_balancer=True, gateway_sources=("10.40.0.0/16",))
ONPREM = Access(
    domain=DOMAIN,
    gateway_tls=Tls(cluster_issuer="letsencrypt"),
    gateway_service=LoadBalancer(
        service_type="NodePort", node_port=30443, allowed_cidrs=("203.0.113.0/24",)
    ),
    gateway_sources=("203.0.113.0/24",),
)


def _objects(
    rendered: RenderedManifests, credentials: KubeflowCredentials, access: Access, **kw: Any
) -> list[dict[str, Any]]:
    args = make_upstream_args(rendered.source_dir, access=access, protocol="https", **kw)
    phases = build_phases(rendered.objects, args, credentials)
    return [dict(o) for phase in phases for o in phase.objects]


def _one(objects: Iterable[dict[str, Any]], kind: str, name: str, namespace: str) -> Any:
    [found] = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["name"].startswith(name)
        and o["metadata"].get("namespace") == namespace
    ]
    return found


def _oauth2_proxy_cfg(objects: Iterable[dict[str, Any]]) -> dict[str, str]:
    [cfg] = [
        o["data"]["oauth2_proxy.cfg"]
        for o in objects
        if o["kind"] == "ConfigMap" and "oauth2_proxy.cfg" in (o.get("data") or {})
    ]
    return dict(re.findall(r'^(\w+) = "?([^"\n]*)"?$', cfg, flags=re.MULTILINE))


def test_login_by_name_uses_https_urls_everywhere(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    objects = _objects(upstream_rendered, credentials, EKS)
    dex = yaml.safe_load(_one(objects, "ConfigMap", "dex", "auth")["data"]["config.yaml"])
    assert dex["issuer"] == f"https://{DOMAIN}/dex"
    assert [c["redirectURIs"] for c in dex["staticClients"]] == [
        [f"https://{DOMAIN}/oauth2/callback"]
    ]
    proxy = _oauth2_proxy_cfg(objects)
    assert proxy["oidc_issuer_url"] == f"https://{DOMAIN}/dex"
    assert proxy["redirect_url"] == f"https://{DOMAIN}/oauth2/callback"
    assert proxy["relative_redirect_url"] == "false"
    # Tokens are redeemed and keys fetched inside the cluster, never through the ALB.
    assert proxy["redeem_url"].startswith("http://dex.auth.svc.cluster.local:5556/")
    jwt = _one(objects, "RequestAuthentication", "dex-jwt", "istio-system")
    [rule] = jwt["spec"]["jwtRules"]
    assert rule["issuer"] == f"https://{DOMAIN}/dex"
    assert rule["jwksUri"] == "http://dex.auth.svc.cluster.local:5556/dex/keys"
    # No user-facing URL is left on the in-cluster issuer or on plain http.
    text = json.dumps(objects)
    assert '"issuer": "http://dex' not in text


def test_behind_the_alb_the_gateway_keeps_the_forwarded_scheme(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    objects = _objects(upstream_rendered, credentials, EKS)
    gateway = _one(objects, "Deployment", "istio-ingressgateway", "istio-system")
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    config = json.loads(annotations["proxy.istio.io/config"])
    assert config == {"gatewayTopology": {"numTrustedProxies": 1}}
    # Secure cookies: the ALB speaks HTTPS to users.
    parameters = _one(objects, "ConfigMap", "oauth2-proxy-parameters", "oauth2-proxy")
    assert parameters["data"]["FORCE_HTTPS"] == "true"


def test_onprem_gateway_serves_tls_for_the_domain_and_redirects_http(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    objects = _objects(upstream_rendered, credentials, ONPREM)
    gateway = _one(objects, "Gateway", "kubeflow-gateway", "kubeflow")
    servers = {s["port"]["number"]: s for s in gateway["spec"]["servers"]}
    # A NodePort serves HTTPS on the node port, not on 443: plain HTTP is redirected there,
    # by a Gateway of its own, so no web app is also served over HTTP.
    assert 80 not in servers
    redirect = _one(objects, "Gateway", "kubeflow-http-redirect", "kubeflow")
    assert [s["port"]["number"] for s in redirect["spec"]["servers"]] == [80]
    route = _one(objects, "VirtualService", "kubeflow-http-redirect", "kubeflow")
    assert route["spec"]["gateways"] == ["kubeflow/kubeflow-http-redirect"]
    assert route["spec"]["http"] == [
        {"redirect": {"scheme": "https", "port": 30443, "redirectCode": 301}}
    ]
    assert servers[443]["hosts"] == [DOMAIN]
    assert servers[443]["tls"] == {"mode": "SIMPLE", "credentialName": "kubeflow-tls"}
    certificate = _one(objects, "Certificate", "kubeflow-tls", "istio-system")
    assert certificate["spec"]["dnsNames"] == [DOMAIN]
    assert certificate["spec"]["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": "letsencrypt",
    }
    service = _one(objects, "Service", "istio-ingressgateway", "istio-system")
    assert service["spec"]["type"] == "NodePort"
    https = next(p for p in service["spec"]["ports"] if p["port"] == 443)
    assert https["nodePort"] == 30443
    # Clients keep their addresses, which the gateway's NetworkPolicy admits or refuses.
    assert service["spec"]["externalTrafficPolicy"] == "Local"


def test_an_existing_tls_secret_needs_no_certificate(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    access = Access(
        domain=DOMAIN,
        gateway_tls=Tls(secret_name="corp-wildcard"),
        gateway_service=LoadBalancer(service_type="LoadBalancer", allowed_cidrs=("10.0.0.0/8",)),
    )
    objects = _objects(upstream_rendered, credentials, access)
    assert not [o for o in objects if o["kind"] == "Certificate" and "kubeflow-tls" in str(o)]
    gateway = _one(objects, "Gateway", "kubeflow-gateway", "kubeflow")
    https = next(s for s in gateway["spec"]["servers"] if s["port"]["number"] == 443)
    assert https["tls"]["credentialName"] == "corp-wildcard"
    service = _one(objects, "Service", "istio-ingressgateway", "istio-system")
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    # Port 443 serves, so the gateway's own redirect is right.
    http = next(s for s in gateway["spec"]["servers"] if s["port"]["number"] == 80)
    assert http["tls"] == {"httpsRedirect": True}
    assert not [o for o in objects if o["metadata"]["name"] == "kubeflow-http-redirect"]


def test_port_forward_stacks_keep_upstreams_relative_login(
    upstream_rendered: RenderedManifests, credentials: KubeflowCredentials
) -> None:
    objects = _objects(upstream_rendered, credentials, Access())
    dex = yaml.safe_load(_one(objects, "ConfigMap", "dex", "auth")["data"]["config.yaml"])
    assert dex["issuer"] == "http://dex.auth.svc.cluster.local:5556/dex"
    assert _oauth2_proxy_cfg(objects)["redirect_url"] == "/oauth2/callback"


def test_by_name_without_dex_or_oauth2_proxy_is_refused() -> None:
    with pytest.raises(AccessError, match="dex and oauth2-proxy"):
        apply_access([], EKS)


@pytest.mark.parametrize("access", [EKS, ONPREM], ids=["eks", "onprem"])
def test_every_object_the_stack_changes_stays_valid(
    upstream_rendered: RenderedManifests,
    credentials: KubeflowCredentials,
    access: Access,
) -> None:
    objects = _objects(upstream_rendered, credentials, access)
    crds = {
        (o["spec"]["group"], o["spec"]["names"]["kind"]): o
        for o in objects
        if o["kind"] == "CustomResourceDefinition"
    }
    touched = {
        "Gateway",
        "VirtualService",
        "Certificate",
        "RequestAuthentication",
        "PodDefault",
        "Profile",
    }
    checked = 0
    for obj in objects:
        group = str(obj["apiVersion"]).rpartition("/")[0]
        if obj["kind"] in touched and (group, obj["kind"]) in crds:
            assert crd_errors(obj, crds[(group, obj["kind"])]) == [], obj["metadata"]
            checked += 1
        elif is_builtin(obj) and obj["kind"] in (
            "Service",
            "Deployment",
            "Namespace",
            "NetworkPolicy",
        ):
            kubernetes_validate.validate(obj, "1.34", strict=True)
    assert checked >= 5
