"""Kubeflow in a stack: its arguments from the model, the plan made before any resource, and
what notebooks need (the notebook image, each profile's registry and credentials)."""

from __future__ import annotations

from typing import Any

import pulumi

from components.aws.data import ProfileData, ProfileDataArgs
from components.aws.notebook_image import NotebookImage, NotebookImageArgs
from components.aws.registry import ProfileRegistries, ProfileRegistriesArgs
from components.kubeflow.access import Access, GatewayTls
from components.kubeflow.component import DeployInputs, Kubeflow, KubeflowPlan, plan_kubeflow
from components.kubeflow.manifests import ComponentSelectionError
from components.kubeflow.objects import name_of
from components.kubeflow.profiles import ProfileSpec
from components.kubeflow.references import ReferenceClosureError
from components.kubeflow.transform import KubeflowArgs
from stack import versions
from stack.model import EksStack, OnpremStack
from stack.model.kubeflow import UPSTREAM_EXAMPLE_PROFILE
from stack.problems import Problem, StackConfigError, show
from stack.program.eks import kubeflow_load_balancer, stack_tags
from stack.program.platform import Platform

PLACEHOLDER = "FROM-STACK"


def access_of(cfg: EksStack | OnpremStack) -> Access:
    kubeflow = cfg.kubeflow
    if kubeflow.ingress != "load-balancer":
        return Access()
    if isinstance(cfg, EksStack):
        return Access(domain=kubeflow.domain, behind_load_balancer=True)
    return Access(
        domain=kubeflow.domain,
        gateway_tls=GatewayTls(
            cluster_issuer=kubeflow.tls.cluster_issuer, secret_name=kubeflow.tls.secret_name
        ),
        service_type=kubeflow.load_balancer.service_type,
        node_port=kubeflow.load_balancer.node_port,
        allowed_cidrs=kubeflow.load_balancer.allowed_cidrs,
    )


def kubeflow_args_from_config(cfg: EksStack | OnpremStack) -> KubeflowArgs:
    kubeflow = cfg.kubeflow
    assert kubeflow.admin_email is not None  # the model requires it when Kubeflow is on
    return KubeflowArgs(
        admin_email=kubeflow.admin_email,
        source=kubeflow.source,
        components=kubeflow.components,
        http_mode=kubeflow.http_mode,
        gpu_groups=cfg.gpu_node_groups,
        notebook_images=kubeflow.notebook_images,
        profiles=tuple(ProfileSpec(p.name, p.owner) for p in kubeflow.profiles),
        registry_access=kubeflow.registry_access,
        access=access_of(cfg),
    )


def deploy_shape(cfg: EksStack | OnpremStack) -> DeployInputs:
    """The deploy-time values' shape (which exist, for which profiles), with placeholders:
    enough to plan, and what the render command shows."""
    kubeflow = cfg.kubeflow
    profiles = [p.name for p in kubeflow.profiles]
    docker = kubeflow.registry_access == "docker-config"
    has_image = kubeflow.notebook_image.build or kubeflow.notebook_image.image is not None
    registries: list[str] = []
    if kubeflow.registry_access == "ecr" or (docker and kubeflow.job_registry):
        registries = profiles
    return DeployInputs(
        docker_configs={p: PLACEHOLDER for p in cfg.registry_docker_configs} if docker else {},
        notebook_image=PLACEHOLDER if has_image else None,
        job_base_image=kubeflow.job_base_image,
        registries={p: PLACEHOLDER for p in registries},
    )


def plan(cfg: EksStack | OnpremStack) -> tuple[KubeflowArgs, KubeflowPlan]:
    """What Kubeflow will apply, before any resource exists; a component selection that
    cannot work is a problem of the stack's configuration."""
    args = kubeflow_args_from_config(cfg)
    given = show(list(args.components or ()))
    try:
        return args, plan_kubeflow(args, deploy_shape(cfg))
    except ComponentSelectionError as error:
        raise StackConfigError([Problem("kubeflow.components", given, str(error))]) from None
    except ReferenceClosureError as error:
        fix = (
            f"add {', '.join(error.entries)}: {len(error.problems)} objects refer to what "
            "they would render"
            if error.entries
            else str(error)
        )
        raise StackConfigError([Problem("kubeflow.components", given, fix)]) from None


