"""The apply order: rendered, transformed objects split into phases applied one after another.

Which phase an object lands in follows from what the live system needs, read off the objects
themselves (no list of namespaces):

- **Platform** workloads are the ones other components rely on while they are admitted and
  started: the servers of *platform webhooks* (webhooks that intercept pods of other
  namespaces' workloads, like Istio's sidecar injector, or custom resources rendered in
  other namespaces, like cert-manager's), every workload in those servers' namespaces, and
  node agents (DaemonSets, e.g. Istio's CNI node agent, which sidecar-injected pods need on
  their node). A workload whose pods a rendered webhook mutates is never platform: the
  webhook must be registered before its pods are created.
- **Closure**: everything a workload needs is applied in its phase or earlier, wherever it
  lives: its ServiceAccount (and that account's pull secrets), the RoleBindings and
  ClusterRoleBindings naming it and their roles, the ConfigMaps, Secrets and
  PersistentVolumeClaims its pods use, its PriorityClass, and the Services that front it.
- A webhook configuration comes in the phase after the servers behind it are ready.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.kubeflow.objects import (
    WEBHOOK_KINDS,
    ObjectRef,
    api_group,
    is_builtin,
    is_cluster_scoped,
    labels_of,
    labels_of_namespace,
    namespace_labels,
    namespace_of,
    pod_config_refs,
    pod_labels,
    pod_spec,
    pod_template,
    ref,
    selector_matches,
    service_account_of,
    service_selects,
    webhook_intercepts,
    webhook_services,
)

FOUNDATION, PLATFORM, PLATFORM_WEBHOOKS, APPLICATIONS, APPLICATION_WEBHOOKS = range(5)
_LAYOUT = (
    ("01-namespaces-crds", "Namespaces and CustomResourceDefinitions"),
    (
        "02-platform",
        "platform workloads (cert-manager, Istio, node agents), everything they need wherever "
        "it lives, and cluster-wide built-in objects",
    ),
    ("03-platform-webhooks", "webhooks served by the platform (cert-manager, Istio)"),
    ("04-applications", "Kubeflow applications and custom resources"),
    ("05-application-webhooks", "application webhooks"),
)
_FOUNDATION_KINDS = ("Namespace", "CustomResourceDefinition")


@dataclass(frozen=True)
class Phase:
    """Objects applied together; each phase starts after the previous one is ready."""

    name: str
    description: str
    objects: tuple[Mapping[str, Any], ...]


class RenderIndex:
    """Lookups over one render: objects by reference, Services, bindings, roles, CRDs."""

    def __init__(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self.objects = objects
        self.position: dict[ObjectRef, int] = {}
        for i, obj in enumerate(objects):
            self.position.setdefault(ref(obj), i)
        self.namespace_labels = namespace_labels(objects)
        self.services: dict[str, list[int]] = defaultdict(list)
        self.bindings: list[int] = []
        self.cluster_roles: list[int] = []
        self.workloads: list[int] = []
        self.webhook_configs: list[int] = []
        self.plural: dict[tuple[str, str], str] = {}
        for i, obj in enumerate(objects):
            kind = obj.get("kind")
            if kind == "Service":
                self.services[namespace_of(obj)].append(i)
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                self.bindings.append(i)
            elif kind == "ClusterRole":
                self.cluster_roles.append(i)
            elif kind in WEBHOOK_KINDS:
                self.webhook_configs.append(i)
            elif kind == "CustomResourceDefinition":
                spec = obj.get("spec") or {}
                names = spec.get("names") or {}
                self.plural[(str(spec.get("group")), str(names.get("kind")))] = str(
                    names.get("plural")
                )
            if pod_template(obj) is not None:
                self.workloads.append(i)

    def find(self, kind: str, namespace: str, name: str) -> int | None:
        return self.position.get(ObjectRef(kind, namespace, name))

    def labels_of_namespace(self, namespace: str) -> Mapping[str, str]:
        return labels_of_namespace(namespace, self.namespace_labels)


def workload_needs(index: RenderIndex, workload: int) -> list[int]:
    """Positions of the rendered objects a workload needs before its pods can run."""
    obj = index.objects[workload]
    namespace = namespace_of(obj)
    needs: set[int | None] = set()
    account_name = service_account_of(obj)
    account = index.find("ServiceAccount", namespace, account_name)
    if account is not None:
        needs.add(account)
        account_obj = index.objects[account]
        for pull in account_obj.get("imagePullSecrets") or []:
            needs.add(index.find("Secret", namespace, str(pull.get("name", ""))))
    for binding in _bindings_naming(index, namespace, account_name):
        needs.add(binding)
        needs.update(_roles_of(index, index.objects[binding]))
    for kind, name in pod_config_refs(obj):
        needs.add(index.find(kind, namespace, name))
    priority_class = pod_spec(obj).get("priorityClassName")
    if priority_class:
        needs.add(index.find("PriorityClass", "", str(priority_class)))
    labels = pod_labels(obj)
    needs.update(s for s in index.services[namespace] if service_selects(index.objects[s], labels))
    return sorted(n for n in needs if n is not None)


def _bindings_naming(index: RenderIndex, namespace: str, account: str) -> Iterable[int]:
    groups = {"system:serviceaccounts", f"system:serviceaccounts:{namespace}"}
    for i in index.bindings:
        binding = index.objects[i]
        for subject in binding.get("subjects") or []:
            kind = subject.get("kind")
            subject_namespace = subject.get("namespace") or namespace_of(binding)
            if (
                kind == "ServiceAccount"
                and subject.get("name") == account
                and subject_namespace == namespace
            ) or (kind == "Group" and subject.get("name") in groups):
                yield i
                break


def _roles_of(index: RenderIndex, binding: Mapping[str, Any]) -> set[int | None]:
    role_ref = binding.get("roleRef") or {}
    if role_ref.get("kind") == "Role":
        return {index.find("Role", namespace_of(binding), str(role_ref.get("name")))}
    role = index.find("ClusterRole", "", str(role_ref.get("name")))
    if role is None:
        return set()
    roles: set[int | None] = {role}
    # An aggregated ClusterRole only grants what the roles it selects grant.
    rule = index.objects[role].get("aggregationRule") or {}
    for selector in rule.get("clusterRoleSelectors") or []:
        roles.update(
            r
            for r in index.cluster_roles
            if selector_matches(selector, labels_of(index.objects[r]))
        )
    return roles


def pod_mutators(index: RenderIndex, workload: int) -> list[int]:
    """Positions of the rendered MutatingWebhookConfigurations that change this workload's pods."""
    obj = index.objects[workload]
    labels = pod_labels(obj)
    namespace = index.labels_of_namespace(namespace_of(obj))
    return [
        c
        for c in index.webhook_configs
        if index.objects[c].get("kind") == "MutatingWebhookConfiguration"
        and any(
            webhook_intercepts(hook, "", "pods", labels, namespace)
            for hook in index.objects[c].get("webhooks") or []
        )
    ]


