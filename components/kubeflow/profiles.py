"""What the stack puts into each profile namespace (pure object builders).

For every profile the stack manages (its configured ones, and upstream's example profile,
which it gives to the admin):
- the Namespace, annotated with its owner: the profile controller adopts a namespace whose
  ``owner`` annotation names the profile's owner, so everything below can be applied with
  the Profile, without waiting for the controller (and without racing it);
- NetworkPolicy ``kubeflow-eks-profile-isolation``: other profiles' pods cannot connect;
- with registryAccess docker-config, Secret ``registry-credentials`` holding *that profile's*
  docker config, and ServiceAccount ``default-editor`` pulling with it (the controller creates
  the account only when it does not exist yet, and leaves our imagePullSecrets alone);
- when the notebook admission webhook is installed (PodDefault CRD): ConfigMap
  ``fnjob-gpu-groups`` and PodDefault ``fnjob``, selected by default in the notebook form,
  which set ``FNJOB_REGISTRY``, ``FNJOB_BASE_IMAGE``, ``FNJOB_GPU_GROUPS`` (and
  ``FNJOB_DATA_URL``, the profile's data location, when the stack has one;
  ``FNJOB_TRAINING_RUNTIME``, the default ClusterTrainingRuntime, when Trainer is deployed)
  and, with docker-config, mount the profile's credentials read-only at
  ``/etc/registry-auth`` (a folder outside the workspace volume, named by ``DOCKER_CONFIG``
  for docker and fnjob and by ``REGISTRY_AUTH_FILE`` for podman, skopeo and buildah). A
  ``subPath`` file under
  ``$HOME`` would land on the workspace volume, where the runtime leaves an empty root-owned
  ``~/.docker/config.json`` behind that outlives the mount and shadows ``docker login``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from components.gpu.scheduling import gpu_groups_document
from components.kubeflow.manifests import KubeObject
from model import GpuGroup
from model.kubeflow import UPSTREAM_EXAMPLE_PROFILE, Profile, Quota

PROFILE_EDITOR_SA = "default-editor"
REGISTRY_SECRET = "registry-credentials"
FNJOB_PODDEFAULT = "fnjob"
FNJOB_LABEL = "kubeflow-eks.io/fnjob"
GPU_GROUPS_CONFIG_MAP = "fnjob-gpu-groups"
GPU_GROUPS_KEY = "gpu-groups.json"
GPU_GROUPS_DIR = "/etc/fnjob"
NOTEBOOK_HOME = "/home/jovyan"
# What upstream's profile controller labels a profile namespace with (its namespace-labels
# ConfigMap), and what upstream's own NetworkPolicies admit profiles by.
PROFILE_NAMESPACE_LABEL = "app.kubernetes.io/part-of"
PROFILE_NAMESPACE_VALUE = "kubeflow-profile"
PROFILE_ISOLATION_POLICY = "kubeflow-eks-profile-isolation"
# The profile's data location (EKS: its S3 prefix), for notebooks and the jobs they start.
DATA_URL_ENV = "FNJOB_DATA_URL"
# The stack's default ClusterTrainingRuntime, set only when Trainer is deployed.
TRAINING_RUNTIME_ENV = "FNJOB_TRAINING_RUNTIME"
# Where the profile's registry credentials appear in notebooks (not under the home folder,
# which is the workspace volume).
REGISTRY_AUTH_DIR = "/etc/registry-auth"
REGISTRY_AUTH_FILE = "config.json"


@dataclass(frozen=True)
class NotebookSetup:
    """What notebooks get for fnjob; values known at deploy time (digests, registry URLs)."""

    # The stack's notebook image (first in the form), digest-pinned; None when there is none.
    image: str | None = None
    # Default base image of jobs: the configured one, else the notebook image.
    job_base_image: str | None = None
    # Profile -> where fnjob pushes (FNJOB_REGISTRY).
    registries: Mapping[str, str] = field(default_factory=dict)
    # Profile -> its data location (FNJOB_DATA_URL), e.g. s3://bucket/profile/.
    data_urls: Mapping[str, str] = field(default_factory=dict)
    # The stack's GPU groups, published to fnjob as gpu-groups.json.
    gpu_groups: tuple[GpuGroup, ...] = ()
    # Jobs without their own timeout stop after this long (FNJOB_DEFAULT_TIMEOUT).
    job_timeout_seconds: int | None = None
    # The stack's default ClusterTrainingRuntime (FNJOB_TRAINING_RUNTIME); None when
    # Trainer is not deployed (fnjob then runs an indexed Job and a headless Service).
    training_runtime: str | None = None

    @property
    def base_image(self) -> str | None:
        return self.job_base_image or self.image


def namespace(profile_name: str, owner: str) -> KubeObject:
    # The profile controller's own label, set from the start (the controller keeps a label
    # that exists): other profiles' isolation below selects on it.
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": profile_name,
            "annotations": {"owner": owner},
            "labels": {PROFILE_NAMESPACE_LABEL: PROFILE_NAMESPACE_VALUE},
        },
    }


def isolation_policy(profile_name: str) -> KubeObject:
    """Pods of the profile admit its own pods and the platform's (every namespace that is no
    profile: the Istio gateway, the notebook culler, Katib, Knative's activator, ...), never
    another profile's. Istio's authorization is per request; this holds for any port."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": PROFILE_ISOLATION_POLICY, "namespace": profile_name},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {}},
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": PROFILE_NAMESPACE_LABEL,
                                        "operator": "NotIn",
                                        "values": [PROFILE_NAMESPACE_VALUE],
                                    }
                                ]
                            }
                        },
                    ]
                }
            ],
        },
    }


