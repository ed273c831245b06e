"""The NetworkPolicy evaluator, on upstream 26.03's own policies and on the cases upstream does
not use (ipBlock with except, endPort, named ports, egress), each with Kubernetes' meaning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from components.kubeflow.reachability import (
    Address,
    NetworkPolicies,
    Pod,
    ReachabilityError,
    cluster_namespaces,
    workload_pods,
)

PROFILE = "kubeflow-user-example-com"


@pytest.fixture(scope="module")
def upstream_policies(
    upstream_example_objects: list[dict[str, Any]],
) -> tuple[NetworkPolicies, dict]:
    objects = upstream_example_objects
    return NetworkPolicies(objects, cluster_namespaces(objects)), workload_pods(objects)


def pod(namespace: str, **labels: str) -> Pod:
    return Pod("test", namespace, labels)


def test_a_profile_namespace_carries_the_profile_controllers_labels(
    upstream_example_objects: list[dict[str, Any]],
) -> None:
    labels = cluster_namespaces(upstream_example_objects)[PROFILE]
    # What upstream's policies admit profiles by, from the controller's own ConfigMap.
    assert labels["app.kubernetes.io/part-of"] == "kubeflow-profile"
    assert labels["kubernetes.io/metadata.name"] == PROFILE
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"


def test_a_pod_no_policy_selects_admits_everything(upstream_policies: tuple) -> None:
    policies, _ = upstream_policies
    notebook = pod(PROFILE, app="notebook")
    assert policies.connects(Address("192.0.2.7"), notebook, 8888)
    assert policies.connects(pod("kubeflow"), notebook, 1)


def test_same_namespace_policies_admit_only_their_namespace(upstream_policies: tuple) -> None:
    policies, pods = upstream_policies
    mysql = pods[("kubeflow", "mysql")]
    assert policies.connects(pods[("kubeflow", "ml-pipeline")], mysql, 3306)
    verdict = policies.connects(pod(PROFILE), mysql, 3306)
    assert not verdict
    assert "kubeflow/default-allow-same-namespace" in verdict.reason
    assert not policies.connects(Address("10.0.0.5"), mysql, 3306)


def test_namespace_and_pod_selector_in_one_peer_need_both(upstream_policies: tuple) -> None:
    policies, pods = upstream_policies
    dex = pods[("auth", "dex")]
    assert policies.connects(pods[("istio-system", "istio-ingressgateway")], dex, 5556)
    assert policies.connects(pods[("oauth2-proxy", "oauth2-proxy")], dex, 5556)
    # The gateway's labels in another namespace, or another pod of istio-system: refused.
    assert not policies.connects(pod("kubeflow", app="istio-ingressgateway"), dex, 5556)
    assert not policies.connects(pod("istio-system", app="something-else"), dex, 5556)


def test_namespace_selector_by_label_admits_every_profile(upstream_policies: tuple) -> None:
    policies, pods = upstream_policies
    api = pods[("kubeflow", "ml-pipeline")]
    assert policies.connects(pod(PROFILE), api, 8888)
    assert policies.connects(pod(PROFILE), api, 8887)
    assert not policies.connects(pod("knative-serving"), api, 8888)


def test_policies_add_up_and_ports_restrict(upstream_policies: tuple) -> None:
    policies, pods = upstream_policies
    gateway = pods[("istio-system", "istio-ingressgateway")]
    # allow-knative-to-istio-gateways: 8080 only; same-namespace: any port.
    assert policies.connects(pod("knative-serving"), gateway, 8080)
    assert not policies.connects(pod("knative-serving"), gateway, 8443)
    assert policies.connects(pod("istio-system"), gateway, 8443)
    # Upstream admits no address at all: the ALB and its health checks are refused.
    assert not policies.connects(Address("10.40.0.10"), gateway, 8080)
    assert not policies.connects(Address("10.40.0.10"), gateway, 15021)


def test_a_rule_without_from_admits_every_source_on_its_ports(upstream_policies: tuple) -> None:
    policies, pods = upstream_policies
    webhook = pods[("cert-manager", "cert-manager-webhook")]
    assert policies.connects(Address("10.0.0.1", "API server"), webhook, 10250)
    # cert-manager's same-namespace policy admits its own pods on any port; others only 10250.
    assert not policies.connects(Address("10.0.0.1"), webhook, 6080)


def test_rules_with_several_port_lists(upstream_policies: tuple) -> None:
    policies, pods = upstream_policies
    seaweedfs = pods[("kubeflow", "seaweedfs")]
    assert policies.connects(pod(PROFILE), seaweedfs, 8333)
    assert not policies.connects(pod(PROFILE), seaweedfs, 8888)
    assert policies.connects(pod("istio-system"), seaweedfs, 8888)


# --- what upstream does not use --------------------------------------------------------------


def policy(spec: Mapping[str, Any], namespace: str = "apps") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, **spec},
    }


NAMESPACES = {"apps": {"team": "a"}, "other": {"team": "b"}}
WEB = Pod("web", "apps", {"app": "web"}, named_ports={("http", "TCP"): 8080})


def test_ip_block_with_except() -> None:
    rule = {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.9.0/24"]}}]}
    policies = NetworkPolicies([policy({"ingress": [rule]})], NAMESPACES)
    assert policies.connects(Address("10.0.1.1"), WEB, 80)
    assert not policies.connects(Address("10.0.9.1"), WEB, 80)
    assert not policies.connects(Address("10.1.0.1"), WEB, 80)
    # Pods match an ipBlock only by an address they are given.
    assert not policies.connects(Pod("p", "apps", {}), WEB, 80)
    assert policies.connects(Pod("p", "apps", {}, address="10.0.1.2"), WEB, 80)


def test_end_port_and_protocol() -> None:
    rule = {"ports": [{"port": 8000, "endPort": 8010}, {"protocol": "UDP", "port": 53}]}
    policies = NetworkPolicies([policy({"ingress": [rule]})], NAMESPACES)
    assert policies.connects(Address("1.2.3.4"), WEB, 8005)
    assert not policies.connects(Address("1.2.3.4"), WEB, 8011)
    assert policies.connects(Address("1.2.3.4"), WEB, 53, "UDP")
    assert not policies.connects(Address("1.2.3.4"), WEB, 53)


def test_named_ports_resolve_against_the_destination_pod() -> None:
    policies = NetworkPolicies([policy({"ingress": [{"ports": [{"port": "http"}]}]})], NAMESPACES)
    assert policies.connects(Address("1.2.3.4"), WEB, 8080)
    assert not policies.connects(Address("1.2.3.4"), WEB, 80)


def test_pod_selector_alone_means_the_policys_namespace() -> None:
    rule = {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}
    policies = NetworkPolicies([policy({"ingress": [rule]})], NAMESPACES)
    assert policies.connects(Pod("c", "apps", {"role": "client"}), WEB, 80)
    assert not policies.connects(Pod("c", "other", {"role": "client"}), WEB, 80)


def test_match_expressions() -> None:
    rule = {
        "from": [
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["b"]}]
                }
            }
        ]
    }
    policies = NetworkPolicies([policy({"ingress": [rule]})], NAMESPACES)
    assert policies.connects(Pod("c", "apps", {}), WEB, 80)
    assert not policies.connects(Pod("c", "other", {}), WEB, 80)


def test_egress_policies_restrict_the_source() -> None:
    egress = policy({"policyTypes": ["Egress"], "egress": [{"ports": [{"port": 443}]}]})
    egress["spec"]["podSelector"] = {}
    policies = NetworkPolicies([egress], NAMESPACES)
    assert policies.connects(Pod("c", "apps", {}), Address("203.0.113.5"), 443)
    assert not policies.connects(Pod("c", "apps", {}), Address("203.0.113.5"), 80)
    # An egress-only policy does not restrict what the pods receive.
    assert policies.connects(Address("203.0.113.5"), WEB, 80)


def test_policy_types_default_to_ingress_plus_egress_when_it_has_egress_rules() -> None:
    both = policy({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]})
    policies = NetworkPolicies([both], NAMESPACES)
    assert not policies.connects(Address("10.0.0.1"), WEB, 80)  # isolated, no ingress rule
    assert policies.connects(WEB, Address("10.0.0.1"), 80)
    assert not policies.connects(WEB, Address("192.0.2.1"), 80)


def test_bad_input_is_named() -> None:
    bad = policy({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]})
    with pytest.raises(ReachabilityError, match="apps/p: ipBlock"):
        NetworkPolicies([bad], NAMESPACES)
    policies = NetworkPolicies([], NAMESPACES)
    with pytest.raises(ReachabilityError, match="namespace nowhere is unknown"):
        policies.connects(Pod("x", "nowhere", {}), WEB, 80)
