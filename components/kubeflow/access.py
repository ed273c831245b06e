"""How users reach Kubeflow: its public name, TLS, and the Istio gateway's exposure.

Upstream's login flow uses relative redirects and dex's in-cluster issuer, which works
through ``kubectl port-forward``. Reached by name, the issuer is ``https://<domain>/dex``:
tokens then name the address users know, and dex, oauth2-proxy and Istio's JWT check agree
on it (Istio still fetches the keys in-cluster, so nothing hairpins through the load balancer).
Pure functions over rendered objects; nothing here touches Pulumi or the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from components.kubeflow.manifests import YAML_DUMPER, YAML_LOADER, KubeObject
from components.kubeflow.objects import name_of, namespace_of
from model.kubeflow import LoadBalancer, Tls

DEX_IN_CLUSTER = "http://dex.auth.svc.cluster.local:5556/dex"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SERVICE = "istio-ingressgateway"
KUBEFLOW_GATEWAY = ("kubeflow", "kubeflow-gateway")
TLS_SECRET = "kubeflow-tls"
# Upstream's NetworkPolicies on the gateway pods admit pods only; what reaches them from
# outside (the ALB, or clients through a NodePort / LoadBalancer) is admitted by this one.
GATEWAY_SOURCES_POLICY = "kubeflow-eks-gateway-sources"
# The gateway pods (its Service's selector) and the pod ports outside traffic reaches:
# behind the ALB, HTTP (Service port 80 -> 8080) and the health check (15021,
# /healthz/ready); serving TLS itself, HTTP (the redirect) and HTTPS (443 -> 8443).
GATEWAY_POD_LABELS = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
ALB_POD_PORTS = (8080, 15021)
TLS_POD_PORTS = (8080, 8443)
# NodePort: plain HTTP is answered by a redirect to the HTTPS node port.
HTTP_REDIRECT = ("kubeflow", "kubeflow-http-redirect")


class AccessError(Exception):
    """The rendered objects lack what reaching Kubeflow by name relies on."""


@dataclass(frozen=True)
class Access:
    """How users reach Kubeflow. ``domain`` None: through ``kubectl port-forward`` only."""

    domain: str | None = None
    # EKS: an ALB ends TLS in front of the gateway and tells it the scheme.
    behind_load_balancer: bool = False
    # onprem: the gateway serves TLS itself (the stack's kubeflow.tls), and its Service is
    # exposed as kubeflow.loadBalancer says.
    gateway_tls: Tls | None = None
    gateway_service: LoadBalancer | None = None
    # Addresses that connect to the gateway pods themselves: the VPC (the ALB's interfaces
    # and its health checks), or on premises the clients (the Service's allowed CIDRs; it
    # keeps their addresses with externalTrafficPolicy Local).
    gateway_sources: tuple[str, ...] = ()

    @property
    def issuer(self) -> str:
        return f"https://{self.domain}/dex" if self.domain else DEX_IN_CLUSTER


NO_EXTERNAL_ACCESS = Access()


def _copy(obj: Any) -> KubeObject:
    copied: KubeObject = json.loads(json.dumps(obj))
    return copied


def _set_setting(text: str, key: str, value: str | bool) -> str:
    """Set ``key = value`` in oauth2-proxy's config file (TOML): replace it, or append it."""
    written = ("true" if value else "false") if isinstance(value, bool) else f'"{value}"'
    line = f"{key} = {written}"
    pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", re.MULTILINE)
    if pattern.search(text):
        return pattern.sub(line, text)
    return text.rstrip("\n") + "\n" + line + "\n"


def apply_external_url(objects: Sequence[KubeObject], domain: str) -> list[KubeObject]:
    """dex's issuer, its client's redirect, oauth2-proxy and Istio's JWT rule: by name."""
    issuer = f"https://{domain}/dex"
    callback = f"https://{domain}/oauth2/callback"
    seen = {"dex": 0, "oauth2-proxy": 0}
    out: list[KubeObject] = []
    for obj in objects:
        kind, namespace = obj.get("kind"), namespace_of(obj)
        data = obj.get("data") or {}
        if kind == "ConfigMap" and namespace == "auth" and name_of(obj) == "dex":
            obj = _copy(obj)
            config = yaml.load(obj["data"]["config.yaml"], Loader=YAML_LOADER)
            config["issuer"] = issuer
            for client in config.get("staticClients") or []:
                client["redirectURIs"] = [callback]
            obj["data"]["config.yaml"] = yaml.dump(config, Dumper=YAML_DUMPER, sort_keys=False)
            seen["dex"] += 1
        elif kind == "ConfigMap" and namespace == "oauth2-proxy" and "oauth2_proxy.cfg" in data:
            obj = _copy(obj)
            text = obj["data"]["oauth2_proxy.cfg"]
            text = _set_setting(text, "oidc_issuer_url", issuer)
            text = _set_setting(text, "redirect_url", callback)
            text = _set_setting(text, "relative_redirect_url", False)
            obj["data"]["oauth2_proxy.cfg"] = text
            seen["oauth2-proxy"] += 1
        elif kind == "RequestAuthentication":
            rules = (obj.get("spec") or {}).get("jwtRules") or []
            if any(rule.get("issuer") == DEX_IN_CLUSTER for rule in rules):
                obj = _copy(obj)
                for rule in obj["spec"]["jwtRules"]:
                    if rule.get("issuer") == DEX_IN_CLUSTER:
                        rule["issuer"] = issuer
                        # Keys from inside the cluster, not through the load balancer.
                        rule["jwksUri"] = f"{DEX_IN_CLUSTER}/keys"
        out.append(obj)
    missing = [what for what, count in seen.items() if count == 0]
    if missing:
        raise AccessError(
            f"reaching Kubeflow by name needs {' and '.join(missing)}'s configuration in the "
            "render (the dex and oauth2-proxy components)"
        )
    return out


