"""Which connections the rendered NetworkPolicies admit, with Kubernetes' own semantics.

A connection from a source (a pod, or an address outside the cluster's pods) to a
destination (a pod's port, or an address) is admitted when the source may send it (egress)
and the destination may receive it (ingress):

- a pod selected by no policy of that direction admits everything in it; a pod selected by
  one or more admits only what some rule of one of them allows (policies add up);
- ``policyTypes`` defaults to ``Ingress``, plus ``Egress`` when the policy has egress rules;
- a rule without ``from``/``to`` admits every peer, without ``ports`` every port;
- a peer is an ``ipBlock`` (``cidr`` minus ``except``), or ``namespaceSelector`` and/or
  ``podSelector``: both in one peer means pods matching both; a ``podSelector`` alone means
  pods of the policy's own namespace;
- a port is a number or the name of a container port of the destination pod (with its
  protocol, TCP by default), optionally up to ``endPort``.

Whether an ``ipBlock`` also matches pod addresses is left to the implementation by
Kubernetes; here a pod is matched by an ``ipBlock`` only when it is given an address (on
EKS pods have VPC addresses, and the VPC CNI matches them). Traffic from a pod's own node
(kubelet probes) is always admitted by Kubernetes and is not modelled. Pure functions over
plain objects; nothing here touches the network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from components.kubeflow.manifests import YAML_LOADER
from components.kubeflow.objects import (
    WORKLOAD_KINDS,
    labels_of,
    name_of,
    namespace_labels,
    namespace_of,
    pod_spec,
    pod_template,
    selector_matches,
)


class ReachabilityError(Exception):
    """A NetworkPolicy or an endpoint that cannot be evaluated (bad CIDR, unknown namespace)."""


@dataclass(frozen=True)
class Pod:
    """A pod as NetworkPolicies see it: where it runs, its labels and its named ports."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    # (name, protocol) -> number, from the containers' `ports`.
    named_ports: Mapping[tuple[str, str], int] = field(default_factory=dict)
    address: str | None = None

    def __str__(self) -> str:
        return f"pod {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Address:
    """An endpoint that is no pod: a load balancer's interface, a node, a client, a registry."""

    ip: str
    what: str = ""

    def __str__(self) -> str:
        return f"{self.what or 'address'} {self.ip}"


Endpoint = Pod | Address


def pod_of(workload: Mapping[str, Any], address: str | None = None) -> Pod:
    """The pod a rendered workload (Deployment, StatefulSet, Job, ...) runs."""
    template = pod_template(workload)
    if template is None:
        raise ReachabilityError(f"{workload.get('kind')} {name_of(workload)} has no pod template")
    named: dict[tuple[str, str], int] = {}
    spec = pod_spec(workload)
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for port in container.get("ports") or []:
            if port.get("name"):
                named[(str(port["name"]), str(port.get("protocol", "TCP")))] = int(
                    port["containerPort"]
                )
    return Pod(
        name=name_of(workload),
        namespace=namespace_of(workload),
        labels=dict(labels_of(template)),
        named_ports=named,
        address=address,
    )


def workload_pods(objects: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Pod]:
    """(namespace, workload name) -> the pod of every rendered workload."""
    return {
        (namespace_of(o), name_of(o)): pod_of(o)
        for o in objects
        if o.get("kind") in WORKLOAD_KINDS and pod_template(o) is not None
    }


PROFILE_LABELS_FILE = "namespace-labels.yaml"


def cluster_namespaces(objects: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, str]]:
    """The labels of every namespace the render makes: its Namespaces, and each Profile's
    namespace as the profile controller labels it (the labels of its `namespace-labels.yaml`
    ConfigMap; it keeps labels that exist, and removes those given as '')."""
    objects = list(objects)
    namespaces = {name: dict(labels) for name, labels in namespace_labels(objects).items()}
    controller_labels: dict[str, str] = {}
    for o in objects:
        data = o.get("data") or {}
        if o.get("kind") == "ConfigMap" and PROFILE_LABELS_FILE in data:
            controller_labels.update(yaml.load(data[PROFILE_LABELS_FILE], Loader=YAML_LOADER) or {})
    for o in objects:
        if o.get("kind") != "Profile":
            continue
        labels = namespaces.setdefault(name_of(o), {})
        for key, value in controller_labels.items():
            if value == "":
                labels.pop(key, None)
            else:
                labels.setdefault(key, str(value))
    return {
        name: {**labels, "kubernetes.io/metadata.name": name} for name, labels in namespaces.items()
    }


@dataclass(frozen=True)
class Verdict:
    """Whether a connection is admitted, and by what (or why not)."""

    admitted: bool
    reason: str

    def __bool__(self) -> bool:
        return self.admitted


