"""The reference closure of a render, checked offline before any resource is created.

A component subset can render fine and still not work: a VirtualService routing through a
Gateway nobody renders, a binding to a role that does not exist, a custom resource without
its CRD. Kubernetes accepts most of these and the failure shows only at run time. So every
reference the objects make is checked against the render itself:

- every custom resource has its CustomResourceDefinition;
- every VirtualService names a rendered Gateway (or `mesh`);
- every RoleBinding / ClusterRoleBinding names a rendered role, or one Kubernetes ships;
- every webhook calls a rendered Service;
- every workload runs as a rendered ServiceAccount (or `default`);
- what components need at run time without naming it in any object (`RUNTIME_NEEDS`).

`find_missing_references` is pure. `name_providing_entries` says which entry of upstream's
`example/kustomization.yaml` renders each missing object, given a way to render one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from components.kubeflow.manifests import EXAMPLE_KUSTOMIZATION, RenderError
from components.kubeflow.objects import (
    WEBHOOK_KINDS,
    ObjectRef,
    api_group,
    is_builtin,
    name_of,
    namespace_of,
    pod_template,
    ref,
    service_account_of,
    webhook_services,
)

CRD_KIND = "CustomResourceDefinition"
# ClusterRoles every cluster has (user-facing defaults and the system: ones).
BUILTIN_CLUSTER_ROLES = frozenset({"cluster-admin", "admin", "edit", "view"})


@dataclass(frozen=True, order=True)
class Requirement:
    """An object the render must contain. For a CRD, `name` is `<Kind>.<group>` of the
    resources it defines (the CRD's own name uses the plural, which a resource does not show).
    """

    kind: str
    namespace: str
    name: str

    @classmethod
    def crd_for(cls, group: str, kind: str) -> Requirement:
        return cls(CRD_KIND, "", f"{kind}.{group}")

    def satisfied_by(self, obj: Mapping[str, Any]) -> bool:
        if self.kind == CRD_KIND:
            if obj.get("kind") != CRD_KIND:
                return False
            spec = obj.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind")
            return f"{kind}.{spec.get('group')}" == self.name
        return ref(obj) == ObjectRef(self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        if self.kind == CRD_KIND:
            kind, _, group = self.name.partition(".")
            return f"the CustomResourceDefinition of {group} {kind}"
        return str(ObjectRef(self.kind, self.namespace, self.name))


@dataclass(frozen=True)
class RuntimeNeed:
    """What a component (`who`, present when the render has `when`) needs at run time
    without any rendered object naming it."""

    who: str
    when: Requirement
    needs: tuple[Requirement, ...]
    why: str


RUNTIME_NEEDS = (
    RuntimeNeed(
        "the profile controller",
        Requirement.crd_for("kubeflow.org", "Profile"),
        tuple(Requirement("ClusterRole", "", f"kubeflow-{r}") for r in ("admin", "edit", "view")),
        "binds kubeflow-admin/edit/view in every profile namespace",
    ),
    RuntimeNeed(
        "the Jupyter web app",
        Requirement("Deployment", "kubeflow", "jupyter-web-app-deployment"),
        (Requirement.crd_for("kubeflow.org", "PodDefault"),),
        "the notebook form lists PodDefaults",
    ),
)


@dataclass(frozen=True)
class MissingReference:
    """`referrer` needs `needed` (`why`), and the render does not contain it."""

    referrer: str
    needed: Requirement
    why: str
    # The entry of upstream's example/kustomization.yaml that renders it, once known.
    entry: str | None = None

    def __str__(self) -> str:
        return f"{self.referrer}: {self.why}, but {self.needed} is not rendered"


class ReferenceClosureError(RenderError):
    """The render refers to objects it does not contain; `problems` lists every one."""

    def __init__(self, problems: Sequence[MissingReference]) -> None:
        self.problems = tuple(problems)
        lines = [f"- {p}" + (f" (add {p.entry})" if p.entry else "") for p in self.problems]
        entries = list(dict.fromkeys(p.entry for p in self.problems if p.entry))
        advice = (
            f"Add to the components (entries of upstream {EXAMPLE_KUSTOMIZATION}): "
            + ", ".join(entries)
            if entries
            else ""
        )
        unprovided = [p for p in self.problems if not p.entry]
        if unprovided:
            advice += (" " if advice else "") + (
                f"No entry of upstream {EXAMPLE_KUSTOMIZATION} provides "
                + ", ".join(sorted({str(p.needed) for p in unprovided}))
                + "."
            )
        super().__init__(
            f"the chosen Kubeflow components do not work together: {len(self.problems)} "
            "reference(s) to objects that are not rendered:\n" + "\n".join(lines) + "\n" + advice
        )
        self.entries = tuple(entries)


def _gateway(virtual_service: Mapping[str, Any], name: str) -> Requirement | None:
    """The Gateway a VirtualService names: `ns/name`, `name` (its own namespace), or a FQDN."""
    if name == "mesh":
        return None
    if "/" in name:
        namespace, _, gateway = name.partition("/")
        return Requirement("Gateway", namespace, gateway)
    if "." in name:
        gateway, namespace = name.split(".")[:2]
        return Requirement("Gateway", namespace, gateway)
    return Requirement("Gateway", namespace_of(virtual_service), name)


def _references(obj: Mapping[str, Any]) -> Iterable[tuple[Requirement, str]]:
    """(what the object needs, why) for every reference it makes."""
    kind = str(obj.get("kind"))
    if not is_builtin(obj):
        yield Requirement.crd_for(api_group(obj), kind), "is a custom resource"
    if kind == "VirtualService":
        for name in (obj.get("spec") or {}).get("gateways") or []:
            gateway = _gateway(obj, str(name))
            if gateway:
                yield gateway, f"routes through Gateway {name}"
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        role = obj.get("roleRef") or {}
        role_kind, role_name = str(role.get("kind")), str(role.get("name"))
        builtin = role_name in BUILTIN_CLUSTER_ROLES or role_name.startswith("system:")
        if role_kind == "ClusterRole" and not builtin:
            yield Requirement("ClusterRole", "", role_name), f"binds ClusterRole {role_name}"
        elif role_kind == "Role":
            yield (
                Requirement("Role", namespace_of(obj), role_name),
                f"binds Role {role_name}",
            )
    elif kind in WEBHOOK_KINDS:
        for service in sorted(webhook_services(obj)):
            requirement = Requirement("Service", service.namespace, service.name)
            yield requirement, f"calls Service {service.namespace}/{service.name}"
    if pod_template(obj) is not None:
        account = service_account_of(obj)
        if account != "default":
            yield (
                Requirement("ServiceAccount", namespace_of(obj), account),
                f"runs as ServiceAccount {account}",
            )


def find_missing_references(objects: Sequence[Mapping[str, Any]]) -> tuple[MissingReference, ...]:
    """Every reference of the render to an object it does not contain, in render order."""
    present = {ref(o) for o in objects}
    defined = {
        Requirement.crd_for(
            str((o.get("spec") or {}).get("group")),
            str(((o.get("spec") or {}).get("names") or {}).get("kind")),
        )
        for o in objects
        if o.get("kind") == CRD_KIND
    }

    def rendered(requirement: Requirement) -> bool:
        if requirement.kind == CRD_KIND:
            return requirement in defined
        return ObjectRef(requirement.kind, requirement.namespace, requirement.name) in present

    problems: list[MissingReference] = []
    for obj in objects:
        referrer = str(ref(obj)) if name_of(obj) else str(obj.get("kind"))
        for requirement, why in _references(obj):
            if not rendered(requirement):
                problems.append(MissingReference(referrer, requirement, why))
    for need in RUNTIME_NEEDS:
        if rendered(need.when):
            problems += [
                MissingReference(need.who, r, need.why) for r in need.needs if not rendered(r)
            ]
    return tuple(dict.fromkeys(problems))


def check_references(objects: Sequence[Mapping[str, Any]]) -> None:
    """Raise `ReferenceClosureError` listing every missing reference (none: return)."""
    problems = find_missing_references(objects)
    if problems:
        raise ReferenceClosureError(problems)


def name_providing_entries(
    problems: Sequence[MissingReference],
    candidates: Sequence[str],
    render_entry: Callable[[str], Sequence[Mapping[str, Any]]],
) -> tuple[MissingReference, ...]:
    """`problems` with `entry` set to the first candidate entry whose render provides the
    missing object. Entries are rendered one by one (in `candidates` order) only until every
    problem has one; an entry that does not render on its own is skipped."""
    unresolved = {p.needed for p in problems}
    provider: dict[Requirement, str] = {}
    for entry in candidates:
        if not unresolved:
            break
        try:
            objects = render_entry(entry)
        except RenderError:
            continue
        for requirement in list(unresolved):
            if any(requirement.satisfied_by(o) for o in objects):
                provider[requirement] = entry
                unresolved.discard(requirement)
    return tuple(replace(p, entry=provider.get(p.needed)) for p in problems)
