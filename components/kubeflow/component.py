"""Kubeflow on the cluster: rendered manifests, transformed, applied in ordered phases.

Rendering (kustomize, cached) runs while the program is built, because the number of phases
and their membership must be known before any resource is registered. Secret values arrive
as Outputs; one `Output.all(...).apply(...)` runs the pure transforms, and every phase's
ConfigGroup gets its `objs` from that Output. No resource is created inside an apply.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import pulumi
import pulumi_random as random
from pulumi_kubernetes.yaml.v2 import ConfigGroup, ConfigGroupArgs

from components.kubeflow.manifests import (
    RenderedManifests,
    render_manifests,
    upstream_components,
)
from components.kubeflow.phases import Phase, split_phases
from components.kubeflow.profiles import NotebookSetup
from components.kubeflow.references import (
    ReferenceClosureError,
    check_references,
    name_providing_entries,
)
from components.kubeflow.transform import (
    KubeflowArgs,
    KubeflowCredentials,
    TransformError,
    transform_manifests,
)

__all__ = [
    "Kubeflow",
    "KubeflowArgs",
    "KubeflowCredentials",
    "KubeflowPlan",
    "ReferenceClosureError",
    "bcrypt_hash_with_seed",
    "build_phases",
    "placeholder_credentials",
    "plan_kubeflow",
]

BCRYPT_ROUNDS = 12
_BCRYPT_ALPHABET = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
DASHBOARD_PORT_FORWARD = "kubectl port-forward -n istio-system svc/istio-ingressgateway 8080:80"


def _bcrypt_base64(data: bytes) -> bytes:
    """bcrypt's own base64 (its alphabet, no padding), as salts are written."""
    bits = int.from_bytes(data, "big") << (6 - len(data) * 8 % 6) % 6
    count = (len(data) * 8 + 5) // 6
    return bytes(_BCRYPT_ALPHABET[(bits >> (6 * (count - 1 - i))) & 0x3F] for i in range(count))


def bcrypt_hash_with_seed(password: str, seed: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """bcrypt of `password` with a salt derived from `seed`.

    The seed is a random value kept in the stack's state, so the hash is the same on every
    `pulumi up` (no churn, no pod restarts) until the password or the seed changes. The
    password's length (12 characters to bcrypt's 72 bytes) is the stack model's rule.
    """
    salt_bytes = hashlib.sha256(seed.encode()).digest()[:16]
    salt = b"$2b$%02d$" % rounds + _bcrypt_base64(salt_bytes)
    return bcrypt.hashpw(password.encode(), salt).decode()


PLACEHOLDER_DOCKER_CONFIG = '{"auths": {"FROM-STACK-SECRET": {"auth": "PLACEHOLDER"}}}'
PLACEHOLDER_IMAGE = "FROM-STACK/notebook@sha256:" + "0" * 64
PLACEHOLDER_REGISTRY = "FROM-STACK/registry-of-{profile}"
PLACEHOLDER_DATA_URL = "s3://FROM-STACK/data-of-{profile}/"


@dataclass(frozen=True)
class DeployInputs:
    """Values the transforms need that exist only once resources do (Pulumi inputs)."""

    # Profile -> its docker config.json (secret), for registryAccess docker-config.
    docker_configs: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # The stack's notebook image, digest-pinned (built by the stack, or given).
    notebook_image: pulumi.Input[str] | None = None
    job_base_image: str | None = None
    # Profile -> where fnjob pushes from its notebooks.
    registries: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # Profile -> its data location (s3://bucket/prefix/), when the stack gives one.
    data_urls: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # Dex connector id -> its OAuth client secret (secret).
    sso_client_secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)

    def placeholders(self) -> tuple[dict[str, str], NotebookSetup]:
        """Stand-ins of the same shape: the layout (which objects exist) does not depend on
        the values, so it is known before any resource."""
        docker = {profile: PLACEHOLDER_DOCKER_CONFIG for profile in self.docker_configs}
        notebooks = NotebookSetup(
            image=PLACEHOLDER_IMAGE if self.notebook_image is not None else None,
            job_base_image=self.job_base_image,
            registries={p: PLACEHOLDER_REGISTRY.format(profile=p) for p in self.registries},
            data_urls={p: PLACEHOLDER_DATA_URL.format(profile=p) for p in self.data_urls},
        )
        return docker, notebooks


