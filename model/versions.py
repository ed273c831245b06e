"""Pinned versions, one table per supported Kubernetes version (``versions.yaml``).

A ``pulumi up`` months later must install exactly what it installed the first time, so
every chart, image, EKS add-on and node AMI release is pinned here and nowhere else. How to
bump them is in docs/operator-guide.md ("Pinned versions") and, for node AMIs,
docs/upgrades.md ("Bumping node AMIs").
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import yaml

_TABLE = Path(__file__).with_name("versions.yaml")
# registry.k8s.io publishes an image holding /bin/kubectl for every Kubernetes release.
KUBECTL_REPOSITORY = "registry.k8s.io/kubectl"

AmiFamily = Literal["AL2023", "BOTTLEROCKET"]
AMI_FAMILIES: tuple[AmiFamily, ...] = get_args(AmiFamily)
# The form of a managed node group's releaseVersion, per AMI family: AL2023 releases are
# "<kubernetes patch>-<build date>" (awslabs/amazon-eks-ami), Bottlerocket's
# "<os version>-<commit>" (its image names end in them).
AMI_RELEASE_FORMS: Mapping[AmiFamily, tuple[str, str]] = {
    "AL2023": (r"^(\d+\.\d+)\.\d+-\d{8}$", "1.35.6-20260714"),
    "BOTTLEROCKET": (r"^\d+\.\d+\.\d+-[0-9a-f]{8}$", "1.53.0-0123abcd"),
}


class VersionTableError(ValueError):
    """model/versions.yaml lacks a pin or holds one of the wrong form."""


def ami_family(ami_type: str) -> AmiFamily:
    """The family of an EKS AMI type (``AL2023_x86_64_NVIDIA`` -> ``AL2023``)."""
    family = ami_type.split("_", 1)[0]
    if family not in AMI_FAMILIES:
        raise ValueError(f"AMI type {ami_type!r} is of no family in {AMI_FAMILIES}")
    return family


def ami_release_problem(
    family: AmiFamily, release: str, kubernetes_version: str | None = None
) -> str | None:
    """Why ``release`` cannot be the releaseVersion of a ``family`` node group (on this
    Kubernetes minor version, when given), or None. EKS refuses an AL2023 release of
    another minor."""
    regex, example = AMI_RELEASE_FORMS[family]
    found = re.match(regex, release)
    if found is None:
        return f"use the form {example} ({family} releases)"
    if family == "AL2023" and kubernetes_version and found.group(1) != kubernetes_version:
        return (
            f"use a {kubernetes_version}.x release: it is a {found.group(1)} release and the "
            f"cluster runs {kubernetes_version}"
        )
    return None


@dataclass(frozen=True)
class KubernetesPins:
    """What runs on one Kubernetes minor version."""

    kubernetes: str
    autoscaler_chart: str
    autoscaler_image: str
    kubectl: str
    load_balancer_controller_chart: str
    addons: Mapping[str, str]
    # The AMI release of each family's node groups; None where no release was verified.
    node_ami_releases: Mapping[AmiFamily, str | None]
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


def node_ami_releases(kubernetes_version: str, node_amis: object) -> dict[AmiFamily, str | None]:
    """A version's ``nodeAmis`` table: every family has a release of its form (or null, saying
    why in its source) and a source."""
    at = f"model/versions.yaml: kubernetes.{kubernetes_version}.nodeAmis"
    if not isinstance(node_amis, Mapping):
        raise VersionTableError(f"{at}: missing; pin the AMI release of each of {AMI_FAMILIES}")
    releases: dict[AmiFamily, str | None] = {}
    for family in AMI_FAMILIES:
        pin = node_amis.get(family)
        if not isinstance(pin, Mapping) or "release" not in pin:
            raise VersionTableError(
                f"{at}.{family}: missing; add {{release: ..., source: ...}} "
                "(release null when none could be verified)"
            )
        source, release = pin.get("source"), pin["release"]
        if not isinstance(source, str) or not source.strip():
            raise VersionTableError(f"{at}.{family}.source: say where the release was read")
        if release is not None:
            problem = ami_release_problem(family, str(release), kubernetes_version)
            if problem:
                raise VersionTableError(f"{at}.{family}.release: {release!r}: {problem}")
            release = str(release)
        releases[family] = release
    unknown = set(node_amis) - set(AMI_FAMILIES)
    if unknown:
        raise VersionTableError(f"{at}: {sorted(unknown)}: not an AMI family {AMI_FAMILIES}")
    return releases


def pins(kubernetes_version: str) -> KubernetesPins:
    entry = _table()["kubernetes"][kubernetes_version]  # type: ignore[index]
    return KubernetesPins(
        kubernetes=kubernetes_version,
        autoscaler_chart=str(entry["clusterAutoscaler"]["chart"]),
        autoscaler_image=str(entry["clusterAutoscaler"]["image"]),
        kubectl=str(entry["kubectl"]),
        load_balancer_controller_chart=str(entry["awsLoadBalancerController"]),
        addons={str(k): str(v) for k, v in entry["addons"].items()},
        node_ami_releases=node_ami_releases(kubernetes_version, entry.get("nodeAmis")),
        standard_support_until=entry["support"]["standardUntil"],
        extended_support_until=entry["support"]["extendedUntil"],
    )


def chart(name: str) -> str:
    """The pinned version of a chart that does not depend on the Kubernetes version."""
    return str(_table()["charts"][name])  # type: ignore[index]


def image(name: str) -> str:
    """The pinned image of something the stack deploys from its own manifests."""
    return str(_table()["images"][name])  # type: ignore[index]


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
