"""NVIDIA's DCGM exporter on the GPU nodes of an existing cluster: GPU metrics per GPU and pod.

On EKS the CloudWatch Observability add-on runs its own DCGM exporter; on premises this one
serves Prometheus text on port 9400 of every GPU node (and behind a Service). Its manifest is
NVIDIA's (dcgm-exporter.yaml), built here so that placement comes from the GPU groups: it
runs only on their nodes and tolerates exactly their taints. The objects are the input of a
``yaml/v2:ConfigGroup``, which is what tests see under mocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.gpu.scheduling import groups_node_affinity, union_tolerations
from model import GpuGroup

DCGM_EXPORTER = "dcgm-exporter"
DCGM_NAMESPACE = "nvidia-dcgm-exporter"
DCGM_PORT = 9400
# The kubelet's pod-resources socket: how the exporter knows which pod holds which GPU.
POD_RESOURCES = "/var/lib/kubelet/pod-resources"


@dataclass(frozen=True)
class DcgmExporterArgs:
    gpu_groups: tuple[GpuGroup, ...]
    image: str


def dcgm_exporter_objects(args: DcgmExporterArgs) -> list[dict[str, Any]]:
    """The namespace, DaemonSet and Service, placed on the GPU groups' nodes only."""
    labels = {"app.kubernetes.io/name": DCGM_EXPORTER}
    metadata = {"name": DCGM_EXPORTER, "namespace": DCGM_NAMESPACE, "labels": labels}
    container = {
        "name": DCGM_EXPORTER,
        "image": args.image,
        "env": [
            {"name": "DCGM_EXPORTER_LISTEN", "value": f":{DCGM_PORT}"},
            # Label each GPU's series with the pod and namespace holding it.
            {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "ports": [{"name": "metrics", "containerPort": DCGM_PORT}],
        "securityContext": {
            "runAsNonRoot": False,
            "runAsUser": 0,
            # Profiling metrics (DCGM_FI_PROF_*: tensor and memory-bandwidth activity) need it.
            "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]},
            "allowPrivilegeEscalation": False,
        },
        "volumeMounts": [{"name": "pod-resources", "mountPath": POD_RESOURCES, "readOnly": True}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "200m", "memory": "256Mi"},
        },
    }
    daemon_set = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "affinity": groups_node_affinity(args.gpu_groups),
                    "tolerations": union_tolerations(args.gpu_groups),
                    "containers": [container],
                    "volumes": [{"name": "pod-resources", "hostPath": {"path": POD_RESOURCES}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "selector": labels,
            "ports": [{"name": "metrics", "port": DCGM_PORT, "targetPort": "metrics"}],
        },
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DCGM_NAMESPACE}}
    return [namespace, daemon_set, service]


class DcgmExporter(pulumi.ComponentResource):
    """NVIDIA's DCGM exporter on the GPU groups' nodes. Pass the Kubernetes provider in ``opts``."""

    def __init__(
        self, name: str, args: DcgmExporterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubeflow-eks:gpu:DcgmExporter", name, None, opts)
        k8s.yaml.v2.ConfigGroup(
            f"{name}-objects",
            objs=dcgm_exporter_objects(args),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"namespace": DCGM_NAMESPACE, "port": DCGM_PORT})
