"""An onprem stack: an existing cluster reached through a kubeconfig; no AWS resource."""

from __future__ import annotations

import os
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from model import OnpremStack
from stack.program.platform import Platform


def build_onprem(cfg: OnpremStack) -> tuple[Platform, dict[str, Any]]:
    """An existing cluster reached through a kubeconfig: no AWS resource at all."""
    name = cfg.cluster_name
    if cfg.onprem_kubeconfig is not None:
        kubeconfig: pulumi.Input[str] = pulumi.Output.secret(
            cfg.onprem_kubeconfig.get_secret_value()
        )
    else:
        path = os.path.expanduser(cfg.onprem.kubeconfig_path or "")
        # The provider reads the file itself; the path is not secret, its content is.
        kubeconfig = path
    provider = k8s.Provider(
        f"{name}-k8s",
        kubeconfig=kubeconfig,
        context=cfg.onprem.context,
        delete_unreachable=False,
    )
    context = f" --context {cfg.onprem.context}" if cfg.onprem.context else ""
    outputs: dict[str, Any] = {
        "clusterName": name,
        "connectCommand": f"kubectl{context} get nodes -l nvidia.com/gpu.present=true",
    }
    return Platform(provider=provider, ready=[]), outputs
