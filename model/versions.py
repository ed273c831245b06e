"""Pinned versions, one table per supported Kubernetes version (``versions.yaml``).

A ``pulumi up`` months later must install exactly what it installed the first time, so
every chart, image and EKS add-on is pinned here and nowhere else. How to bump them is in
the README ("Upgrading pinned versions").
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

_TABLE = Path(__file__).with_name("versions.yaml")
# registry.k8s.io publishes an image holding /bin/kubectl for every Kubernetes release.
KUBECTL_REPOSITORY = "registry.k8s.io/kubectl"


@dataclass(frozen=True)
class KubernetesPins:
    """What runs on one Kubernetes minor version."""

    kubernetes: str
    autoscaler_chart: str
    autoscaler_image: str
    kubectl: str
    load_balancer_controller_chart: str
    addons: Mapping[str, str]
    standard_support_until: datetime.date
    extended_support_until: datetime.date

    def support_warning(self, today: datetime.date) -> str | None:
        """Why a cluster on this version costs more or is about to be upgraded by EKS."""
        if today <= self.standard_support_until:
            return None
        newer = [v for v in SUPPORTED_KUBERNETES_VERSIONS if _minor(v) > _minor(self.kubernetes)]
        move = f"; move to {newer[-1]}" if newer else ""
        if today <= self.extended_support_until:
            return (
                f"{self.kubernetes} left EKS standard support on {self.standard_support_until}: "
                f"extended support costs more per cluster-hour, until "
                f"{self.extended_support_until}{move}"
            )
        return (
            f"{self.kubernetes} left EKS extended support on {self.extended_support_until}: "
            f"EKS upgrades such clusters on its own{move}"
        )


def _minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@functools.cache
def _table() -> Mapping[str, object]:
    data = yaml.safe_load(_TABLE.read_text())
    assert isinstance(data, dict)
    return data


def pins(kubernetes_version: str) -> KubernetesPins:
    entry = _table()["kubernetes"][kubernetes_version]  # type: ignore[index]
    return KubernetesPins(
        kubernetes=kubernetes_version,
        autoscaler_chart=str(entry["clusterAutoscaler"]["chart"]),
        autoscaler_image=str(entry["clusterAutoscaler"]["image"]),
        kubectl=str(entry["kubectl"]),
        load_balancer_controller_chart=str(entry["awsLoadBalancerController"]),
        addons={str(k): str(v) for k, v in entry["addons"].items()},
        standard_support_until=entry["support"]["standardUntil"],
        extended_support_until=entry["support"]["extendedUntil"],
    )


def chart(name: str) -> str:
    """The pinned version of a chart that does not depend on the Kubernetes version."""
    return str(_table()["charts"][name])  # type: ignore[index]


SUPPORTED_KUBERNETES_VERSIONS: tuple[str, ...] = tuple(_table()["kubernetes"])  # type: ignore[arg-type]
DEFAULT_KUBERNETES_VERSION: str = str(_table()["default"])


def kubeflow_release() -> str:
    """The kubeflow/manifests release a stack installs unless it names another."""
    return str(_table()["kubeflow"])


def notebook_base(flavor: str) -> str:
    """The Kubeflow notebook image the stack's notebook image builds on."""
    return str(_table()["notebookBases"][flavor])  # type: ignore[index]


def kubectl_image(kubernetes_version: str) -> str:
    """The image whose kubectl the notebook image copies, for one Kubernetes minor version."""
    return f"{KUBECTL_REPOSITORY}:{pins(kubernetes_version).kubectl}"
