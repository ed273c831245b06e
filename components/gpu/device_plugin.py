"""The NVIDIA device plugin (Helm chart), only on GPU nodes that don't ship their own.

Its tolerations and node affinity are derived from the GPU groups' scheduling data, so the
taints are typed once, in the node-group config. The chart's values are an input of the
`helm.sh/v3:Release`, which is what tests see under mocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import yaml
from pulumi_kubernetes.helm.v3 import Release, ReleaseArgs, RepositoryOptsArgs

from components.gpu.scheduling import groups_node_affinity, union_tolerations
from model import GPU_RESOURCE, DevicePlugin, GpuGroup

DEVICE_PLUGIN_CHART = "nvidia-device-plugin"
DEVICE_PLUGIN_REPO = "https://nvidia.github.io/k8s-device-plugin"
DEVICE_PLUGIN_NAMESPACE = "nvidia-device-plugin"
TIME_SLICING_CONFIG_NAME = "time-slicing"


@dataclass(frozen=True)
class DevicePluginArgs:
    """The stack's device plugin settings (chart, time-slicing) and the GPU groups it serves,
    as the model validated them."""

    plugin: DevicePlugin
    gpu_groups: tuple[GpuGroup, ...]

    @property
    def served_groups(self) -> tuple[GpuGroup, ...]:
        """Groups our plugin must run on: those whose node image has no plugin of its own."""
        return tuple(g for g in self.gpu_groups if not g.bundles_device_plugin)


def needs_device_plugin(args: DevicePluginArgs) -> bool:
    return bool(args.served_groups)


def time_slicing_config(replicas: int) -> str:
    """The plugin's config file sharing each GPU between `replicas` pods."""
    return yaml.safe_dump(
        {
            "version": "v1",
            "sharing": {
                "timeSlicing": {"resources": [{"name": GPU_RESOURCE, "replicas": replicas}]}
            },
        },
        sort_keys=False,
    )


def device_plugin_values(args: DevicePluginArgs) -> dict[str, Any]:
    """Helm values: tolerate exactly the served groups' taints, run only on their nodes."""
    groups = args.served_groups
    values: dict[str, Any] = {
        # Replace the chart's defaults (which tolerate any nvidia.com/gpu taint and
        # CriticalAddonsOnly) with exactly our taints.
        "tolerations": union_tolerations(groups),
        # Bottlerocket NVIDIA nodes are excluded simply by not being listed here.
        "affinity": groups_node_affinity(groups),
    }
    # 0 = off; N >= 2 advertises each GPU N times (pods share it, with no memory isolation).
    replicas = args.plugin.time_slicing_replicas
    if replicas:
        values["config"] = {
            "map": {TIME_SLICING_CONFIG_NAME: time_slicing_config(replicas)},
            "default": TIME_SLICING_CONFIG_NAME,
        }
    return values


class NvidiaDevicePlugin(pulumi.ComponentResource):
    """The nvidia-device-plugin chart; registers no Release when every group bundles a plugin.

    Pass the Kubernetes provider through `opts`.
    """

    release: Release | None

    def __init__(
        self,
        name: str,
        args: DevicePluginArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubeflow-eks:device_plugin:NvidiaDevicePlugin", name, None, opts)
        self.release = None
        if needs_device_plugin(args):
            self.release = Release(
                f"{name}-chart",
                ReleaseArgs(
                    chart=DEVICE_PLUGIN_CHART,
                    version=args.plugin.chart_version,
                    repository_opts=RepositoryOptsArgs(repo=DEVICE_PLUGIN_REPO),
                    namespace=DEVICE_PLUGIN_NAMESPACE,
                    create_namespace=True,
                    values=device_plugin_values(args),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs(
            {
                "installed": self.release is not None,
                "served_groups": [g.name for g in args.served_groups],
            }
        )
