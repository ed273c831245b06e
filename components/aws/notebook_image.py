"""The platform's notebook image, built with BuildKit and pushed to the stack's ECR.

The recipe is ``images/notebook/Dockerfile``; fnjob's sources come in as the named build
context ``fnjob``. The image is referenced by digest, so the notebook form and fnjob's
default base image name exactly what was built. Building needs Docker with BuildKit where
``pulumi up`` runs (CI runners have it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from components.aws.registry import scanned_repository

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "images" / "notebook"
NOTEBOOK_REPOSITORY = "notebook"


@dataclass(frozen=True)
class NotebookImageArgs:
    cluster_name: str
    base_image: str
    kubectl_image: str
    keep_untagged_images: int
    tags: Mapping[str, str] = field(default_factory=dict)


class NotebookImage(pulumi.ComponentResource):
    """``<cluster>/notebook`` in ECR and the image built into it; ``ref`` is digest-pinned."""

    ref: pulumi.Output[str]
    repository_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: NotebookImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("kubeflow-eks:images:NotebookImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        repository = scanned_repository(
            f"{name}-repo",
            f"{args.cluster_name}/{NOTEBOOK_REPOSITORY}",
            keep_untagged=args.keep_untagged_images,
            tags=args.tags,
            opts=child,
        )
        token = aws.ecr.get_authorization_token_output(
            registry_id=repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        image = docker_build.Image(
            f"{name}-image",
            context=docker_build.BuildContextArgs(
                location=str(RECIPE),
                named={"fnjob": docker_build.ContextArgs(location=str(ROOT / "fnjob"))},
            ),
            dockerfile=docker_build.DockerfileArgs(location=str(RECIPE / "Dockerfile")),
            build_args={"BASE_IMAGE": args.base_image, "KUBECTL_IMAGE": args.kubectl_image},
            platforms=[docker_build.Platform.LINUX_AMD64],
            push=True,
            tags=[repository.repository_url.apply(lambda url: f"{url}:latest")],
            registries=[
                docker_build.RegistryArgs(
                    address=repository.repository_url,
                    username=token.user_name,
                    password=token.password,
                )
            ],
            opts=child,
        )
        self.repository_name = repository.name
        self.ref = pulumi.Output.concat(repository.repository_url, "@", image.digest)
        self.register_outputs({"ref": self.ref})