def webhook_servers(index: RenderIndex, config: int) -> list[int] | None:
    """Positions of the workloads behind a webhook configuration's Services, or None when a
    Service (or the workload behind it) is not rendered."""
    servers: set[int] = set()
    for service_ref in webhook_services(index.objects[config]):
        service = index.find("Service", service_ref.namespace, service_ref.name)
        if service is None:
            return None
        behind = [
            w
            for w in index.workloads
            if namespace_of(index.objects[w]) == service_ref.namespace
            and service_selects(index.objects[service], pod_labels(index.objects[w]))
        ]
        if not behind:
            return None
        servers.update(behind)
    return sorted(servers) if servers else None


def _platform_namespaces(index: RenderIndex) -> set[str]:
    """Namespaces of the servers of webhooks that other namespaces' objects pass through."""
    # What a webhook may see created, as (namespace, API group, resource, labels): each
    # workload's pods and every namespaced custom resource. Read once, tried against each hook.
    seen = [
        (namespace_of(obj), "", "pods", pod_labels(obj))
        for obj in (index.objects[w] for w in index.workloads)
    ]
    for obj in index.objects:
        plural = index.plural.get((api_group(obj), str(obj.get("kind"))))
        if plural and namespace_of(obj) and not is_builtin(obj):
            seen.append((namespace_of(obj), api_group(obj), plural, labels_of(obj)))
    found = set()
    for c in index.webhook_configs:
        for hook in index.objects[c].get("webhooks") or []:
            service = (hook.get("clientConfig") or {}).get("service") or {}
            home = str(service.get("namespace", ""))
            if home and home not in found and _intercepts_others(index, hook, home, seen):
                found.add(home)
    return found


def _intercepts_others(
    index: RenderIndex,
    hook: Mapping[str, Any],
    home: str,
    seen: Sequence[tuple[str, str, str, Mapping[str, str]]],
) -> bool:
    return any(
        namespace != home
        and webhook_intercepts(hook, group, resource, labels, index.labels_of_namespace(namespace))
        for namespace, group, resource, labels in seen
    )


def assign_phases(objects: Sequence[Mapping[str, Any]]) -> list[int]:
    """The phase number (0-4) of each object, by position."""
    index = RenderIndex(objects)
    phase = [
        FOUNDATION
        if obj.get("kind") in _FOUNDATION_KINDS
        else PLATFORM
        if is_builtin(obj) and is_cluster_scoped(obj)
        else APPLICATIONS
        for obj in objects
    ]
    platform_namespaces = _platform_namespaces(index)
    # The platform's components also read objects of their namespace through the API
    # (istiod its injection templates), which no pod spec shows: all of them come along.
    for i, obj in enumerate(objects):
        in_platform = namespace_of(obj) in platform_namespaces
        if in_platform and is_builtin(obj) and pod_template(obj) is None:
            phase[i] = PLATFORM
    for w in index.workloads:
        obj = index.objects[w]
        candidate = namespace_of(obj) in platform_namespaces or obj.get("kind") == "DaemonSet"
        if candidate and not pod_mutators(index, w):
            for i in (w, *workload_needs(index, w)):
                phase[i] = min(phase[i], PLATFORM)
    for c in index.webhook_configs:
        servers = webhook_servers(index, c)
        on_platform = servers is not None and all(phase[s] == PLATFORM for s in servers)
        phase[c] = PLATFORM_WEBHOOKS if on_platform else APPLICATION_WEBHOOKS
    return phase


def split_phases(objects: Sequence[Mapping[str, Any]]) -> tuple[Phase, ...]:
    """Split into apply phases so one `pulumi up` on an empty cluster succeeds.

    1. namespaces and CRDs: everything else lives in them or is one of them;
    2. platform: its workloads, everything they need, and cluster-wide built-in objects,
       awaited until the workloads are ready;
    3. platform webhooks: registered only once their servers answer, so nothing is rejected
       by a webhook that is not up yet, and Istio injects sidecars into every later pod;
    4. applications: the rest, including custom resources (their CRDs and the platform's
       webhooks exist by now);
    5. application webhooks: last, after the servers behind them are ready.
    Order inside a phase is the render order. Empty phases are left out.
    """
    phase = assign_phases(objects)
    return tuple(
        Phase(name, description, tuple(o for o, p in zip(objects, phase, strict=True) if p == n))
        for n, (name, description) in enumerate(_LAYOUT)
        if n in phase
    )