class NetworkPolicies:
    """The NetworkPolicies of a render, and the labels of every namespace pods may run in."""

    def __init__(
        self,
        objects: Iterable[Mapping[str, Any]],
        namespaces: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
        self.namespace_labels = {
            name: {**labels, "kubernetes.io/metadata.name": name}
            for name, labels in namespaces.items()
        }
        for policy in self.policies:
            for rule in _rules(policy, "ingress") + _rules(policy, "egress"):
                for peer in rule.get("from") or rule.get("to") or []:
                    if "ipBlock" in peer:
                        _ip_block(policy, peer["ipBlock"])

    def connects(
        self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
    ) -> Verdict:
        """Whether ``source`` may open a connection to ``destination`` on ``port``."""
        for endpoint in (source, destination):
            if isinstance(endpoint, Pod) and endpoint.namespace not in self.namespace_labels:
                raise ReachabilityError(f"{endpoint}: namespace {endpoint.namespace} is unknown")
        leaving = (
            self._decide(source, "egress", destination, source, destination, port, protocol)
            if isinstance(source, Pod)
            else Verdict(True, "")
        )
        if not leaving:
            return leaving
        arriving = (
            self._decide(destination, "ingress", source, source, destination, port, protocol)
            if isinstance(destination, Pod)
            else Verdict(True, "")
        )
        if not arriving:
            return arriving
        reasons = [v.reason for v in (leaving, arriving) if v.reason]
        return Verdict(True, "; ".join(reasons) or "no policy selects either end")

    def _decide(
        self,
        subject: Pod,
        direction: str,
        peer: Endpoint,
        source: Endpoint,
        destination: Endpoint,
        port: int,
        protocol: str,
    ) -> Verdict:
        selecting = [p for p in self.policies if _selects(p, subject, direction)]
        if not selecting:
            return Verdict(True, "")
        target = destination if isinstance(destination, Pod) else None
        for policy in selecting:
            for index, rule in enumerate(_rules(policy, direction)):
                peers = rule.get("from" if direction == "ingress" else "to")
                if peers and not any(self._peer_matches(policy, p, peer) for p in peers):
                    continue
                if not _ports_match(rule.get("ports"), target, port, protocol):
                    continue
                where = f"{namespace_of(policy)}/{name_of(policy)} {direction}[{index}]"
                return Verdict(True, f"{direction} admitted by {where}")
        names = ", ".join(f"{namespace_of(p)}/{name_of(p)}" for p in selecting)
        return Verdict(
            False,
            f"{subject} is selected by {names} ({direction}), and none admits {source} -> "
            f"{destination}:{port}/{protocol}",
        )

    def _peer_matches(
        self, policy: Mapping[str, Any], peer: Mapping[str, Any], end: Endpoint
    ) -> bool:
        if "ipBlock" in peer:
            ip = end.ip if isinstance(end, Address) else end.address
            if ip is None:
                return False
            network, excepted = _ip_block(policy, peer["ipBlock"])
            address = ipaddress.ip_address(ip)
            return address in network and not any(address in e for e in excepted)
        if not isinstance(end, Pod):
            return False
        namespaces = peer.get("namespaceSelector")
        if namespaces is None:
            in_namespace = end.namespace == namespace_of(policy)
        else:
            in_namespace = selector_matches(namespaces, self.namespace_labels[end.namespace])
        pods = peer.get("podSelector")
        return in_namespace and (pods is None or selector_matches(pods, end.labels))


def _policy_types(policy: Mapping[str, Any]) -> Sequence[str]:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return list(types)
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _selects(policy: Mapping[str, Any], pod: Pod, direction: str) -> bool:
    if direction.capitalize() not in _policy_types(policy) or namespace_of(policy) != pod.namespace:
        return False
    # podSelector is required; {} selects every pod of the namespace.
    return selector_matches((policy.get("spec") or {}).get("podSelector") or {}, pod.labels)


def _rules(policy: Mapping[str, Any], direction: str) -> list[Mapping[str, Any]]:
    return list((policy.get("spec") or {}).get(direction) or [])


def _ip_block(
    policy: Mapping[str, Any], block: Mapping[str, Any]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, list[Any]]:
    try:
        network = ipaddress.ip_network(str(block.get("cidr")))
        excepted = [ipaddress.ip_network(str(e)) for e in block.get("except") or []]
    except ValueError as err:
        raise ReachabilityError(
            f"NetworkPolicy {namespace_of(policy)}/{name_of(policy)}: ipBlock {dict(block)}: {err}"
        ) from None
    return network, excepted


def _ports_match(
    ports: Sequence[Mapping[str, Any]] | None, target: Pod | None, port: int, protocol: str
) -> bool:
    if not ports:
        return True
    for entry in ports:
        if str(entry.get("protocol", "TCP")) != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str) and not wanted.isdigit():
            # A named port means the destination pod's container port of that name; it
            # matches nothing on a destination that has none (or is no pod).
            number = (target.named_ports if target else {}).get((wanted, protocol))
            if number == port:
                return True
            continue
        low = int(wanted)
        high = int(entry.get("endPort") or low)
        if low <= port <= high:
            return True
    return False