def profile(spec: Profile, default_quota: Quota) -> KubeObject:
    """The Profile; its quota is its own, else the stack's default one."""
    body: dict[str, Any] = {"owner": {"kind": "User", "name": spec.owner}}
    body.update(quota_spec((spec.quota or default_quota).hard()))
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": spec.name},
        "spec": body,
    }


def quota_spec(quota: Mapping[str, str]) -> dict[str, Any]:
    """A Profile's `resourceQuotaSpec`: the profile controller makes it the namespace's
    ResourceQuota `kf-resource-quota`, so pods past it are refused at creation."""
    return {"resourceQuotaSpec": {"hard": dict(quota)}} if quota else {}


def registry_secret(profile_name: str, docker_config_json: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": REGISTRY_SECRET, "namespace": profile_name},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(docker_config_json.encode()).decode()},
    }


def editor_pulling_with_credentials(profile_name: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": PROFILE_EDITOR_SA, "namespace": profile_name},
        "imagePullSecrets": [{"name": REGISTRY_SECRET}],
    }


def gpu_groups_config_map(profile_name: str, groups: tuple[GpuGroup, ...]) -> KubeObject:
    """fnjob's gpu-groups.json (``FNJOB_GPU_GROUPS``), made from the stack's GPU groups."""
    document = gpu_groups_document(groups)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": GPU_GROUPS_CONFIG_MAP, "namespace": profile_name},
        "data": {GPU_GROUPS_KEY: json.dumps(document, indent=2, sort_keys=True)},
    }