def _managed_profiles(cfg: EksStack | OnpremStack, kubeflow_plan: KubeflowPlan) -> list[str]:
    """The configured profiles, and upstream's example profile when it is rendered (the stack
    gives it to the admin)."""
    names = [p.name for p in cfg.kubeflow.profiles]
    upstream = any(
        o.get("kind") == "Profile" and name_of(o) == UPSTREAM_EXAMPLE_PROFILE
        for o in kubeflow_plan.rendered.objects
    )
    return [*names, UPSTREAM_EXAMPLE_PROFILE] if upstream else names


def _deploy_inputs(
    cfg: EksStack | OnpremStack, kubeflow_plan: KubeflowPlan, outputs: dict[str, Any]
) -> DeployInputs:
    """The notebook image, each profile's registry and credentials: created here when the
    stack owns them (EKS with ECR), else taken from the configuration."""
    kubeflow = cfg.kubeflow
    profiles = _managed_profiles(cfg, kubeflow_plan)
    image: pulumi.Input[str] | None = kubeflow.notebook_image.image
    registries: dict[str, pulumi.Input[str]] = {}
    data_urls: dict[str, pulumi.Input[str]] = {}
    if isinstance(cfg, EksStack) and kubeflow.registry_access == "ecr":
        assert cfg.region is not None
        tags = stack_tags(cfg)
        base_repositories: list[pulumi.Input[str]] = []
        if kubeflow.notebook_image.build:
            built = NotebookImage(
                f"{cfg.cluster_name}-notebook",
                NotebookImageArgs(
                    cluster_name=cfg.cluster_name,
                    base_image=versions.notebook_base(kubeflow.notebook_image.flavor),
                    kubectl_image=versions.kubectl_image(cfg.kubernetes_version),
                    keep_untagged_images=kubeflow.keep_untagged_images,
                    tags=tags,
                ),
            )
            image = built.ref
            base_repositories.append(built.repository_name)
            outputs["notebookImage"] = built.ref
        ecr = ProfileRegistries(
            f"{cfg.cluster_name}-registries",
            ProfileRegistriesArgs(
                cluster_name=cfg.cluster_name,
                region=cfg.region,
                profiles=profiles,
                keep_untagged_images=kubeflow.keep_untagged_images,
                base_repositories=base_repositories,
                tags=tags,
            ),
        )
        registries = dict(ecr.registries)
        outputs["jobRegistries"] = ecr.registries
        if kubeflow.data.enabled:
            data = ProfileData(
                f"{cfg.cluster_name}-data",
                ProfileDataArgs(
                    cluster_name=cfg.cluster_name,
                    profiles=profiles,
                    role_arns=ecr.role_arns,
                    bucket=kubeflow.data.bucket,
                    prefix=kubeflow.data.prefix,
                    tags=tags,
                ),
            )
            data_urls = dict(data.urls)
            outputs["profileData"] = data.urls
    elif kubeflow.registry_access == "docker-config" and kubeflow.job_registry:
        registries = {p: f"{kubeflow.job_registry}/{p}" for p in profiles}
    docker_configs: dict[str, pulumi.Input[str]] = {}
    if kubeflow.registry_access == "docker-config":
        docker_configs = {
            profile: pulumi.Output.secret(secret.get_secret_value())
            for profile, secret in cfg.registry_docker_configs.items()
        }
    return DeployInputs(
        docker_configs=docker_configs,
        notebook_image=image,
        job_base_image=kubeflow.job_base_image,
        registries=registries,
        data_urls=data_urls,
    )


def build_kubeflow(
    cfg: EksStack | OnpremStack,
    args: KubeflowArgs,
    kubeflow_plan: KubeflowPlan,
    platform: Platform,
    outputs: dict[str, Any],
) -> None:
    """Kubeflow on the cluster, what its notebooks need, and how users reach it."""
    assert cfg.kubeflow_admin_password is not None  # the model requires it
    deploy = _deploy_inputs(cfg, kubeflow_plan, outputs)
    kubeflow = Kubeflow(
        f"{cfg.cluster_name}-kubeflow",
        args,
        admin_password=pulumi.Output.secret(cfg.kubeflow_admin_password.get_secret_value()),
        deploy=deploy,
        plan=kubeflow_plan,
        opts=pulumi.ResourceOptions(providers=[platform.provider], depends_on=platform.ready),
    )
    if isinstance(cfg, EksStack) and cfg.kubeflow.ingress == "load-balancer":
        outputs["loadBalancerDnsName"] = kubeflow_load_balancer(cfg, platform, kubeflow)
    outputs["kubeflowUrl"] = cfg.kubeflow.url
    outputs["kubeflowAdmin"] = kubeflow.admin_email
    outputs["kubeflowPortForward"] = kubeflow.dashboard_port_forward
