"""Kubeflow in a stack: its arguments from the model, the plan made before any resource, and
what notebooks need (the notebook image, each profile's registry and credentials)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi

from components.aws.data import ProfileData, ProfileDataArgs
from components.aws.notebook_image import NotebookImage, NotebookImageArgs
from components.aws.registry import ProfileRegistries, ProfileRegistriesArgs
from components.kubeflow.access import Access
from components.kubeflow.component import DeployInputs, Kubeflow, KubeflowPlan, plan_kubeflow
from components.kubeflow.manifests import (
    ComponentSelectionError,
    RenderedManifests,
    render_manifests,
)
from components.kubeflow.objects import name_of
from components.kubeflow.references import ReferenceClosureError
from components.kubeflow.transform import KubeflowArgs, TrainingRuntimeError
from model import EksStack, OnpremStack, versions
from model.kubeflow import UPSTREAM_EXAMPLE_PROFILE
from stack.problems import Problem, StackConfigError, show
from stack.program.eks import kubeflow_load_balancer, stack_tags
from stack.program.platform import Platform

PLACEHOLDER = "FROM-STACK"
ANY_ADDRESS = "0.0.0.0/0"


def access_of(cfg: EksStack | OnpremStack) -> Access:
    kubeflow = cfg.kubeflow
    if kubeflow.ingress != "load-balancer":
        return Access()
    if isinstance(cfg, EksStack):
        # The ALB's interfaces (and its health checks) are VPC addresses, neither pod nor
        # namespace. An existing VPC's ranges are known only once deployed; its security
        # groups then decide who is in reach of the gateway's pod ports.
        vpc = (cfg.vpc.cidr,) if cfg.vpc.creates_vpc else (ANY_ADDRESS,)
        return Access(domain=kubeflow.domain, behind_load_balancer=True, gateway_sources=vpc)
    return Access(
        domain=kubeflow.domain,
        gateway_tls=kubeflow.tls,
        gateway_service=kubeflow.load_balancer,
        gateway_sources=kubeflow.load_balancer.allowed_cidrs,
    )


def kubeflow_args_from_config(cfg: EksStack | OnpremStack) -> KubeflowArgs:
    return KubeflowArgs(cfg.kubeflow, gpu_groups=cfg.gpu_node_groups, access=access_of(cfg))


def managed_profiles(cfg: EksStack | OnpremStack, rendered: RenderedManifests) -> list[str]:
    """The profiles the stack sets up for notebooks and jobs: the configured ones, and
    upstream's example profile when it is rendered (the stack gives it to the admin)."""
    names = [p.name for p in cfg.kubeflow.profiles]
    upstream = any(
        o.get("kind") == "Profile" and name_of(o) == UPSTREAM_EXAMPLE_PROFILE
        for o in rendered.objects
    )
    return [*names, UPSTREAM_EXAMPLE_PROFILE] if upstream else names


def deploy_inputs(
    cfg: EksStack | OnpremStack,
    profiles: Sequence[str],
    *,
    notebook_image: pulumi.Input[str] | None,
    ecr_registries: Mapping[str, pulumi.Input[str]],
    data_urls: Mapping[str, pulumi.Input[str]],
    seal: Callable[[str], pulumi.Input[str]],
) -> DeployInputs:
    """The deploy-time values Kubeflow's objects are built from, for the render and for
    `pulumi up` alike: which profiles get a registry (``FNJOB_REGISTRY``) and credentials.

    ``ecr_registries`` are the profiles' ECR prefixes (with ``registryAccess: ecr``),
    ``data_urls`` their data locations (``FNJOB_DATA_URL``, with ``kubeflow.data``);
    ``seal`` turns a docker config's plain text into what the objects carry.
    """
    kubeflow = cfg.kubeflow
    registries: dict[str, pulumi.Input[str]] = {}
    if kubeflow.registry_access == "ecr":
        registries = {p: ecr_registries[p] for p in profiles}
    elif kubeflow.registry_access == "docker-config" and kubeflow.job_registry:
        registries = {p: f"{kubeflow.job_registry}/{p}" for p in profiles}
    docker_configs: dict[str, pulumi.Input[str]] = {}
    if kubeflow.registry_access == "docker-config":
        docker_configs = {
            profile: seal(secret.get_secret_value())
            for profile, secret in cfg.registry_docker_configs.items()
        }
    return DeployInputs(
        docker_configs=docker_configs,
        notebook_image=notebook_image,
        job_base_image=kubeflow.job_base_image,
        registries=registries,
        data_urls={p: data_urls[p] for p in profiles if p in data_urls},
        sso_client_secrets={
            connector: seal(secret.get_secret_value())
            for connector, secret in cfg.sso_client_secrets.items()
        },
    )