def placeholder_credentials(
    docker_configs: Mapping[str, str] | None = None, sso_connectors: Sequence[str] = ()
) -> KubeflowCredentials:
    """Clearly-fake values used by the render command (and to learn the phase layout)."""
    return KubeflowCredentials(
        admin_password_hash="$2b$12$GENERATED-BY-STACK.bcrypt-of-the-admin-password",
        oidc_client_secret="GENERATED-BY-STACK-oidc-client-secret",
        oauth2_proxy_cookie_secret="GENERATED-BY-STACK-cookie-secret",
        katib_db_password="GENERATED-BY-STACK-katib-db-password",
        pipelines_db_password="GENERATED-BY-STACK-pipelines-db-password",
        pipelines_object_store_access_key="GENERATED-BY-STACK-object-store-access-key",
        pipelines_object_store_secret_key="GENERATED-BY-STACK-object-store-secret-key",
        docker_configs=dict(docker_configs or {}),
        sso_client_secrets={c: f"FROM-STACK-SECRET-sso-{c}" for c in sso_connectors},
    )


def build_phases(
    objects: Sequence[Mapping[str, Any]],
    args: KubeflowArgs,
    credentials: KubeflowCredentials,
    notebooks: NotebookSetup | None = None,
) -> tuple[Phase, ...]:
    """Transformed objects split into apply phases: exactly what the stack applies.

    Raises `ReferenceClosureError` when the objects refer to objects they do not contain.
    """
    transformed = transform_manifests(objects, args, credentials, notebooks)
    check_references(transformed)
    return split_phases(transformed)


@dataclass(frozen=True)
class KubeflowPlan:
    """What the stack will apply, known before any resource exists (secrets as placeholders)."""

    rendered: RenderedManifests
    phases: tuple[Phase, ...]


def plan_kubeflow(
    args: KubeflowArgs,
    deploy: DeployInputs | None = None,
    *,
    cache_dir: Path | None = None,
    rendered: RenderedManifests | None = None,
) -> KubeflowPlan:
    """Render (cached; or take ``rendered``, the render of ``args``), transform with
    placeholder secrets, check, and split into phases.

    Offline and free of Pulumi resources, so a program can call it before it creates
    anything. Raises `RenderError` (a source or kustomize problem; `ReferenceClosureError`
    when the chosen components leave references dangling, naming the entries of upstream's
    example/kustomization.yaml that would provide them), `TransformError` (upstream changed
    shape, or a default credential survived) or `KubeflowConfigError`.
    """
    if rendered is None:
        rendered = render_manifests(
            args.kubeflow.source, args.kubeflow.components, cache_dir=cache_dir
        )
    deploy = deploy or DeployInputs()
    docker, notebooks = deploy.placeholders()
    try:
        credentials = placeholder_credentials(docker, list(deploy.sso_client_secrets))
        phases = build_phases(rendered.objects, args, credentials, notebooks)
    except ReferenceClosureError as err:
        source = str(rendered.source_dir)
        chosen = set(args.kubeflow.components or upstream_components(rendered.source_dir))
        candidates = [e for e in upstream_components(rendered.source_dir) if e not in chosen]
        raise ReferenceClosureError(
            name_providing_entries(
                err.problems,
                candidates,
                lambda entry: render_manifests(source, (entry,), cache_dir=cache_dir).objects,
            )
        ) from None
    return KubeflowPlan(rendered, phases)


@dataclass(frozen=True)
class _GroupPlan:
    """One ConfigGroup: a phase's Secrets, or its other objects (kept apart so only the
    Secrets are hidden as Pulumi secrets and the rest stays readable in previews)."""

    phase_index: int
    name: str
    secrets: bool


