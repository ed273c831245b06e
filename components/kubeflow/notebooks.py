"""What a profile's notebooks get so fnjob works with no setup (pure object builders).

Per profile namespace:
- ConfigMap ``fnjob-gpu-groups``: how to land on each GPU group (the stack's one GPU-group
  type, published as fnjob's ``gpu-groups.json``);
- Secret ``registry-credentials`` (registryAccess docker-config): the profile's own docker
  config, used as the pull secret of its ServiceAccount and mounted into its notebooks;
- PodDefault ``fnjob``, selected by default in the notebook form: sets ``FNJOB_REGISTRY``,
  ``FNJOB_BASE_IMAGE`` and ``FNJOB_GPU_GROUPS``, mounts the GPU groups file and, with
  docker-config, the credentials at ``~/.docker/config.json``.

The admission webhook applies a PodDefault to every pod whose labels match its selector; the
notebook form adds the label when the PodDefault is ticked (and ticks it by default here).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from components.kubeflow.manifests import KubeObject

FNJOB_PODDEFAULT = "fnjob"
FNJOB_LABEL = "kubeflow-eks.io/fnjob"
GPU_GROUPS_CONFIG_MAP = "fnjob-gpu-groups"
GPU_GROUPS_KEY = "gpu-groups.json"
GPU_GROUPS_DIR = "/etc/fnjob"
REGISTRY_SECRET = "registry-credentials"
NOTEBOOK_HOME = "/home/jovyan"


def gpu_groups_config_map(namespace: str, document: Mapping[str, Any]) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": GPU_GROUPS_CONFIG_MAP, "namespace": namespace},
        "data": {GPU_GROUPS_KEY: json.dumps(document, indent=2, sort_keys=True)},
    }


def registry_secret(namespace: str, docker_config_json: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": REGISTRY_SECRET, "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(docker_config_json.encode()).decode()},
    }


def fnjob_pod_default(
    namespace: str,
    *,
    registry: str | None,
    base_image: str | None,
    docker_config: bool,
) -> KubeObject:
    """The PodDefault that configures fnjob in a profile's notebooks."""
    env = [{"name": "FNJOB_GPU_GROUPS", "value": f"{GPU_GROUPS_DIR}/{GPU_GROUPS_KEY}"}]
    if registry:
        env.append({"name": "FNJOB_REGISTRY", "value": registry})
    if base_image:
        env.append({"name": "FNJOB_BASE_IMAGE", "value": base_image})
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
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                },
            }
        )
        mounts.append(
            {
                "name": "registry-credentials",
                "mountPath": f"{NOTEBOOK_HOME}/.docker/config.json",
                "subPath": "config.json",
                "readOnly": True,
            }
        )
    return {
        "apiVersion": "kubeflow.org/v1alpha1",
        "kind": "PodDefault",
        "metadata": {"name": FNJOB_PODDEFAULT, "namespace": namespace},
        "spec": {
            "desc": "fnjob: registry, base image and GPU groups for jobs",
            "selector": {"matchLabels": {FNJOB_LABEL: "true"}},
            "env": env,
            "volumes": volumes,
            "volumeMounts": mounts,
        },
    }
