"""Kubeflow: release, components, login, profiles, registry access."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from model import versions
from model.base import (
    MISSING,
    CidrV4,
    Model,
    Rules,
    UniqueStrings,
    custom,
    dns_label,
    email,
    matches,
    no_float,
    section,
    unique,
)

# Namespaces a profile may not take: the cluster's own and the platform's.
RESERVED_NAMESPACES = frozenset(
    {
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "kubeflow",
        "kubeflow-system",
        "auth",
        "oauth2-proxy",
        "istio-system",
        "cert-manager",
        "knative-serving",
        "knative-eventing",
        "nvidia-device-plugin",
    }
)
RESERVED_NAMESPACE_PREFIXES = ("kube-", "kubeflow-", "istio-", "knative-")
UPSTREAM_DEFAULT_USER = "user@example.com"
# Upstream's example profile; the stack gives it to the admin.
UPSTREAM_EXAMPLE_PROFILE = "kubeflow-user-example-com"
_RELEASES_FILE = Path(__file__).with_name("kubeflow_releases.yaml")
_DOMAIN = r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
_KEY_PREFIX = r"^([A-Za-z0-9_.-]+/)*$"
_ACM_ARN = r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$"
_REGISTRY_PREFIX = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*$"
_IMAGE_REFERENCE = (
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:\d+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)+"
    r"(:\w[\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


def _profile_name(value: str) -> str:
    if value in RESERVED_NAMESPACES or value.startswith(RESERVED_NAMESPACE_PREFIXES):
        raise custom(
            "reserved_namespace",
            f"choose another name: {value} is a namespace of the cluster or the platform "
            f"(reserved: {', '.join(sorted(RESERVED_NAMESPACES))}, and names starting "
            f"{', '.join(RESERVED_NAMESPACE_PREFIXES)})",
        )
    return value


Quantity = Annotated[
    str, matches(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$", '"64Gi", "16" or "500m"')
]


class Quota(Model):
    """What one profile's pods may hold at once (its namespace's ResourceQuota)."""

    gpus: int | None = Field(
        default=None, ge=0, le=4096, description="GPUs requested at once (requests.nvidia.com/gpu)"
    )
    cpu: Quantity | None = Field(
        default=None, description="CPU requested at once; every pod must then request CPU"
    )
    memory: Quantity | None = Field(
        default=None, description="memory requested at once; every pod must then request memory"
    )
    storage: Quantity | None = Field(default=None, description="volume storage requested")
    volumes: int | None = Field(default=None, ge=0, le=10000, description="number of PVCs")

    def hard(self) -> dict[str, str]:
        """The ResourceQuota's `hard` limits (Kubernetes' resource names)."""
        limits = {
            "requests.nvidia.com/gpu": self.gpus,
            "requests.cpu": self.cpu,
            "requests.memory": self.memory,
            "requests.storage": self.storage,
            "persistentvolumeclaims": self.volumes,
        }
        return {key: str(value) for key, value in limits.items() if value is not None}


class Culling(Model):
    """Kubeflow's notebook controller stops notebooks idle this long; their volumes stay."""

    enabled: bool = Field(default=True, description="stop idle notebooks (GPU ones included)")
    idle_minutes: int = Field(
        default=120, ge=10, le=10080, description="minutes without kernel activity before a stop"
    )
    check_period_minutes: int = Field(
        default=5, ge=1, le=60, description="how often the controller checks, in minutes"
    )


_ContributorEmail = Annotated[str, email("someone@example.org")]


class Contributor(Model):
    """Someone besides the owner who works in a profile (Kubeflow's contributor binding)."""

    email: _ContributorEmail = Field(description="their login email")
    role: Literal["edit", "view"] = Field(
        default="edit", description="edit (run notebooks and jobs) or view"
    )