def _plan_groups(phases: tuple[Phase, ...]) -> list[list[_GroupPlan]]:
    plan = []
    for index, phase in enumerate(phases):
        groups = []
        if any(o.get("kind") != "Secret" for o in phase.objects):
            groups.append(_GroupPlan(index, phase.name, secrets=False))
        if any(o.get("kind") == "Secret" for o in phase.objects):
            groups.append(_GroupPlan(index, f"{phase.name}-secrets", secrets=True))
        plan.append(groups)
    return plan


def _select(phases: tuple[Phase, ...], group: _GroupPlan) -> list[Mapping[str, Any]]:
    objects = phases[group.phase_index].objects
    return [o for o in objects if (o.get("kind") == "Secret") == group.secrets]


def _selector(group: _GroupPlan) -> Callable[[tuple[Phase, ...]], list[Mapping[str, Any]]]:
    return lambda phases: _select(phases, group)


# Deleting one of these takes what users made with it (every custom resource of a CRD, a
# volume's data, a namespace's contents; a Profile owns its namespace). When the stack stops
# applying one (a profile removed, an upstream release that drops a CRD), Pulumi forgets it
# and the cluster keeps it, unless kubeflow.allowDeletion names it (Kind/[namespace/]name).
RETAINED_KINDS = frozenset(
    {"CustomResourceDefinition", "PersistentVolumeClaim", "Namespace", "Profile"}
)


def deletion_name(obj: Mapping[str, Any]) -> str:
    """How `kubeflow.allowDeletion` names an object: `Kind/name` or `Kind/namespace/name`."""
    metadata = obj.get("metadata") or {}
    parts = (obj.get("kind"), metadata.get("namespace"), metadata.get("name"))
    return "/".join(str(p) for p in parts if p)


