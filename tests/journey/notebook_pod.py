"""A notebook's pod as Kubeflow makes it from the stack's objects, in the three steps of a
real cluster (each only as far as the journey needs it):

1. The Jupyter web app turns the notebook form into a Notebook. Unless the user changes
   them, the image and the "configurations" come from the form's defaults in the spawner
   ConfigMap; each configuration is the label of a PodDefault (the first key of its
   selector's ``matchLabels``), and the Notebook gets that label set to ``"true"``.
2. The notebook controller makes the StatefulSet's pod ``<name>-0``: the Notebook's labels,
   ``NB_PREFIX``, the workspace volume at the home folder, service account
   ``default-editor``.
3. The admission webhook (kubeflow/kubeflow ``components/admission-webhook``) applies every
   PodDefault of the pod's namespace whose selector matches the pod's labels, unless the pod
   is annotated ``poddefault.admission.kubeflow.org/exclude: "true"``. Volumes are merged
   into the pod, env, volume mounts and envFrom into every container. Before anything is
   applied, the whole set is checked: an env variable, a volume or a volume mount named
   twice with different contents, or two different mounts at one path, is a conflict, and
   the webhook refuses the pod (``PodDefaultConflict``). Identical entries are merged once.
   Each applied PodDefault is recorded in an annotation.

PodDefault fields beyond those (tolerations, annotations, sidecars, ...) are refused here,
so the stack cannot start using one without this helper learning it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from components.kubeflow.transform import SPAWNER_CONFIG_KEY

ANNOTATION_PREFIX = "poddefault.admission.kubeflow.org"
NOTEBOOK_HOME = "/home/jovyan"
SERVICE_ACCOUNT = "default-editor"
_APPLIED_FIELDS = {"selector", "desc", "env", "envFrom", "volumes", "volumeMounts"}


class PodDefaultConflict(Exception):
    """The webhook refuses the pod: the PodDefaults conflict with it (or with each other)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


