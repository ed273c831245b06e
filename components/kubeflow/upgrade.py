"""What changing the Kubeflow objects a stack applies would do, read before anything runs.

Pure: two lists of objects in (what the stack applies now, what it would apply after the
change), an `UpgradePlan` out. Objects are matched by (API group, kind, namespace, name), so
an object whose apiVersion moves within its group (`security.istio.io/v1beta1` to `v1`) is one
object that changes, not a removal and an addition; a ConfigMap or Secret whose name differs
only by Kustomize's content-hash suffix is one generated object renamed.

The rules of the live system it applies, as data:

- `IMMUTABLE_FIELDS`: fields the API server refuses to update; an object whose such field
  changes is deleted and created again (a Deployment's pods all restart, a PVC's data is gone).
- Deleting a CustomResourceDefinition deletes every object of its kind; deleting a
  PersistentVolumeClaim deletes its volume's data (reclaim policy Delete); deleting a
  Namespace deletes everything in it. The plan refuses each unless the stack allows that
  object's deletion by name.
- A CRD stores each object in the version that was its storage version when the object was
  last written. A new CRD that no longer lists a version that was the storage version leaves
  such objects undecodable: the plan refuses until they are migrated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.kubeflow.phases import Phase

# Kind -> dotted paths the API server will not change in place.
IMMUTABLE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec.selector",),
    "ReplicaSet": ("spec.selector",),
    "DaemonSet": ("spec.selector",),
    "StatefulSet": (
        "spec.selector",
        "spec.serviceName",
        "spec.volumeClaimTemplates",
        "spec.podManagementPolicy",
    ),
    "Job": ("spec.selector", "spec.template", "spec.completionMode"),
    "Service": ("spec.clusterIP", "spec.type"),
    "PersistentVolumeClaim": (
        "spec.accessModes",
        "spec.storageClassName",
        "spec.volumeMode",
        "spec.volumeName",
        "spec.selector",
        "spec.dataSource",
    ),
    "RoleBinding": ("roleRef",),
    "ClusterRoleBinding": ("roleRef",),
    "StorageClass": ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"),
    "Secret": ("type",),
    "CustomResourceDefinition": ("spec.scope", "spec.group", "spec.names.plural"),
}
# Deleting one of these loses what users made: refused unless the stack names it.
DELETION_LOSES_DATA: Mapping[str, str] = {
    "CustomResourceDefinition": "deleting a CRD deletes every object of its kind",
    "PersistentVolumeClaim": "deleting a PVC deletes its volume and the data on it",
    "Namespace": "deleting a namespace deletes everything in it",
}
# Kustomize's configMapGenerator/secretGenerator suffix: '-' and 10 characters of its alphabet.
_HASH_SUFFIX = re.compile(r"^(?P<base>.+)-[bcdfghkmt2-9]{10}$")


@dataclass(frozen=True, order=True)
class ObjectKey:
    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind} {where}"

    @property
    def allow_name(self) -> str:
        """How a stack names this object to allow its deletion: `Kind/name` or
        `Kind/namespace/name`."""
        return "/".join(p for p in (self.kind, self.namespace, self.name) if p)


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rpartition("/")[0]
    metadata = obj.get("metadata") or {}
    return ObjectKey(
        group, str(obj.get("kind")), str(metadata.get("namespace") or ""), str(metadata["name"])
    )


@dataclass(frozen=True)
class Replacement:
    key: ObjectKey
    fields: tuple[str, ...]


@dataclass(frozen=True)
class CrdVersions:
    """A CRD kept across the change whose storage or served versions change."""

    name: str
    storage_before: str
    storage_after: str
    served_before: tuple[str, ...]
    served_after: tuple[str, ...]
    # Versions listed before and no longer listed at all.
    dropped: tuple[str, ...]

    @property
    def needs_migration(self) -> bool:
        return self.storage_before in self.dropped


@dataclass(frozen=True)
class Refusal:
    key: ObjectKey
    reason: str


@dataclass(frozen=True)
class PhaseStep:
    """One apply phase of the change: what it creates, updates and replaces."""

    name: str
    added: tuple[ObjectKey, ...]
    changed: tuple[ObjectKey, ...]
    replaced: tuple[ObjectKey, ...]


@dataclass(frozen=True)
class UpgradePlan:
    kept: tuple[ObjectKey, ...]
    changed: tuple[ObjectKey, ...]
    added: tuple[ObjectKey, ...]
    removed: tuple[ObjectKey, ...]
    # (old name, new name) of generated objects whose hash suffix changed.
    renamed: tuple[tuple[ObjectKey, ObjectKey], ...]
    # (key, apiVersion before, apiVersion after).
    api_versions: tuple[tuple[ObjectKey, str, str], ...]
    replacements: tuple[Replacement, ...]
    crd_versions: tuple[CrdVersions, ...]
    refusals: tuple[Refusal, ...]
    # Phases in apply order; removals happen after the last one.
    order: tuple[PhaseStep, ...]

    @property
    def safe(self) -> bool:
        return not self.refusals


def _field(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return None if node in ({}, [], "") else node


def _strip_volatile(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as compared: without status and the apiVersion (compared on its own)."""
    return {k: v for k, v in obj.items() if k not in ("status", "apiVersion")}


def immutable_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[str, ...]:
    fields = IMMUTABLE_FIELDS.get(str(after.get("kind")), ())
    changed = []
    for path in fields:
        old, new = _field(before, path), _field(after, path)
        # A Service without a clusterIP gets one allocated: only a set value that changes counts.
        if path == "spec.clusterIP" and (old is None or new is None):
            continue
        # A Service's type defaults to ClusterIP.
        if path == "spec.type":
            old, new = old or "ClusterIP", new or "ClusterIP"
        if old != new:
            changed.append(path)
    return tuple(changed)


