"""What the stack renders for a profile, through the stack's own code path.

``render_profile_stack`` runs the real stack program (stack file -> typed model -> program ->
Kubeflow component) under Pulumi's mocks, from the example on-premises stack file
(``registryAccess: docker-config`` with a ``jobRegistry``, profile ``lab``), pointed at this
machine: the job registry and the notebook image (``notebookImage.image``) in the test
registry, the profile's docker config for it (the secret ``registryDockerConfigs.lab``), and
a GPU group ``gpu-spot`` (tainted for spot capacity) first, so it is the default. The
objects returned are exactly those the program hands to the Kubernetes provider: every
phase's ConfigGroup ``objs``, secrets revealed.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.pulumi_mocks import reveal, run_program, stack_file_config

STACK = "onprem"
PROFILE = "lab"
GPU_SPOT: dict[str, Any] = {
    "name": "gpu-spot",
    "labels": {"node-role.example.org/gpu": "spot"},
    "gpusPerNode": 1,
    "gpuModel": "NVIDIA A10G",
    "taints": [
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
        {"key": "capacity", "value": "spot", "effect": "NoSchedule"},
    ],
}


def docker_config(host: str, username: str, password: str) -> str:
    """A docker config.json with one registry's credentials."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}})


def render_profile_stack(
    *, job_registry: str, notebook_image: str, profile_docker_config: str
) -> list[dict[str, Any]]:
    """Every Kubernetes object the on-premises stack applies, with these values."""
    file_config = stack_file_config(STACK)
    kubeflow = {
        **file_config["kubeflow-eks:kubeflow"],
        "jobRegistry": job_registry,
        "notebookImage": {"image": notebook_image},
    }
    config = stack_file_config(
        STACK,
        **{
            "kubeflow-eks:kubeflow": kubeflow,
            "kubeflow-eks:gpuNodeGroups": [GPU_SPOT, *file_config["kubeflow-eks:gpuNodeGroups"]],
            "kubeflow-eks:registryDockerConfigs": {PROFILE: profile_docker_config},
        },
    )
    run = run_program(config, stack=STACK)
    objects: list[dict[str, Any]] = []
    for group in run.mocks.of_type("kubernetes:yaml/v2:ConfigGroup"):
        objects += reveal(group.inputs["objs"])
    return objects
