"""Kubeflow on the cluster: rendered manifests, transformed, applied in ordered phases.

Rendering (kustomize, cached) runs while the program is built, because the number of phases
and their membership must be known before any resource is registered. Secret values arrive
as Outputs; one `Output.all(...).apply(...)` runs the pure transforms, and every phase's
ConfigGroup gets its `objs` from that Output. No resource is created inside an apply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from components.kubeflow.references import (
    ReferenceClosureError,
    check_references,
    name_providing_entries,
)
from components.kubeflow.transform import (
    KubeflowArgs,
    KubeflowConfigError,
    KubeflowCredentials,
    ProfileSpec,
    TransformError,
    transform_manifests,
)

__all__ = [
    "Kubeflow",
    "KubeflowArgs",
    "KubeflowCredentials",
    "KubeflowPlan",
    "ProfileSpec",
    "ReferenceClosureError",
    "bcrypt_hash_with_seed",
    "build_phases",
    "placeholder_credentials",
    "plan_kubeflow",
]

BCRYPT_ROUNDS = 12
MIN_ADMIN_PASSWORD_LENGTH = 8
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
    `pulumi up` (no churn, no pod restarts) until the password or the seed changes.
    """
    if len(password) < MIN_ADMIN_PASSWORD_LENGTH:
        raise KubeflowConfigError(
            f"admin password must be at least {MIN_ADMIN_PASSWORD_LENGTH} characters, "
            f"got {len(password)}"
        )
    salt_bytes = hashlib.sha256(seed.encode()).digest()[:16]
    salt = b"$2b$%02d$" % rounds + _bcrypt_base64(salt_bytes)
    return bcrypt.hashpw(password.encode(), salt).decode()


def placeholder_credentials(docker_config_json: str | None = None) -> KubeflowCredentials:
    """Clearly-fake values used by the render command (and to learn the phase layout)."""
    return KubeflowCredentials(
        admin_password_hash="$2b$12$GENERATED-BY-STACK.bcrypt-of-the-admin-password",
        oidc_client_secret="GENERATED-BY-STACK-oidc-client-secret",
        oauth2_proxy_cookie_secret="GENERATED-BY-STACK-cookie-secret",
        katib_db_password="GENERATED-BY-STACK-katib-db-password",
        pipelines_db_password="GENERATED-BY-STACK-pipelines-db-password",
        pipelines_object_store_access_key="GENERATED-BY-STACK-object-store-access-key",
        pipelines_object_store_secret_key="GENERATED-BY-STACK-object-store-secret-key",
        docker_config_json=docker_config_json,
    )


PLACEHOLDER_DOCKER_CONFIG = '{"auths": {"FROM-STACK-SECRET": {"auth": "PLACEHOLDER"}}}'


def build_phases(
    objects: Sequence[Mapping[str, Any]],
    args: KubeflowArgs,
    credentials: KubeflowCredentials,
) -> tuple[Phase, ...]:
    """Transformed objects split into apply phases: exactly what the stack applies.

    Raises `ReferenceClosureError` when the objects refer to objects they do not contain.
    """
    transformed = transform_manifests(objects, args, credentials)
    check_references(transformed)
    return split_phases(transformed)


@dataclass(frozen=True)
class KubeflowPlan:
    """What the stack will apply, known before any resource exists (secrets as placeholders)."""

    rendered: RenderedManifests
    phases: tuple[Phase, ...]


def plan_kubeflow(args: KubeflowArgs, *, cache_dir: Path | None = None) -> KubeflowPlan:
    """Render (cached), transform with placeholder secrets, check, and split into phases.

    Offline and free of Pulumi resources, so a program can call it before it creates
    anything. Raises `RenderError` (a source or kustomize problem; `ReferenceClosureError`
    when the chosen components leave references dangling, naming the entries of upstream's
    example/kustomization.yaml that would provide them), `TransformError` (upstream changed
    shape, or a default credential survived) or `KubeflowConfigError`.
    """
    rendered = render_manifests(args.source, args.components, cache_dir=cache_dir)
    docker = PLACEHOLDER_DOCKER_CONFIG if args.registry_access == "docker-config" else None
    try:
        phases = build_phases(rendered.objects, args, placeholder_credentials(docker))
    except ReferenceClosureError as err:
        source = str(rendered.source_dir)
        chosen = set(args.components or upstream_components(rendered.source_dir))
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
        docker_config_json: pulumi.Input[str] | None = None,
        plan: KubeflowPlan | None = None,
        cache_dir: Path | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("kubeflow-eks:kubeflow:Kubeflow", name, None, opts)
        if args.registry_access == "docker-config" and docker_config_json is None:
            raise KubeflowConfigError(
                "registry_access 'docker-config' needs docker_config_json (a stack secret)"
            )
        child = pulumi.ResourceOptions(parent=self)
        # Every check that can fail offline runs here, before any child resource exists.
        # The layout (phase names, which groups exist) must not depend on secret values.
        if plan is None:
            plan = plan_kubeflow(args, cache_dir=cache_dir)
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

        docker_config: pulumi.Input[str | None] = (
            docker_config_json if args.registry_access == "docker-config" else None
        )
        groups_plan = _plan_groups(layout)
        expected_layout = [(p.name, len(p.objects)) for p in layout]

        def transform(values: list[Any]) -> tuple[Phase, ...]:
            (password, seed, oidc, cookie, katib, pipelines, access, secret_key, docker) = values
            credentials = KubeflowCredentials(
                admin_password_hash=bcrypt_hash_with_seed(password, seed),
                oidc_client_secret=oidc,
                oauth2_proxy_cookie_secret=cookie,
                katib_db_password=katib,
                pipelines_db_password=pipelines,
                pipelines_object_store_access_key=access,
                pipelines_object_store_secret_key=secret_key,
                docker_config_json=docker,
            )
            phases = build_phases(rendered.objects, args, credentials)
            if [(p.name, len(p.objects)) for p in phases] != expected_layout:
                raise TransformError("phase layout changed with the real credentials")
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
            docker_config,
        ).apply(transform)

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
                            else pulumi.Output.unsecret(objs)
                        ),
                        opts=pulumi.ResourceOptions(
                            parent=self,
                            depends_on=list(previous),
                            additional_secret_outputs=["resources"] if group.secrets else None,
                        ),
                    )
                )
            self.phase_groups.append(created)
            previous = list(created)

        self.admin_email = pulumi.Output.from_input(args.admin_email)
        self.dashboard_port_forward = pulumi.Output.from_input(DASHBOARD_PORT_FORWARD)
        # Browsers treat http://localhost as a secure context, so the port-forward works in
        # both modes; HTTP mode matters when users reach the gateway by another name.
        self.dashboard_url = pulumi.Output.from_input("http://localhost:8080")
        self.register_outputs(
            {
                "admin_email": self.admin_email,
                "dashboard_port_forward": self.dashboard_port_forward,
                "dashboard_url": self.dashboard_url,
                "phases": [p.name for p in layout],
            }
        )