def crd_versions(before: Mapping[str, Any], after: Mapping[str, Any]) -> CrdVersions | None:
    def versions(crd: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return list((crd.get("spec") or {}).get("versions") or [])

    def storage(crd: Mapping[str, Any]) -> str:
        return next((str(v["name"]) for v in versions(crd) if v.get("storage")), "")

    def served(crd: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(v["name"]) for v in versions(crd) if v.get("served"))

    listed_after = {str(v["name"]) for v in versions(after)}
    change = CrdVersions(
        name=str((before.get("metadata") or {}).get("name")),
        storage_before=storage(before),
        storage_after=storage(after),
        served_before=served(before),
        served_after=served(after),
        dropped=tuple(str(v["name"]) for v in versions(before) if v["name"] not in listed_after),
    )
    unchanged = (
        change.storage_before == change.storage_after
        and change.served_before == change.served_after
        and not change.dropped
    )
    return None if unchanged else change


def _generated_renames(
    removed: Iterable[ObjectKey], added: Iterable[ObjectKey]
) -> list[tuple[ObjectKey, ObjectKey]]:
    def base(key: ObjectKey) -> tuple[str, str, str, str] | None:
        if key.kind not in ("ConfigMap", "Secret"):
            return None
        match = _HASH_SUFFIX.match(key.name)
        return (key.group, key.kind, key.namespace, match["base"]) if match else None

    new_by_base: dict[tuple[str, str, str, str], list[ObjectKey]] = {}
    for key in added:
        b = base(key)
        if b is not None:
            new_by_base.setdefault(b, []).append(key)
    renames = []
    for key in removed:
        b = base(key)
        candidates = new_by_base.get(b, []) if b is not None else []
        if len(candidates) == 1:
            renames.append((key, candidates.pop()))
    return renames


def plan_upgrade(
    before: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]],
    phases_after: Sequence[Phase] = (),
    *,
    allow_deletion: Iterable[str] = (),
) -> UpgradePlan:
    """Compare what is applied now (`before`) with what would be (`after`).

    `phases_after` is the apply order of `after` (the stack's phases); without it the order
    is one step. `allow_deletion` names objects (`Kind/name`, `Kind/namespace/name`) whose
    deletion the stack accepts although it loses data.
    """
    old = {key_of(o): o for o in before}
    new = {key_of(o): o for o in after}
    allowed = set(allow_deletion)
    removed = sorted(k for k in old if k not in new)
    added = sorted(k for k in new if k not in old)
    renamed = _generated_renames(removed, added)
    renamed_old = {a for a, _ in renamed}
    renamed_new = {b for _, b in renamed}
    removed = [k for k in removed if k not in renamed_old]
    added = [k for k in added if k not in renamed_new]
    pairs = [(k, old[k], new[k]) for k in sorted(old.keys() & new.keys())]
    pairs += [(b, old[a], new[b]) for a, b in renamed]

    changed, api_versions, replacements, crds = [], [], [], []
    for key, before_obj, after_obj in pairs:
        if _strip_volatile(before_obj) != _strip_volatile(after_obj) or before_obj.get(
            "apiVersion"
        ) != after_obj.get("apiVersion"):
            changed.append(key)
        if before_obj.get("apiVersion") != after_obj.get("apiVersion"):
            api_versions.append(
                (key, str(before_obj.get("apiVersion")), str(after_obj.get("apiVersion")))
            )
        fields = immutable_changes(before_obj, after_obj)
        if fields:
            replacements.append(Replacement(key, fields))
        if key.kind == "CustomResourceDefinition":
            versions = crd_versions(before_obj, after_obj)
            if versions is not None:
                crds.append(versions)

    refusals = [
        Refusal(
            key,
            f"{DELETION_LOSES_DATA[key.kind]}; allow it by name ({key.allow_name}) "
            "or keep the object",
        )
        for key in removed
        if key.kind in DELETION_LOSES_DATA and key.allow_name not in allowed
    ]
    for replacement in replacements:
        if replacement.key.kind in DELETION_LOSES_DATA and (
            replacement.key.allow_name not in allowed
        ):
            refusals.append(
                Refusal(
                    replacement.key,
                    f"{', '.join(replacement.fields)} cannot change in place, and replacing it "
                    f"means deleting it: {DELETION_LOSES_DATA[replacement.key.kind]}",
                )
            )
    for crd in crds:
        if crd.needs_migration:
            refusals.append(
                Refusal(
                    ObjectKey("apiextensions.k8s.io", "CustomResourceDefinition", "", crd.name),
                    f"version {crd.storage_before} was the storage version and is dropped: "
                    f"objects stored in it must be migrated to {crd.storage_after} first "
                    "(read and write each one back, e.g. with kube-storage-version-migrator)",
                )
            )

    changed_set, added_set = set(changed), set(added)
    replaced_set = {r.key for r in replacements}
    steps = []
    for phase in phases_after or (Phase("all", "every object", tuple(after)),):
        keys = [key_of(o) for o in phase.objects]
        steps.append(
            PhaseStep(
                phase.name,
                tuple(k for k in keys if k in added_set),
                tuple(k for k in keys if k in changed_set and k not in replaced_set),
                tuple(k for k in keys if k in replaced_set),
            )
        )
    return UpgradePlan(
        kept=tuple(k for k, _, _ in pairs),
        changed=tuple(changed),
        added=tuple(added),
        removed=tuple(removed),
        renamed=tuple(renamed),
        api_versions=tuple(api_versions),
        replacements=tuple(replacements),
        crd_versions=tuple(crds),
        refusals=tuple(refusals),
        order=tuple(steps),
    )