def fnjob_pod_default(
    profile_name: str,
    *,
    registry: str | None,
    base_image: str | None,
    docker_config: bool,
    data_url: str | None = None,
    job_timeout_seconds: int | None = None,
    training_runtime: str | None = None,
) -> KubeObject:
    """The PodDefault that configures fnjob in a profile's notebooks."""
    env = [{"name": "FNJOB_GPU_GROUPS", "value": f"{GPU_GROUPS_DIR}/{GPU_GROUPS_KEY}"}]
    if registry:
        env.append({"name": "FNJOB_REGISTRY", "value": registry})
    if base_image:
        env.append({"name": "FNJOB_BASE_IMAGE", "value": base_image})
    if data_url:
        env.append({"name": DATA_URL_ENV, "value": data_url})
    if job_timeout_seconds:
        env.append({"name": "FNJOB_DEFAULT_TIMEOUT", "value": str(job_timeout_seconds)})
    if training_runtime:
        env.append({"name": TRAINING_RUNTIME_ENV, "value": training_runtime})
    volumes: list[dict[str, Any]] = [
        {"name": "fnjob-gpu-groups", "configMap": {"name": GPU_GROUPS_CONFIG_MAP}}
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "fnjob-gpu-groups", "mountPath": GPU_GROUPS_DIR, "readOnly": True}
    ]
    if docker_config:
        volumes.append(
            {
                "name": "registry-credentials",
                "secret": {
                    "secretName": REGISTRY_SECRET,
                    "items": [{"key": ".dockerconfigjson", "path": REGISTRY_AUTH_FILE}],
                },
            }
        )
        mounts.append(
            {"name": "registry-credentials", "mountPath": REGISTRY_AUTH_DIR, "readOnly": True}
        )
        env += [
            {"name": "DOCKER_CONFIG", "value": REGISTRY_AUTH_DIR},
            {"name": "REGISTRY_AUTH_FILE", "value": f"{REGISTRY_AUTH_DIR}/{REGISTRY_AUTH_FILE}"},
        ]
    return {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": FNJOB_PODDEFAULT, "namespace": profile_name},
        "spec": {
            "desc": "fnjob: registry, base image and GPU groups for jobs",
            "selector": {"matchLabels": {FNJOB_LABEL: "true"}},
            "env": env,
            "volumes": volumes,
            "volumeMounts": mounts,
        },
    }


# The header the gateway sets to the logged-in user's email (upstream's USERID_HEADER).
USERID_HEADER = "kubeflow-userid"


def contributor_objects(profile_name: str, email: str, role: str) -> list[KubeObject]:
    """What Kubeflow's access management (KFAM) makes when an owner shares a profile: a
    RoleBinding to ``kubeflow-<role>`` for the user, and an Istio AuthorizationPolicy letting
    requests carrying their login into the namespace. Same names and annotations as KFAM's,
    so the dashboard's "manage contributors" page lists them."""
    name = f"user-{re.sub(r'[^a-z0-9]+', '-', email.lower())}-clusterrole-{role}"
    metadata = {
        "name": name,
        "namespace": profile_name,
        "annotations": {"user": email, "role": role},
    }
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"kubeflow-{role}",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": email}],
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": dict(metadata),
            "spec": {
                "action": "ALLOW",
                "rules": [
                    {"when": [{"key": f"request.headers[{USERID_HEADER}]", "values": [email]}]}
                ],
            },
        },
    ]


def profile_objects(
    profiles: tuple[Profile, ...],
    *,
    default_quota: Quota,
    adopted_owner: str | None = None,
    docker_configs: Mapping[str, str],
    notebooks: NotebookSetup | None,
) -> list[KubeObject]:
    """Profiles to create, and what every managed profile namespace gets.

    ``adopted_owner``, when upstream's manifests define their example profile: its new owner
    (the admin); it gets everything but a second Profile object. ``notebooks`` None means
    the notebook admission webhook (PodDefault) is not installed.
    """
    objects: list[KubeObject] = [profile(p, default_quota) for p in profiles]
    managed = [(p.name, p.owner, p.contributors) for p in profiles]
    if adopted_owner is not None:
        managed.append((UPSTREAM_EXAMPLE_PROFILE, adopted_owner, ()))
    for name, owner, contributors in managed:
        objects += [namespace(name, owner), isolation_policy(name)]
        for contributor in contributors:
            objects += contributor_objects(name, contributor.email, contributor.role)
        docker = docker_configs.get(name)
        if docker is not None:
            objects += [
                registry_secret(name, docker),
                editor_pulling_with_credentials(name),
            ]
        if notebooks is not None:
            objects += [
                gpu_groups_config_map(name, notebooks.gpu_groups),
                fnjob_pod_default(
                    name,
                    registry=notebooks.registries.get(name),
                    base_image=notebooks.base_image,
                    docker_config=docker is not None,
                    data_url=notebooks.data_urls.get(name),
                    job_timeout_seconds=notebooks.job_timeout_seconds,
                    training_runtime=notebooks.training_runtime,
                ),
            ]
    return objects