class SsoConnector(Model):
    """An identity provider Dex lets users log in with (its client secret is a stack secret,
    ssoClientSecrets.<id>)."""

    id: Annotated[str, dns_label(63, "okta")] = Field(description="the connector's id")
    name: str = Field(min_length=1, max_length=64, description="shown on the login page")
    type: Literal["oidc", "github", "google", "microsoft"] = Field(
        description="oidc (Okta, Entra ID, Keycloak, ...), github, google or microsoft"
    )
    client_id: str = Field(min_length=1, description="the OAuth client id Dex uses")
    issuer: Annotated[str, matches(r"^https://[^\s/$.?#].[^\s]*$", "https://idp.example.org")] | (
        None
    ) = Field(default=None, description="oidc: the provider's issuer URL")
    tenant: str | None = Field(default=None, description="microsoft: the Entra ID tenant")
    orgs: UniqueStrings = Field(default=(), description="github: only members of these orgs")


class Sso(Model):
    """Who may log in: identity providers, and whether the static admin login stays."""

    connectors: tuple[SsoConnector, ...] = Field(
        default=(), description="{id, name, type, clientId, ...}: Dex connectors"
    )
    static_login: bool = Field(
        default=True, description="keep the static admin login (needs adminEmail's password)"
    )

    @model_validator(mode="after")
    def _usable(self) -> Sso:
        rules = Rules()
        ids = [c.id for c in self.connectors]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            rules.add("connectors", ids, f"give each its own id; repeated: {', '.join(repeated)}")
        for index, connector in enumerate(self.connectors):
            if connector.type == "oidc" and connector.issuer is None:
                rules.add(f"connectors[{index}].issuer", MISSING, "set the provider's issuer URL")
            if connector.orgs and connector.type != "github":
                rules.add(f"connectors[{index}].orgs", connector.orgs, "only github uses orgs")
            if connector.tenant and connector.type != "microsoft":
                rules.add(f"connectors[{index}].tenant", connector.tenant, "only microsoft uses it")
        if not self.static_login and not self.connectors:
            rules.add("staticLogin", False, "add a connector first, or nobody could log in")
        rules.raise_if_any()
        return self


class Profile(Model):
    """A Kubeflow user namespace and the person who owns it."""

    name: Annotated[str, dns_label(63, "team-ml"), AfterValidator(_profile_name)] = Field(
        description="the namespace (a DNS label, not a system or platform namespace)"
    )
    owner: Annotated[str, email("someone@example.org")] = Field(
        description="the owner's login email"
    )
    quota: Quota | None = Field(
        default=None, description="this profile's limits instead of kubeflow.defaultQuota"
    )
    contributors: tuple[Contributor, ...] = Field(
        default=(), description="{email, role}: others who may work in the profile"
    )


def _admin_email(value: str) -> str:
    if value == UPSTREAM_DEFAULT_USER:
        raise custom("upstream_user", "choose your own login; user@example.com is upstream's")
    return value


ImageReference = Annotated[
    str, matches(_IMAGE_REFERENCE, "ghcr.io/org/notebook:1.0 (optional @sha256:digest)")
]


@dataclass(frozen=True)
class KubeflowRelease:
    """What the stack knows of one kubeflow/manifests release (`kubeflow_releases.yaml`)."""

    version: str
    kustomize: str
    kubernetes: str
    trainer: str
    pipelines: str
    components: tuple[str, ...]
    # The ClusterTrainingRuntimes its Trainer ships (what kubeflow.training.defaultRuntime
    # may name).
    training_runtimes: tuple[str, ...]


class ReleaseTableError(ValueError):
    """An entry of kubeflow_releases.yaml lacks a field the stack needs."""


def _names(version: str, entry: dict[str, object], field: str) -> tuple[str, ...]:
    names = entry[field]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ReleaseTableError(
            f"{_RELEASES_FILE.name}: release {version!r}: {field} must be a list of strings"
        )
    return tuple(names)


def _release(version: str, entry: object) -> KubeflowRelease:
    fields = (
        "kustomize",
        "kubernetes",
        "trainer",
        "pipelines",
        "components",
        "trainingRuntimes",
    )
    if not isinstance(entry, dict):
        raise ReleaseTableError(f"{_RELEASES_FILE.name}: release {version!r} is not a mapping")
    missing = [f for f in fields if not entry.get(f)]
    if missing:
        raise ReleaseTableError(
            f"{_RELEASES_FILE.name}: release {version!r} lacks {', '.join(missing)} "
            f"(every release needs {', '.join(fields)})"
        )
    return KubeflowRelease(
        version=version,
        kustomize=str(entry["kustomize"]),
        kubernetes=str(entry["kubernetes"]),
        trainer=str(entry["trainer"]),
        pipelines=str(entry["pipelines"]),
        components=_names(version, entry, "components"),
        training_runtimes=_names(version, entry, "trainingRuntimes"),
    )


