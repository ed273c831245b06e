"""Reading rendered Kubernetes objects: identity, pod templates, selectors, what a pod uses.

Pure functions over plain objects (dicts as kustomize produced them), shared by the apply
order (`phases`), the reference check (`references`) and the transforms. Nothing here
changes an object.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

WORKLOAD_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
)
WEBHOOK_KINDS = frozenset({"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"})
# The API groups Kubernetes itself serves (1.32-1.35). Other groups, `*.k8s.io` ones such as
# metacontroller.k8s.io or gateway.networking.k8s.io included, come from CRDs.
KUBERNETES_API_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)
# Built-in kinds without a namespace. Upstream sometimes writes one into them anyway
# (Spark's ClusterRoles); the API server ignores it, and so does `ref`.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CSIDriver",
        "CSINode",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Which object: kind, namespace ('' when cluster-scoped) and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else (f"{self.kind} {self.name}")
        )


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace", ""))


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    value = meta(obj).get("labels")
    return value if isinstance(value, Mapping) else {}


def is_cluster_scoped(obj: Mapping[str, Any]) -> bool:
    """Built-in and without a namespace (custom resources count as namespaced when they
    carry one: their scope is in their CRD)."""
    if obj.get("kind") in CLUSTER_SCOPED_KINDS:
        return is_builtin(obj)
    return not namespace_of(obj)


def ref(obj: Mapping[str, Any]) -> ObjectRef:
    namespace = "" if is_cluster_scoped(obj) else namespace_of(obj)
    return ObjectRef(str(obj.get("kind", "")), namespace, name_of(obj))


def api_group(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def is_builtin(obj: Mapping[str, Any]) -> bool:
    """A kind served by Kubernetes itself, not a custom resource."""
    return api_group(obj) in KUBERNETES_API_GROUPS


def namespace_labels(objects: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, str]]:
    """Labels of each rendered Namespace, with the name label the API server adds to all."""
    return {
        name_of(o): {**labels_of(o), "kubernetes.io/metadata.name": name_of(o)}
        for o in objects
        if o.get("kind") == "Namespace"
    }


def labels_of_namespace(
    namespace: str, rendered: Mapping[str, Mapping[str, str]]
) -> Mapping[str, str]:
    """A namespace's labels: rendered ones, or only the name label for one that exists already
    (kube-system) or is created later."""
    return rendered.get(namespace) or {"kubernetes.io/metadata.name": namespace}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against labels; no selector (or an empty one) matches everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def service_selects(service: Mapping[str, Any], pod_labels: Mapping[str, str]) -> bool:
    """A Service fronts pods when its (non-empty) selector is a subset of their labels."""
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return False
    return all(pod_labels.get(k) == v for k, v in selector.items())


def pod_template(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod template ({metadata, spec}) of a workload, or None for anything else."""
    kind = obj.get("kind")
    if kind not in WORKLOAD_KINDS:
        return None
    if kind == "Pod":
        return obj
    spec = obj.get("spec") or {}
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    template = spec.get("template")
    return template if isinstance(template, Mapping) else None


def pod_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    template = pod_template(obj) or {}
    spec = template.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def pod_labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return labels_of(pod_template(obj) or {})


def service_account_of(obj: Mapping[str, Any]) -> str:
    """The ServiceAccount a workload's pods run as (`default` when none is named)."""
    spec = pod_spec(obj)
    return str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


# Where a pod spec names a ConfigMap, Secret or claim: (key of the source, kind, name field).
_Refs = tuple[tuple[str, str, str], ...]
_VOLUME_REFS: _Refs = (
    ("configMap", "ConfigMap", "name"),
    ("secret", "Secret", "secretName"),
    ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName"),
)
_PROJECTED_REFS: _Refs = (("configMap", "ConfigMap", "name"), ("secret", "Secret", "name"))
_ENV_REFS: _Refs = (("configMapKeyRef", "ConfigMap", "name"), ("secretKeyRef", "Secret", "name"))
_ENV_FROM_REFS: _Refs = (("configMapRef", "ConfigMap", "name"), ("secretRef", "Secret", "name"))


def _refs(source: Mapping[str, Any], table: _Refs) -> Iterator[tuple[str, str]]:
    for key, kind, field in table:
        if key in source:
            yield kind, str(source[key].get(field, ""))


def pod_config_refs(obj: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap, Secret and PersistentVolumeClaim a workload's pods use:
    volumes (also projected), env `valueFrom`, `envFrom`, and image pull secrets."""
    spec = pod_spec(obj)
    found: set[tuple[str, str]] = set()
    for volume in spec.get("volumes") or []:
        found.update(_refs(volume, _VOLUME_REFS))
        for source in (volume.get("projected") or {}).get("sources") or []:
            found.update(_refs(source, _PROJECTED_REFS))
    for container in _containers(spec):
        for env in container.get("env") or []:
            found.update(_refs(env.get("valueFrom") or {}, _ENV_REFS))
        for env_from in container.get("envFrom") or []:
            found.update(_refs(env_from, _ENV_FROM_REFS))
    for pull in spec.get("imagePullSecrets") or []:
        found.add(("Secret", str(pull.get("name", ""))))
    return {(kind, name) for kind, name in found if name}


def webhook_services(config: Mapping[str, Any]) -> set[ObjectRef]:
    """The Services a webhook configuration calls (webhooks given by URL call none)."""
    services = set()
    for hook in config.get("webhooks") or []:
        service = (hook.get("clientConfig") or {}).get("service")
        if service:
            services.add(
                ObjectRef("Service", str(service.get("namespace", "")), str(service["name"]))
            )
    return services


def webhook_intercepts(
    hook: Mapping[str, Any],
    group: str,
    resource: str,
    object_labels: Mapping[str, str],
    namespace_labels: Mapping[str, str] | None,
) -> bool:
    """Whether one webhook of a configuration is called when such an object is created.

    `namespace_labels` is None for a cluster-scoped object (namespaceSelector does not apply).
    """
    if not any(
        _matches_rule(rule, group, resource) for rule in hook.get("rules") or []
    ) or not selector_matches(hook.get("objectSelector"), object_labels):
        return False
    return namespace_labels is None or selector_matches(
        hook.get("namespaceSelector"), namespace_labels
    )


def _matches_rule(rule: Mapping[str, Any], group: str, resource: str) -> bool:
    operations = rule.get("operations") or []
    groups = rule.get("apiGroups") or []
    resources = rule.get("resources") or []
    return (
        ("CREATE" in operations or "*" in operations)
        and (group in groups or "*" in groups)
        and (resource in resources or "*" in resources or "*/*" in resources)
    )
