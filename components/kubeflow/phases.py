"""The apply order: rendered, transformed objects split into phases applied one after another."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.kubeflow.transform import _namespace

# --- apply order ---------------------------------------------------------------------------

PLATFORM_NAMESPACES = ("cert-manager", "istio-system")
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
_FOUNDATION_KINDS = ("Namespace", "CustomResourceDefinition")


@dataclass(frozen=True)
class Phase:
    """Objects applied together; each phase starts after the previous one is ready."""

    name: str
    description: str
    objects: tuple[Mapping[str, Any], ...]


def is_builtin(obj: Mapping[str, Any]) -> bool:
    """A kind served by Kubernetes itself (core or a k8s.io group), not a custom resource."""
    api_version = str(obj.get("apiVersion", ""))
    if "/" not in api_version:
        return True
    group = api_version.split("/", 1)[0]
    return group.endswith(".k8s.io") or group in (
        "apps",
        "batch",
        "autoscaling",
        "policy",
    )


def _webhook_service_namespaces(obj: Mapping[str, Any]) -> set[str]:
    namespaces = set()
    for hook in obj.get("webhooks") or []:
        service = (hook.get("clientConfig") or {}).get("service") or {}
        namespaces.add(str(service.get("namespace", "")))
    return namespaces


def split_phases(
    objects: Sequence[Mapping[str, Any]],
    platform_namespaces: tuple[str, ...] = PLATFORM_NAMESPACES,
) -> tuple[Phase, ...]:
    """Split into apply phases so one `pulumi up` on an empty cluster succeeds.

    1. namespaces and CRDs: everything else lives in them or is one of them;
    2. platform: built-in objects of cert-manager and Istio (and cluster-wide RBAC etc.),
       awaited until their Deployments are ready;
    3. platform webhooks: registered only once the servers answer, so nothing is rejected
       by a webhook that is not up yet, and Istio injects sidecars into every later pod;
    4. applications: the rest, including custom resources (their CRDs and validating
       webhooks exist by now);
    5. application webhooks: last, after the servers behind them are ready.
    Order inside a phase is the render order.
    """
    buckets: dict[str, list[Mapping[str, Any]]] = {
        key: [] for key in ("foundation", "platform", "platform-webhooks", "apps", "app-webhooks")
    }
    for obj in objects:
        kind = obj.get("kind")
        if kind in _FOUNDATION_KINDS:
            buckets["foundation"].append(obj)
        elif kind in WEBHOOK_KINDS:
            served_by = _webhook_service_namespaces(obj)
            if served_by and served_by <= set(platform_namespaces):
                buckets["platform-webhooks"].append(obj)
            else:
                buckets["app-webhooks"].append(obj)
        elif is_builtin(obj) and (_namespace(obj) in platform_namespaces or not _namespace(obj)):
            buckets["platform"].append(obj)
        else:
            buckets["apps"].append(obj)
    layout = (
        ("01-namespaces-crds", "Namespaces and CustomResourceDefinitions", "foundation"),
        ("02-platform", "cert-manager, Istio and cluster-wide built-in objects", "platform"),
        ("03-platform-webhooks", "cert-manager and Istio webhooks", "platform-webhooks"),
        ("04-applications", "Kubeflow applications and custom resources", "apps"),
        ("05-application-webhooks", "application webhooks", "app-webhooks"),
    )
    return tuple(
        Phase(name, description, tuple(buckets[key]))
        for name, description, key in layout
        if buckets[key]
    )