def child_options(
    prefix: str, legacy_prefixes: Sequence[str], allow_deletion: Collection[str]
) -> pulumi.ResourceTransform:
    """A transform for the objects a phase's ConfigGroup registers.

    Every ConfigGroup names its objects with the same `prefix`, so an object's URN does not
    depend on the phase it is applied in: a release or a rule that moves it to another phase
    updates it in place. Stacks deployed when the phase was the prefix find their objects
    again through one alias per former prefix. Objects of `RETAINED_KINDS` are retained on
    delete unless `allow_deletion` names them.
    """

    def transform(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
        if not args.custom or not args.name.startswith(prefix):
            return None
        rest = args.name[len(prefix) :]
        opts = copy.copy(args.opts)
        opts.aliases = [
            *(args.opts.aliases or []),
            *(pulumi.Alias(name=legacy + rest) for legacy in legacy_prefixes),
        ]
        props = args.props
        if props.get("kind") in RETAINED_KINDS and deletion_name(props) not in allow_deletion:
            opts.retain_on_delete = True
        return pulumi.ResourceTransformResult(props, opts)

    return transform


class Kubeflow(pulumi.ComponentResource):
    """Kubeflow from its Kustomize manifests, applied phase by phase with explicit dependencies.

    Pass the Kubernetes provider through `opts` (`providers=[k8s]`); every ConfigGroup is a
    child and inherits it. `admin_password` should be a Pulumi secret.
    """

    def __init__(
        self,
        name: str,
        args: KubeflowArgs,
        *,
        admin_password: pulumi.Input[str],
        deploy: DeployInputs | None = None,
        plan: KubeflowPlan | None = None,
        cache_dir: Path | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubeflow-eks:kubeflow:Kubeflow", name, None, opts)
        deploy = deploy or DeployInputs()
        child = pulumi.ResourceOptions(parent=self)
        # Every check that can fail offline runs here, before any child resource exists.
        # The layout (phase names, which groups exist) must not depend on secret values.
        if plan is None:
            plan = plan_kubeflow(args, deploy, cache_dir=cache_dir)
        rendered, layout = plan.rendered, plan.phases

        def secret(suffix: str, length: int) -> random.RandomPassword:
            return random.RandomPassword(
                f"{name}-{suffix}", length=length, special=False, opts=child
            )

        oidc_client_secret = secret("oidc-client-secret", 32)
        # 32 characters = 32 bytes: an AES-256 key size oauth2-proxy accepts.
        cookie_secret = secret("oauth2-proxy-cookie-secret", 32)
        katib_db_password = secret("katib-db-password", 24)
        pipelines_db_password = secret("pipelines-db-password", 24)
        object_store_access_key = secret("object-store-access-key", 20)
        object_store_secret_key = secret("object-store-secret-key", 40)
        admin_salt_seed = secret("admin-password-salt-seed", 32)

        groups_plan = _plan_groups(layout)
        expected_layout = [(p.name, len(p.objects)) for p in layout]
        docker_profiles = list(deploy.docker_configs)
        registry_profiles = list(deploy.registries)
        data_profiles = list(deploy.data_urls)
        sso_connectors = list(deploy.sso_client_secrets)

        def transform(values: list[Any]) -> tuple[Phase, ...]:
            (password, seed, oidc, cookie, katib, pipelines, access, secret_key, image) = values[:9]
            docker = dict(zip(docker_profiles, values[9 : 9 + len(docker_profiles)], strict=True))
            rest = values[9 + len(docker_profiles) :]
            registries = dict(zip(registry_profiles, rest[: len(registry_profiles)], strict=True))
            rest = rest[len(registry_profiles) :]
            data_urls = dict(zip(data_profiles, rest[: len(data_profiles)], strict=True))
            sso = dict(zip(sso_connectors, rest[len(data_profiles) :], strict=True))
            credentials = KubeflowCredentials(
                admin_password_hash=bcrypt_hash_with_seed(password, seed),
                oidc_client_secret=oidc,
                oauth2_proxy_cookie_secret=cookie,
                katib_db_password=katib,
                pipelines_db_password=pipelines,
                pipelines_object_store_access_key=access,
                pipelines_object_store_secret_key=secret_key,
                docker_configs=docker,
                sso_client_secrets=sso,
            )
            notebooks = NotebookSetup(
                image=image,
                job_base_image=deploy.job_base_image,
                registries=registries,
                data_urls=data_urls,
            )
            phases = build_phases(rendered.objects, args, credentials, notebooks)
            if [(p.name, len(p.objects)) for p in phases] != expected_layout:
                raise TransformError("phase layout changed with the real values")
            return phases

        phases_output = pulumi.Output.all(
            admin_password,
            admin_salt_seed.result,
            oidc_client_secret.result,
            cookie_secret.result,
            katib_db_password.result,
            pipelines_db_password.result,
            object_store_access_key.result,
            object_store_secret_key.result,
            deploy.notebook_image,
            *deploy.docker_configs.values(),
            *deploy.registries.values(),
            *deploy.data_urls.values(),
            *deploy.sso_client_secrets.values(),
        ).apply(transform)

        legacy_prefixes = [f"{name}-{group.name}" for groups in groups_plan for group in groups]
        stable_names = child_options(name, legacy_prefixes, set(args.kubeflow.allow_deletion))
        self.phase_groups: list[list[ConfigGroup]] = []
        previous: list[pulumi.Resource] = []
        for groups in groups_plan:
            created = []
            for group in groups:
                objs = phases_output.apply(_selector(group))
                created.append(
                    ConfigGroup(
                        f"{name}-{group.name}",
                        ConfigGroupArgs(
                            # Secret values only ever land in Secret objects, so the rest is
                            # shown in previews; secretness would otherwise spread to all.
                            objs=pulumi.Output.secret(objs)
                            if group.secrets
                            else pulumi.Output.unsecret(objs),
                            # One prefix for every phase: see child_options.
                            resource_prefix=name,
                        ),
                        opts=pulumi.ResourceOptions(
                            parent=self,
                            depends_on=list(previous),
                            additional_secret_outputs=["resources"] if group.secrets else None,
                            transforms=[stable_names],
                        ),
                    )
                )
            self.phase_groups.append(created)
            previous = list(created)

        self.admin_email = pulumi.Output.from_input(args.admin_email)
        self.dashboard_port_forward = pulumi.Output.from_input(DASHBOARD_PORT_FORWARD)
        self.register_outputs(
            {
                "admin_email": self.admin_email,
                "dashboard_port_forward": self.dashboard_port_forward,
                "phases": [p.name for p in layout],
            }
        )
