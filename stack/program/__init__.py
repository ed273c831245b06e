"""The whole stack, wired from one validated model: ``build_stack(cfg)`` registers every
resource and returns the outputs. ``__main__.py`` calls it; tests call it under mocks."""

from __future__ import annotations

from typing import Any

import pulumi

from components.gpu.dcgm_exporter import DcgmExporter, DcgmExporterArgs
from components.gpu.device_plugin import DevicePluginArgs, NvidiaDevicePlugin, needs_device_plugin
from model import EksStack, OnpremStack, versions
from stack.program.eks import build_eks
from stack.program.kubeflow import build_kubeflow, kubeflow_args_from_config, plan
from stack.program.onprem import build_onprem

__all__ = ["build_stack", "kubeflow_args_from_config"]


def build_stack(cfg: EksStack | OnpremStack) -> dict[str, Any]:
    """Register every resource of the stack; returns the stack outputs."""
    # Render and check Kubeflow before any resource: a selection that cannot work fails here.
    kubeflow = plan(cfg) if cfg.kubeflow.enabled else None
    if isinstance(cfg, EksStack):
        platform, outputs = build_eks(cfg)
    else:
        platform, outputs = build_onprem(cfg)
    plugin = DevicePluginArgs(cfg.device_plugin, gpu_groups=cfg.gpu_node_groups)
    if cfg.device_plugin.enabled and needs_device_plugin(plugin):
        NvidiaDevicePlugin(
            f"{cfg.cluster_name}-nvidia",
            plugin,
            opts=pulumi.ResourceOptions(providers=[platform.provider], depends_on=platform.ready),
        )
    # On EKS the CloudWatch add-on collects GPU metrics (stack.program.eks).
    if isinstance(cfg, OnpremStack) and cfg.monitoring.gpu_metrics:
        DcgmExporter(
            f"{cfg.cluster_name}-dcgm-exporter",
            DcgmExporterArgs(gpu_groups=cfg.gpu_node_groups, image=versions.image("dcgm-exporter")),
            opts=pulumi.ResourceOptions(providers=[platform.provider], depends_on=platform.ready),
        )
    if kubeflow is not None:
        args, kubeflow_plan = kubeflow
        build_kubeflow(cfg, args, kubeflow_plan, platform, outputs)
    return outputs