def trust_load_balancer(objects: Sequence[KubeObject]) -> list[KubeObject]:
    """Behind an ALB the gateway must keep its X-Forwarded-Proto (https): oauth2-proxy
    forces HTTPS and would otherwise redirect every request to itself forever."""
    out: list[KubeObject] = []
    for obj in objects:
        if _is_gateway(obj, "Deployment"):
            obj = _copy(obj)
            annotations = (
                obj["spec"]["template"].setdefault("metadata", {}).setdefault("annotations", {})
            )
            annotations["proxy.istio.io/config"] = json.dumps(
                {"gatewayTopology": {"numTrustedProxies": 1}}
            )
        out.append(obj)
    return out


def _is_gateway(obj: KubeObject, kind: str) -> bool:
    return (
        obj.get("kind") == kind
        and namespace_of(obj) == GATEWAY_NAMESPACE
        and name_of(obj) == GATEWAY_SERVICE
    )


def serve_tls_at_gateway(objects: Sequence[KubeObject], access: Access) -> list[KubeObject]:
    """onprem: the kubeflow gateway answers HTTPS for the domain and redirects HTTP to the
    port that serves it (443, or the HTTPS node port); the certificate comes from a
    cert-manager ClusterIssuer or an existing Secret; the gateway Service is exposed as
    configured, keeping the clients' addresses (externalTrafficPolicy Local) so that the
    gateway's NetworkPolicy can admit exactly the allowed CIDRs."""
    assert access.domain is not None and access.gateway_tls is not None
    tls = access.gateway_tls
    secret = tls.secret_name or TLS_SECRET
    service = access.gateway_service
    node_port = service.node_port if service and service.service_type == "NodePort" else None
    out: list[KubeObject] = []
    gateways = 0
    for obj in objects:
        if (obj.get("kind"), namespace_of(obj), name_of(obj)) == ("Gateway", *KUBEFLOW_GATEWAY):
            obj = _copy(obj)
            servers = obj["spec"]["servers"]
            http = [s for s in servers if s["port"].get("protocol") == "HTTP"]
            if node_port is None:
                for server in http:
                    server["tls"] = {"httpsRedirect": True}
            else:
                # httpsRedirect cannot name a port; the redirect Gateway below does.
                servers[:] = [s for s in servers if s not in http]
            servers.append(
                {
                    "hosts": [access.domain],
                    "port": {"name": "https", "number": 443, "protocol": "HTTPS"},
                    "tls": {"mode": "SIMPLE", "credentialName": secret},
                }
            )
            gateways += 1
        elif _is_gateway(obj, "Service") and service is not None:
            obj = _copy(obj)
            spec = obj["spec"]
            spec["type"] = service.service_type
            # Without it kube-proxy replaces a client's address by a node's, which no
            # ipBlock of client ranges admits (and which would hide who connects).
            spec["externalTrafficPolicy"] = "Local"
            if node_port is not None:
                for port in spec["ports"]:
                    if port["port"] == 443:
                        port["nodePort"] = node_port
            if service.service_type == "LoadBalancer" and service.allowed_cidrs:
                spec["loadBalancerSourceRanges"] = list(service.allowed_cidrs)
        out.append(obj)
    if gateways != 1:
        raise AccessError("serving TLS by name needs kubeflow/kubeflow-gateway in the render")
    if node_port is not None:
        out += http_redirect_to(node_port)
    if tls.cluster_issuer is not None:
        out.append(
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": {"name": TLS_SECRET, "namespace": GATEWAY_NAMESPACE},
                "spec": {
                    "secretName": secret,
                    "dnsNames": [access.domain],
                    "issuerRef": {
                        "group": "cert-manager.io",
                        "kind": "ClusterIssuer",
                        "name": tls.cluster_issuer,
                    },
                },
            }
        )
    return out


def http_redirect_to(https_port: int) -> list[KubeObject]:
    """Plain HTTP on the gateway answered by a redirect to ``https://<host>:<https_port>``,
    on a Gateway of its own so that no web app's route is served over HTTP."""
    namespace, name = HTTP_REDIRECT
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [
                    {"hosts": ["*"], "port": {"name": "http", "number": 80, "protocol": "HTTP"}}
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "gateways": [f"{namespace}/{name}"],
                "hosts": ["*"],
                "http": [
                    {"redirect": {"scheme": "https", "port": https_port, "redirectCode": 301}}
                ],
            },
        },
    ]


def gateway_sources_policy(access: Access) -> KubeObject:
    """A NetworkPolicy admitting ``access.gateway_sources`` to the gateway pods' ports that
    outside traffic reaches (tests/kubeflow/test_flows.py checks them on upstream's pods)."""
    ports = ALB_POD_PORTS if access.behind_load_balancer else TLS_POD_PORTS
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": GATEWAY_SOURCES_POLICY, "namespace": GATEWAY_NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": dict(GATEWAY_POD_LABELS)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": cidr}} for cidr in access.gateway_sources],
                    "ports": [{"port": port, "protocol": "TCP"} for port in ports],
                }
            ],
        },
    }


def apply_access(objects: Sequence[KubeObject], access: Access) -> list[KubeObject]:
    """Everything reaching Kubeflow by name needs; nothing for port-forward stacks."""
    if access.domain is None:
        return list(objects)
    out = apply_external_url(objects, access.domain)
    if access.behind_load_balancer:
        out = trust_load_balancer(out)
    if access.gateway_tls is not None:
        out = serve_tls_at_gateway(out, access)
    if access.gateway_sources:
        out.append(gateway_sources_policy(access))
    return out
