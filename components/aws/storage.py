"""Storage for PVCs: the EBS CSI driver add-on with its IRSA role and a default gp3 class."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.aws.iam import IrsaRole, IrsaRoleArgs

EBS_CSI_NAMESPACE = "kube-system"
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
EBS_CSI_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
DEFAULT_STORAGE_CLASS = "gp3"


def default_storage_class() -> dict[str, Any]:
    """The cluster's default StorageClass: encrypted gp3, bound where the pod lands.

    WaitForFirstConsumer makes the volume follow the pod's AZ, so a notebook scheduled on a
    GPU node in another AZ does not get stuck with an unattachable volume.
    """
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": DEFAULT_STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "ebs.csi.aws.com",
        "parameters": {"type": "gp3", "encrypted": "true", "fsType": "ext4"},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }


@dataclass(frozen=True)
class EbsStorageArgs:
    cluster_name: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    provider: k8s.Provider
    addon_version: str
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    permissions_boundary: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class EbsStorage(pulumi.ComponentResource):
    """EBS volumes for Kubeflow's PVCs (databases, notebook workspaces)."""

    def __init__(self, name: str, args: EbsStorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kubeflow-eks:storage:EbsStorage", name, None, opts)
        role = IrsaRole(
            f"{name}-csi",
            IrsaRoleArgs(
                oidc_provider_arn=args.oidc_provider_arn,
                oidc_provider_url=args.oidc_provider_url,
                namespace=EBS_CSI_NAMESPACE,
                service_account=EBS_CSI_SERVICE_ACCOUNT,
                managed_policy_arns=(EBS_CSI_POLICY,),
                permissions_boundary=args.permissions_boundary,
                tags=args.tags,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        addon = aws.eks.Addon(
            f"{name}-csi",
            cluster_name=args.cluster_name,
            addon_name="aws-ebs-csi-driver",
            addon_version=args.addon_version,
            service_account_role_arn=role.arn,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=dict(args.tags),
            # Its controller needs a node to run on.
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        k8s.yaml.v2.ConfigGroup(
            f"{name}-class",
            objs=[default_storage_class()],
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=[addon]),
        )
        self.storage_class = DEFAULT_STORAGE_CLASS
        self.register_outputs({"storage_class": self.storage_class})