def plan(
    cfg: EksStack | OnpremStack, *, source: str | None = None, cache_dir: Path | None = None
) -> tuple[KubeflowArgs, KubeflowPlan]:
    """What Kubeflow will apply, before any resource exists: the one plan that both
    `pulumi up` and `python -m stack.render` use (deploy-time values as placeholders).

    ``source`` renders another kubeflow/manifests tree than the stack's. A component
    selection that cannot work is a problem of the stack's configuration.
    """
    args = kubeflow_args_from_config(cfg)
    if source is not None:
        # Another tree of the same release: only where the manifests come from changes.
        args = dataclasses.replace(
            args, kubeflow=args.kubeflow.model_copy(update={"local_path": source})
        )
    kubeflow = args.kubeflow
    given = show(list(kubeflow.components or ()))
    has_image = kubeflow.notebook_image.build or kubeflow.notebook_image.image is not None
    try:
        rendered = render_manifests(kubeflow.source, kubeflow.components, cache_dir=cache_dir)
        profiles = managed_profiles(cfg, rendered)
        shape = deploy_inputs(
            cfg,
            profiles,
            notebook_image=PLACEHOLDER if has_image else None,
            ecr_registries={p: PLACEHOLDER for p in profiles},
            data_urls={p: PLACEHOLDER for p in profiles}
            if kubeflow.data.enabled and kubeflow.registry_access == "ecr"
            else {},
            seal=lambda _: PLACEHOLDER,
        )
        return args, plan_kubeflow(args, shape, cache_dir=cache_dir, rendered=rendered)
    except ComponentSelectionError as error:
        raise StackConfigError([Problem("kubeflow.components", given, str(error))]) from None
    except TrainingRuntimeError as error:
        raise StackConfigError(
            [Problem("kubeflow.training.defaultRuntime", show(error.runtime), str(error))]
        ) from None
    except ReferenceClosureError as error:
        fix = (
            f"add {', '.join(error.entries)}: {len(error.problems)} objects refer to what "
            "they would render"
            if error.entries
            else str(error)
        )
        raise StackConfigError([Problem("kubeflow.components", given, fix)]) from None


def _deploy_inputs(
    cfg: EksStack | OnpremStack,
    kubeflow_plan: KubeflowPlan,
    platform: Platform,
    outputs: dict[str, Any],
) -> DeployInputs:
    """The notebook image, each profile's registry and credentials: created here when the
    stack owns them (EKS with ECR), else taken from the configuration."""
    kubeflow = cfg.kubeflow
    profiles = managed_profiles(cfg, kubeflow_plan.rendered)
    image: pulumi.Input[str] | None = kubeflow.notebook_image.image
    ecr_registries: dict[str, pulumi.Input[str]] = {}
    data_urls: dict[str, pulumi.Input[str]] = {}
    if isinstance(cfg, EksStack) and kubeflow.registry_access == "ecr":
        assert cfg.region is not None and platform.pod_identity is not None
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
                pod_identity=platform.pod_identity,
                region=cfg.region,
                profiles=profiles,
                keep_untagged_images=kubeflow.keep_untagged_images,
                base_repositories=base_repositories,
                permissions_boundary=cfg.permissions_boundary,
                tags=tags,
                allow_deletion=kubeflow.allow_deletion,
            ),
        )
        ecr_registries = dict(ecr.registries)
        outputs["jobRegistries"] = ecr.registries
        if kubeflow.data.enabled:
            data = ProfileData(
                f"{cfg.cluster_name}-data",
                ProfileDataArgs(
                    cluster_name=cfg.cluster_name,
                    profiles=profiles,
                    role_arns=ecr.role_arns,
                    data=kubeflow.data,
                    tags=tags,
                ),
            )
            data_urls = dict(data.urls)
            outputs["profileData"] = data.urls
    return deploy_inputs(
        cfg,
        profiles,
        notebook_image=image,
        ecr_registries=ecr_registries,
        data_urls=data_urls,
        seal=pulumi.Output.secret,
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
    deploy = _deploy_inputs(cfg, kubeflow_plan, platform, outputs)
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
    if cfg.kubeflow.ingress == "port-forward":
        # The way in only when nothing is exposed; by name, the URL is.
        outputs["kubeflowPortForward"] = kubeflow.dashboard_port_forward