@functools.cache
def kubeflow_releases() -> dict[str, KubeflowRelease]:
    """Every release of the table, each checked to have what the stack needs."""
    table = yaml.safe_load(_RELEASES_FILE.read_text())
    return {str(v): _release(str(v), e) for v, e in (table.get("releases") or {}).items()}


# The runtime fnjob and the Kubeflow SDK train on unless told otherwise: torch.distributed.
DEFAULT_TRAINING_RUNTIME = "torch-distributed"


class Training(Model):
    """Kubeflow Trainer: the ClusterTrainingRuntimes the stack ships (every one keeps the
    Istio sidecar out of training pods and tolerates the GPU groups' taints)."""

    default_runtime: Annotated[
        str, matches(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", DEFAULT_TRAINING_RUNTIME)
    ] = Field(
        default=DEFAULT_TRAINING_RUNTIME,
        description="the ClusterTrainingRuntime multi-node fnjob jobs run on "
        "(FNJOB_TRAINING_RUNTIME); one the release ships",
    )


class NotebookImage(Model):
    """The notebook image data scientists start from: built by the stack, or given."""

    build: bool = Field(
        default=False,
        description="build images/notebook (BuildKit, where pulumi up runs) and push it to the "
        "stack's ECR; EKS with registryAccess ecr",
    )
    flavor: Literal["pytorch-cuda", "scipy"] = Field(
        default="pytorch-cuda", description="the Kubeflow notebook image the build starts from"
    )
    image: ImageReference | None = Field(
        default=None, description="a prebuilt notebook image instead (pin it by @sha256 digest)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> NotebookImage:
        if self.build and self.image is not None:
            raise PydanticCustomError(
                "rules_broken",
                "1 rule broken",
                {"problems": [("image", self.image, "remove it, or set build: false")]},
            )
        if self.image is not None and "@sha256:" not in self.image:
            # It is the form's first image and the base of every job: a tag can move, so a
            # notebook and the jobs it starts could run different images (and Pythons).
            raise PydanticCustomError(
                "rules_broken",
                "1 rule broken",
                {"problems": [("image", self.image, "pin it by digest: <image>@sha256:<digest>")]},
            )
        return self


class ProfileData(Model):
    """eks: where each profile keeps data: s3://<bucket>/<prefix><profile>/, read/write for
    that profile's Pod Identity role only (notebooks and fnjob jobs alike)."""

    create: bool = Field(
        default=False, description="create a private, versioned bucket for the profiles' data"
    )
    bucket: Annotated[str, matches(_BUCKET, "ml-data-example")] | None = Field(
        default=None, description="an existing bucket instead"
    )
    prefix: Annotated[str, matches(_KEY_PREFIX, "kubeflow/")] = Field(
        default="", description="key prefix before each profile's folder (empty or ending in /)"
    )

    @property
    def enabled(self) -> bool:
        return self.create or self.bucket is not None

    @model_validator(mode="after")
    def _one_source(self) -> ProfileData:
        if self.create and self.bucket is not None:
            raise PydanticCustomError(
                "rules_broken",
                "1 rule broken",
                {"problems": [("bucket", self.bucket, "remove it, or set create: false")]},
            )
        return self


class LoadBalancer(Model):
    """How the load balancer in front of Kubeflow is reached (ingress: load-balancer)."""

    scheme: Literal["internet-facing", "internal"] = Field(
        default="internet-facing", description="eks: the ALB's scheme"
    )
    allowed_cidrs: tuple[CidrV4, ...] = Field(
        default=("0.0.0.0/0",), min_length=1, description="IPv4 CIDRs that may connect"
    )
    service_type: Literal["LoadBalancer", "NodePort"] = Field(
        default="LoadBalancer", description="onprem: how the Istio gateway is exposed"
    )
    node_port: int | None = Field(
        default=None,
        ge=30000,
        le=32767,
        description="onprem NodePort: the HTTPS node port (required; HTTP redirects to it)",
    )

    @property
    def internal(self) -> bool:
        """eks: the ALB is reached from inside the VPC only."""
        return self.scheme == "internal"


class Tls(Model):
    """onprem: the certificate the Istio gateway serves for kubeflow.domain."""

    cluster_issuer: Annotated[str, dns_label(253, "letsencrypt")] | None = Field(
        default=None, description="a cert-manager ClusterIssuer that issues it"
    )
    secret_name: Annotated[str, dns_label(253, "kubeflow-tls")] | None = Field(
        default=None, description="or an existing kubernetes.io/tls Secret in istio-system"
    )

    @model_validator(mode="after")
    def _one_source(self) -> Tls:
        if self.cluster_issuer is not None and self.secret_name is not None:
            raise PydanticCustomError(
                "rules_broken",
                "1 rule broken",
                {
                    "problems": [
                        (
                            "secretName",
                            self.secret_name,
                            "give clusterIssuer or secretName, not both",
                        )
                    ]
                },
            )
        return self


class Kubeflow(Model):
    enabled: bool = Field(default=True, description="deploy Kubeflow")
    version: Annotated[
        str,
        no_float("version", versions.kubeflow_release()),
        matches(r"^v?\d+\.\d+(\.\d+)?(-rc\.?\d+)?$", '"26.03" or "v1.11.0"'),
    ] = Field(default=versions.kubeflow_release(), description="kubeflow/manifests release tag")
    local_path: str | None = Field(
        default=None, description="a local kubeflow/manifests checkout instead of the release"
    )
    components: UniqueStrings | None = Field(
        default=None,
        description="entries of upstream example/kustomization.yaml to install (default: all)",
    )
    protocol: Literal["http", "https"] = Field(
        default="https",
        description="http turns secure cookies off in the web apps and oauth2-proxy",
    )
    admin_email: Annotated[str, email("admin@example.org"), AfterValidator(_admin_email)] | None = (
        Field(default=None, description="login of the Kubeflow admin (replaces user@example.com)")
    )
    notebook_images: Annotated[tuple[ImageReference, ...], AfterValidator(unique)] = Field(
        default=(), description="images added to the notebook form"
    )
    profiles: tuple[Profile, ...] = Field(
        default=(), description="{name, owner}: user namespaces to create"
    )
    registry_access: Literal["none", "docker-config", "ecr"] = Field(
        default="none",
        description="ecr: an ECR prefix and a push role per profile, nodes pull with their role; "
        "docker-config: each profile's own registry credentials (secret registryDockerConfigs)",
    )
    job_registry: Annotated[str, matches(_REGISTRY_PREFIX, "registry.example.org/ml")] | None = (
        Field(
            default=None,
            description="docker-config: where fnjob pushes from notebooks, each profile under "
            "<jobRegistry>/<profile> (ecr: the profile's ECR prefix, always)",
        )
    )
    job_base_image: ImageReference | None = Field(
        default=None, description="base image of fnjob jobs (default: the notebook image)"
    )
    keep_untagged_images: int = Field(
        default=30, ge=1, le=1000, description="ecr: untagged job images kept per repository"
    )
    notebook_image: NotebookImage = section()
    data: ProfileData = section()
    ingress: Literal["port-forward", "load-balancer"] = Field(
        default="port-forward",
        description="port-forward (kubectl port-forward, nothing exposed) or load-balancer "
        "(https://<domain>)",
    )
    domain: Annotated[str, matches(_DOMAIN, "kubeflow.example.org")] | None = Field(
        default=None, description="the name Kubeflow is reached by (ingress: load-balancer)"
    )
    hosted_zone_id: (
        Annotated[str, matches(r"^Z[A-Z0-9]{1,32}$", "Z0123456789ABCDEFGHIJ")] | None
    ) = Field(
        default=None,
        description="eks: Route53 zone of the domain (certificate validation, alias record)",
    )
    certificate_arn: (
        Annotated[str, matches(_ACM_ARN, "arn:aws:acm:us-west-2:123456789012:certificate/<id>")]
        | None
    ) = Field(default=None, description="eks: an existing ACM certificate for the domain instead")
    load_balancer: LoadBalancer = section()
    tls: Tls = section()
    default_quota: Quota = Field(
        default={"gpus": 4},
        validate_default=True,
        description="limits of every profile without its own quota ({} for none)",
    )
    culling: Culling = section()
    training: Training = section()
    job_timeout_hours: int = Field(
        default=24,
        ge=1,
        le=720,
        description="fnjob jobs started from notebooks without their own timeout stop after "
        "this long, so none holds a GPU forever (FNJOB_DEFAULT_TIMEOUT)",
    )
    sso: Sso = section()
    allow_deletion: UniqueStrings = Field(
        default=(),
        description="objects a Kubeflow change may delete although data goes with them "
        "(Kind/name or Kind/namespace/name: CRDs, PVCs, namespaces); "
        "python -m stack.upgrade_plan refuses any other",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Kubeflow:
        rules = Rules()
        if self.enabled and self.admin_email is None:
            rules.add(
                "adminEmail", MISSING, "set the admin's login, e.g. adminEmail: admin@example.org"
            )
        if self.sso.connectors and self.ingress != "load-balancer":
            rules.add(
                "sso.connectors",
                MISSING,
                "reach Kubeflow by name first (ingress: load-balancer with a domain): an "
                "identity provider sends users back to https://<domain>/dex/callback",
            )
        names = [p.name for p in self.profiles]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            rules.add(
                "profiles",
                names,
                f"give each profile its own name; repeated: {', '.join(repeated)}",
            )
        if self.job_registry is not None and self.registry_access != "docker-config":
            rules.add(
                "jobRegistry",
                self.job_registry,
                "remove it: only docker-config uses it (ecr gives each profile its prefix)",
            )
        if self.notebook_image.build and self.registry_access != "ecr":
            rules.add(
                "notebookImage.build",
                True,
                "set registryAccess: ecr (the stack pushes the image to its ECR), or give "
                "notebookImage.image instead",
            )
        if self.data.enabled and self.registry_access != "ecr":
            rules.add(
                "data",
                self.data.bucket or "create",
                "set registryAccess: ecr (the profiles' Pod Identity roles get the access); on "
                "premises give each profile a volume or its own credentials (see the README)",
            )
        self._ingress_rules(rules)
        release = None if self.local_path is not None else kubeflow_releases().get(self.version)
        for index, entry in enumerate(self.components or ()):
            if release is not None and entry not in release.components:
                rules.add(
                    f"components[{index}]", entry, _closest(entry, release.components, self.version)
                )
        runtime = self.training.default_runtime
        if release is not None and runtime not in release.training_runtimes:
            rules.add(
                "training.defaultRuntime",
                runtime,
                f"not a ClusterTrainingRuntime of Kubeflow {self.version}; available: "
                f"{', '.join(release.training_runtimes)}",
            )
        rules.raise_if_any()
        return self

    def _ingress_rules(self, rules: Rules) -> None:
        if self.ingress == "port-forward":
            for key in ("domain", "hosted_zone_id", "certificate_arn"):
                if getattr(self, key) is not None:
                    rules.add(
                        to_camel(key),
                        getattr(self, key),
                        "set ingress: load-balancer, or remove it",
                    )
            return
        if self.protocol == "http":
            rules.add(
                "protocol",
                "http",
                "use https with ingress: load-balancer; plain HTTP to a load balancer would send "
                "logins and session cookies in clear",
            )
        if self.domain is None:
            rules.add(
                "domain", MISSING, "set the name to reach Kubeflow by, e.g. kubeflow.example.org"
            )

    @property
    def url(self) -> str:
        """Where users open Kubeflow."""
        if self.ingress == "load-balancer" and self.domain:
            return f"https://{self.domain}/"
        return "http://localhost:8080/"

    @property
    def http_mode(self) -> bool:
        return self.protocol == "http"

    @property
    def source(self) -> str:
        """What the manifests are rendered from: the local checkout or the release tag."""
        return self.local_path or self.version


def _closest(value: str, options: tuple[str, ...], version: str) -> str:
    what = f"not an entry of Kubeflow {version}'s example/kustomization.yaml"
    close = difflib.get_close_matches(value, options, n=2, cutoff=0.6)
    if close:
        return f"{what}; did you mean {' or '.join(close)}?"
    return f"{what}; allowed: {', '.join(options)}"
