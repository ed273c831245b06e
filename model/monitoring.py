"""What the stack installs to watch the nodes and the GPUs (docs/gpu-metrics-and-node-health.md)."""

from __future__ import annotations

from pydantic import Field

from model.base import Model


class Monitoring(Model):
    """Node health and GPU metrics; both on by default, each pinned in model/versions.yaml."""

    gpu_metrics: bool = Field(
        default=True,
        description="per-GPU and per-pod NVIDIA metrics: on EKS the CloudWatch Observability "
        "add-on (Container Insights), on premises NVIDIA's DCGM exporter on the GPU nodes",
    )
    node_health: bool = Field(
        default=True,
        description="EKS only: the EKS node monitoring agent add-on, whose node conditions "
        "GPU groups' autoRepair acts on",
    )