def form_defaults(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``spawnerFormDefaults`` of the rendered Jupyter web app's spawner ConfigMap."""
    found = [
        o
        for o in objects
        if o.get("kind") == "ConfigMap" and SPAWNER_CONFIG_KEY in (o.get("data") or {})
    ]
    if len(found) != 1:
        raise ValueError(f"expected one ConfigMap with {SPAWNER_CONFIG_KEY}, found {len(found)}")
    config = yaml.safe_load(found[0]["data"][SPAWNER_CONFIG_KEY])
    defaults: dict[str, Any] = config["spawnerFormDefaults"]
    return defaults


def notebook_from_form(
    defaults: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
    configurations: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The Notebook the web app creates when the form is submitted with its defaults (and
    ``configurations`` when the user changed them)."""
    chosen = (
        list(defaults.get("configurations", {}).get("value") or [])
        if configurations is None
        else list(configurations)
    )
    labels = {"app": name, **{label: "true" for label in chosen}}
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Notebook",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "template": {
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "containers": [
                        {
                            "name": name,
                            "image": defaults["image"]["value"],
                            "volumeMounts": [{"name": "workspace", "mountPath": NOTEBOOK_HOME}],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "workspace",
                            "persistentVolumeClaim": {"claimName": f"{name}-workspace"},
                        }
                    ],
                }
            }
        },
    }


def notebook_pod(notebook: Mapping[str, Any]) -> dict[str, Any]:
    """The pod the notebook controller's StatefulSet creates for ``notebook``."""
    metadata = notebook["metadata"]
    spec = copy.deepcopy(notebook["spec"]["template"]["spec"])
    name, namespace = metadata["name"], metadata["namespace"]
    for container in spec["containers"]:
        container.setdefault("env", []).append(
            {"name": "NB_PREFIX", "value": f"/notebook/{namespace}/{name}"}
        )
    labels = {**metadata.get("labels", {}), "notebook-name": name, "statefulset": name}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-0", "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def _selects(pod_default: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    selector = pod_default["spec"].get("selector") or {}
    unknown = set(selector) - {"matchLabels"}
    if unknown:
        raise ValueError(
            f"PodDefault {pod_default['metadata']['name']}: selector {sorted(unknown)} is not "
            "applied by this helper"
        )
    labels = pod["metadata"].get("labels") or {}
    matches = all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())
    return matches and pod_default["metadata"].get("namespace") == pod["metadata"]["namespace"]


def _merge_named(
    kind: str,
    existing: Sequence[Mapping[str, Any]],
    pod_defaults: Sequence[Mapping[str, Any]],
    field: str,
    problems: list[str],
) -> list[dict[str, Any]]:
    """``existing`` plus each PodDefault's ``field`` entries not already there by name; an
    entry of the same name with other contents is a conflict."""
    merged = [dict(item) for item in existing]
    by_name = {item["name"]: item for item in merged}
    for pod_default in pod_defaults:
        for item in pod_default["spec"].get(field) or []:
            found = by_name.get(item["name"])
            if found is None:
                by_name[item["name"]] = dict(item)
                merged.append(dict(item))
            elif found != item:
                problems.append(
                    f"merging {kind} for {pod_default['metadata']['name']} has a conflict on "
                    f"{item['name']}: {item} does not match {found}"
                )
    return merged


def _mount_path_conflicts(
    mounts: Sequence[Mapping[str, Any]], pod_defaults: Sequence[Mapping[str, Any]]
) -> list[str]:
    by_path = {mount["mountPath"]: mount for mount in mounts}
    problems = []
    for pod_default in pod_defaults:
        for mount in pod_default["spec"].get("volumeMounts") or []:
            found = by_path.setdefault(mount["mountPath"], mount)
            if found != mount:
                problems.append(
                    f"merging volume mounts for {pod_default['metadata']['name']} has a "
                    f"conflict on mount path {mount['mountPath']}: {mount} does not match {found}"
                )
    return problems


def apply_pod_defaults(
    pod: Mapping[str, Any], pod_defaults: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The pod as the admission webhook admits it (a copy; ``pod`` is not changed).

    Raises ``PodDefaultConflict`` listing every conflict, as the webhook refuses the pod.
    """
    admitted = copy.deepcopy(dict(pod))
    annotations = admitted["metadata"].get("annotations") or {}
    if annotations.get(f"{ANNOTATION_PREFIX}/exclude") == "true":
        return admitted
    matching = [pd for pd in pod_defaults if _selects(pd, admitted)]
    for pod_default in matching:
        unknown = set(pod_default["spec"]) - _APPLIED_FIELDS
        if unknown:
            raise ValueError(
                f"PodDefault {pod_default['metadata']['name']} sets {sorted(unknown)}, which "
                "this helper does not apply"
            )
    if not matching:
        return admitted
    spec = admitted["spec"]
    problems: list[str] = []
    volumes = _merge_named("volumes", spec.get("volumes") or [], matching, "volumes", problems)
    merged_containers = []
    for container in spec["containers"]:
        merged = dict(container)
        merged["env"] = _merge_named("env", container.get("env") or [], matching, "env", problems)
        mounts = container.get("volumeMounts") or []
        merged["volumeMounts"] = _merge_named(
            "volume mounts", mounts, matching, "volumeMounts", problems
        )
        problems += _mount_path_conflicts(mounts, matching)
        env_from = list(container.get("envFrom") or [])
        for pod_default in matching:
            env_from += pod_default["spec"].get("envFrom") or []
        if env_from:
            merged["envFrom"] = env_from
        merged_containers.append(merged)
    if problems:
        raise PodDefaultConflict(problems)
    spec["volumes"] = volumes
    spec["containers"] = merged_containers
    annotations = admitted["metadata"].setdefault("annotations", {})
    for pod_default in matching:
        version = pod_default["metadata"].get("resourceVersion", "")
        annotations[f"{ANNOTATION_PREFIX}/poddefault-{pod_default['metadata']['name']}"] = version
    return admitted


def pod_defaults_in(objects: Sequence[Mapping[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The PodDefaults the stack renders into ``namespace``."""
    return [
        dict(o)
        for o in objects
        if o.get("kind") == "PodDefault" and o["metadata"].get("namespace") == namespace
    ]


def in_namespace(
    objects: Sequence[Mapping[str, Any]], kind: str, namespace: str
) -> dict[str, dict[str, Any]]:
    """The rendered objects of ``kind`` in ``namespace``, by name."""
    return {
        o["metadata"]["name"]: dict(o)
        for o in objects
        if o.get("kind") == kind and o["metadata"].get("namespace") == namespace
    }
