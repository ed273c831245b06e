"""The two kinds of stack, told apart by ``mode``, and their secrets."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from model import versions
from model.aws import SYSTEM_NODE_GROUP, ClusterAutoscaler, Endpoint, SystemNodeGroup, Vpc
from model.base import (
    MISSING,
    Model,
    Rules,
    custom,
    dns_label,
    matches,
    no_float,
    section,
    unique,
    with_rules,
)
from model.gpu import DevicePlugin, EksGpuGroup, GpuGroup, OnpremGpuGroup
from model.kubeflow import UPSTREAM_EXAMPLE_PROFILE, Kubeflow
from model.monitoring import Monitoring
from model.naming import node_group_name
from model.versions import DEFAULT_KUBERNETES_VERSION, SUPPORTED_KUBERNETES_VERSIONS

PROJECT = "kubeflow-eks"
# The value offline checks see for a secret that is set (its ciphertext cannot be read).
SECRET_PRESENT = "<secure>"
# dex stores a bcrypt hash of the admin password; bcrypt refuses more than 72 bytes.
ADMIN_PASSWORD_MIN_CHARS = 12
ADMIN_PASSWORD_MAX_BYTES = 72
# Names derived from the cluster's (roles, node groups, load balancers) must fit AWS limits.
CLUSTER_NAME_MAX = 32
IAM_ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$"
IAM_POLICY_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:policy/[\w+=,.@/-]+$"


class Onprem(Model):
    kubeconfig_path: str | None = Field(
        default=None, description="kubeconfig file of the existing cluster"
    )
    context: str | None = Field(default=None, description="kubeconfig context (default: current)")

    @model_validator(mode="before")
    @classmethod
    def _object_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise custom("onprem_string", f"write an object: onprem: {{kubeconfigPath: {data}}}")
        return data


def _admin_password(value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
    kubeflow = info.data.get("kubeflow")
    if value is None:
        if kubeflow is None or kubeflow.enabled:
            raise custom(
                "secret_missing", "set it: pulumi config set --secret kubeflowAdminPassword"
            )
        return value
    text = value.get_secret_value()
    if text == SECRET_PRESENT:
        return value
    if len(text) < ADMIN_PASSWORD_MIN_CHARS:
        raise custom("password_short", f"use at least {ADMIN_PASSWORD_MIN_CHARS} characters")
    if len(text.encode()) > ADMIN_PASSWORD_MAX_BYTES:
        raise custom(
            "password_long",
            f"use at most {ADMIN_PASSWORD_MAX_BYTES} bytes; bcrypt, which stores it, refuses more",
        )
    return value


def _is_docker_config(text: str) -> bool:
    try:
        parsed = json.loads(text)
    except ValueError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("auths"), dict)


def _docker_configs(
    value: Mapping[str, SecretStr], info: ValidationInfo
) -> Mapping[str, SecretStr]:
    """One docker config per profile: each profile reaches only its own registry credentials."""
    kubeflow = info.data.get("kubeflow")
    if kubeflow is None:
        return value
    rules = Rules()
    profiles = [p.name for p in kubeflow.profiles]
    wanted = kubeflow.enabled and kubeflow.registry_access == "docker-config"
    if value and not wanted:
        rules.add("", MISSING, "remove it: only kubeflow.registryAccess docker-config uses it")
    for name, secret in value.items():
        if name not in (*profiles, UPSTREAM_EXAMPLE_PROFILE):
            rules.add(name, MISSING, f"not a profile; profiles: {', '.join(profiles) or 'none'}")
        elif secret.get_secret_value() != SECRET_PRESENT and not _is_docker_config(
            secret.get_secret_value()
        ):
            rules.add(name, MISSING, 'use a docker config.json: {"auths": {"REGISTRY": {...}}}')
    if wanted:
        for name in profiles:
            if name not in value:
                rules.add(
                    name,
                    MISSING,
                    f"set the profile's own credentials: pulumi config set --secret --path "
                    f"'registryDockerConfigs.{name}' \"$(cat {name}-config.json)\"",
                )
    rules.raise_if_any()
    return value


def _sso_client_secrets(
    value: Mapping[str, SecretStr], info: ValidationInfo
) -> Mapping[str, SecretStr]:
    """One client secret per Dex connector, by the connector's id."""
    kubeflow = info.data.get("kubeflow")
    if kubeflow is None:
        return value
    rules = Rules()
    ids = [c.id for c in kubeflow.sso.connectors] if kubeflow.enabled else []
    for name in value:
        if name not in ids:
            rules.add(
                name, MISSING, f"not a connector of kubeflow.sso; ids: {', '.join(ids) or 'none'}"
            )
    for name in ids:
        if name not in value:
            rules.add(
                name,
                MISSING,
                f"set the connector's client secret: pulumi config set --secret --path "
                f"'ssoClientSecrets.{name}' ...",
            )
    rules.raise_if_any()
    return value


class StackBase(Model):
    """Keys both kinds of stack carry. Secrets come last: their rules read ``kubeflow``."""

    secret_keys: ClassVar[tuple[str, ...]] = (
        "kubeflowAdminPassword",
        "registryDockerConfigs",
        "ssoClientSecrets",
        "onpremKubeconfig",
    )

    stack: str = Field(exclude=True, description="the Pulumi stack name")
    cluster_name: Annotated[str, dns_label(CLUSTER_NAME_MAX, "ml-platform-dev")] = Field(
        default_factory=lambda data: default_cluster_name(data.get("stack", "")),
        description="cluster name (default kubeflow-<stack>)",
    )
    gpu_node_groups: tuple[GpuGroup, ...] = ()
    device_plugin: DevicePlugin = section()
    monitoring: Monitoring = section()
    kubeflow: Kubeflow = section()
    kubeflow_admin_password: Annotated[SecretStr | None, AfterValidator(_admin_password)] = Field(
        default=None,
        validate_default=True,
        description="(secret) the admin's password, 12 characters to 72 bytes",
    )
    registry_docker_configs: Annotated[Mapping[str, SecretStr], AfterValidator(_docker_configs)] = (
        Field(
            default_factory=dict,
            validate_default=True,
            description="(secret, per profile) each profile's docker config.json, for "
            "registryAccess: docker-config",
        )
    )
    sso_client_secrets: Annotated[Mapping[str, SecretStr], AfterValidator(_sso_client_secrets)] = (
        Field(
            default_factory=dict,
            validate_default=True,
            description="(secret, per connector) the OAuth client secret of each kubeflow.sso "
            "connector, by its id",
        )
    )

    @field_validator("gpu_node_groups", mode="after")
    @classmethod
    def _distinct_groups(cls, groups: tuple[GpuGroup, ...]) -> tuple[GpuGroup, ...]:
        names = [g.name for g in groups]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise custom(
                "unique", f"give each GPU group its own name; repeated: {', '.join(repeated)}"
            )
        return groups

    @property
    def is_eks(self) -> bool:
        return isinstance(self, EksStack)


def default_cluster_name(stack: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", f"kubeflow-{stack}".lower()).strip("-")
    return name[:CLUSTER_NAME_MAX].rstrip("-")


def _required(fix: str) -> Any:
    def check(value: Any) -> Any:
        if value is None:
            raise custom("required", fix)
        return value

    return check


def _region(value: str) -> str:
    if not re.match(r"^[a-z]{2}(-gov)?-[a-z]+-\d$", value):
        raise custom("region", "use a region such as us-west-2")
    return value


# AWS tag keys and values: letters, digits and spaces of any script, and _ . : / = + - @
_AWS_TAG_TEXT = re.compile(r"^[\w .:/=+\-@]*$")
_AWS_TAG_CHARACTERS = "use letters, digits, spaces and _ . : / = + - @ only (AWS's tag characters)"


def _aws_tag_key(key: str) -> str:
    if key.lower().startswith("aws:"):
        raise custom("aws_tag", "remove the aws: prefix; AWS reserves it for its own tags")
    if not 1 <= len(key) <= 128:
        raise custom("aws_tag", f"use 1 to 128 characters (AWS's limit; this has {len(key)})")
    if not _AWS_TAG_TEXT.match(key):
        raise custom("aws_tag", _AWS_TAG_CHARACTERS)
    return key


def _aws_tag_value(value: str) -> str:
    if len(value) > 256:
        raise custom("aws_tag", f"use at most 256 characters (AWS's limit; this has {len(value)})")
    if not _AWS_TAG_TEXT.match(value):
        raise custom("aws_tag", _AWS_TAG_CHARACTERS)
    return value


class EksStack(StackBase):
    """The stack creates the cluster on AWS."""

    mode: Literal["eks"] = "eks"
    region: Annotated[
        str | None,
        AfterValidator(_required("set it: pulumi config set aws:region us-west-2")),
        AfterValidator(lambda v: v if v is None else _region(v)),
    ] = Field(default=None, validate_default=True, alias="aws:region", description="AWS region")
    kubernetes_version: Annotated[str, no_float("kubernetesVersion", "1.34")] = Field(
        default=DEFAULT_KUBERNETES_VERSION,
        description=f"one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}",
    )
    tags: Mapping[
        Annotated[str, AfterValidator(_aws_tag_key)], Annotated[str, AfterValidator(_aws_tag_value)]
    ] = Field(default_factory=dict, description="AWS tags added to every resource")
    vpc: Vpc = section()
    endpoint: Endpoint = section()
    control_plane_logs: Annotated[
        tuple[Literal["api", "audit", "authenticator", "controllerManager", "scheduler"], ...],
        AfterValidator(unique),
    ] = Field(
        default=(),
        description="any of api, audit, authenticator, controllerManager, scheduler",
    )
    secrets_encryption: bool = Field(
        default=True, description="KMS envelope encryption of Kubernetes secrets"
    )
    admin_role_arns: Annotated[
        tuple[
            Annotated[str, matches(IAM_ROLE_ARN, "arn:aws:iam::123456789012:role/platform-admin")],
            ...,
        ],
        AfterValidator(unique),
    ] = Field(default=(), description="IAM roles given cluster-admin through EKS access entries")
    viewer_role_arns: Annotated[
        tuple[
            Annotated[
                str, matches(IAM_ROLE_ARN, "arn:aws:iam::123456789012:role/kubeflow-eks-ci-preview")
            ],
            ...,
        ],
        AfterValidator(unique),
    ] = Field(
        default=(),
        description="IAM roles given read-only cluster access (the CI preview role)",
    )
    permissions_boundary: (
        Annotated[
            str,
            matches(
                IAM_POLICY_ARN,
                "arn:aws:iam::123456789012:policy/kubeflow-eks/kubeflow-eks-workload-boundary",
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="IAM policy every role the stack creates carries as its permissions "
        "boundary (the CI deploy role requires the bootstrap's)",
    )
    system_node_group: SystemNodeGroup = section()
    gpu_node_groups: tuple[EksGpuGroup, ...] = ()
    cluster_autoscaler: ClusterAutoscaler = section()
    node_ami_releases: Mapping[versions.AmiFamily, str] = Field(
        default_factory=dict,
        description="EKS AMI release of every node group of an AMI family (AL2023, "
        "BOTTLEROCKET) instead of the one model/versions.yaml pins, e.g. "
        "{AL2023: 1.35.6-20260714}",
    )

    @field_validator("node_ami_releases")
    @classmethod
    def _ami_release_forms(
        cls, releases: Mapping[versions.AmiFamily, str]
    ) -> Mapping[versions.AmiFamily, str]:
        rules = Rules()
        for family, release in releases.items():
            problem = versions.ami_release_problem(family, release)
            if problem:
                rules.add(family, release, problem)
        rules.raise_if_any()
        return releases

    @field_validator("kubeflow", mode="after")
    @classmethod
    def _kubeflow_on_eks(cls, kubeflow: Kubeflow) -> Kubeflow:
        rules = Rules()
        for key in ("service_type", "node_port"):
            if key in kubeflow.load_balancer.model_fields_set:
                value = getattr(kubeflow.load_balancer, key)
                rules.add(
                    f"loadBalancer.{to_camel(key)}", value, "remove it: only for mode: onprem"
                )
        for key in ("cluster_issuer", "secret_name"):
            if key in kubeflow.tls.model_fields_set:
                rules.add(
                    f"tls.{to_camel(key)}",
                    getattr(kubeflow.tls, key),
                    "remove it: on EKS the load balancer's ACM certificate is used",
                )
        lb = kubeflow.ingress == "load-balancer"
        if lb and kubeflow.hosted_zone_id is None and kubeflow.certificate_arn is None:
            rules.add(
                "hostedZoneId",
                MISSING,
                "set the Route53 zone of the domain (the stack issues and validates an ACM "
                "certificate and adds the DNS record), or certificateArn",
            )
        rules.raise_if_any()
        return kubeflow

    @field_validator("kubernetes_version")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value not in SUPPORTED_KUBERNETES_VERSIONS:
            raise custom("k8s_version", f"use one of {', '.join(SUPPORTED_KUBERNETES_VERSIONS)}")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _every_rule(cls, data: Any, handler: ModelWrapValidatorHandler[EksStack]) -> EksStack:
        """The rules spanning several keys run on every key that validated, even when others
        did not (a bad GPU group does not hide a wrong AZ), so each problem is shown at once."""
        rules = Rules()
        try:
            stack = handler(data)
        except ValidationError as error:
            if not isinstance(data, Mapping):
                raise
            _stack_rules(rules, **_valid_parts(data, error))
            if not rules.problems:
                raise
            raise with_rules(error, rules, data) from None
        _stack_rules(
            rules,
            region=stack.region,
            kubernetes_version=stack.kubernetes_version,
            vpc=stack.vpc,
            groups=dict(enumerate(stack.gpu_node_groups)),
            cluster_autoscaler=stack.cluster_autoscaler,
            kubeflow=stack.kubeflow,
            system_node_group=stack.system_node_group,
            node_ami_releases=stack.node_ami_releases,
        )
        for index, arn in enumerate(stack.viewer_role_arns):
            if arn in stack.admin_role_arns:
                rules.add(
                    f"viewerRoleArns[{index}]",
                    arn,
                    "remove it here or from adminRoleArns: EKS gives a role one access entry",
                )
        rules.raise_if_any()
        return stack

    def node_ami_release(self, group: SystemNodeGroup | EksGpuGroup) -> str:
        """The AMI release a node group runs: its own amiReleaseVersion, else the stack's
        nodeAmiReleases for its family, else the one model/versions.yaml pins."""
        family = versions.ami_family(group.ami_type)
        release = (
            group.ami_release_version
            or self.node_ami_releases.get(family)
            or versions.pins(self.kubernetes_version).node_ami_releases[family]
        )
        assert release is not None, "the model requires one (_node_ami_releases)"
        return release

    @property
    def autoscaler_chart(self) -> str:
        return (
            self.cluster_autoscaler.chart_version
            or versions.pins(self.kubernetes_version).autoscaler_chart
        )

    @property
    def autoscaler_image(self) -> str:
        return (
            self.cluster_autoscaler.image_tag
            or versions.pins(self.kubernetes_version).autoscaler_image
        )


class OnpremStack(StackBase):
    """An existing cluster, reached through a kubeconfig: no AWS resource at all."""

    mode: Literal["onprem"]
    onprem: Onprem = section()
    gpu_node_groups: tuple[OnpremGpuGroup, ...] = Field(
        default=(), validate_default=True, description="the GPU servers' labels and taints"
    )
    onprem_kubeconfig: SecretStr | None = Field(
        default=None,
        validate_default=True,
        description="(secret) kubeconfig content, instead of onprem.kubeconfigPath",
    )

    @field_validator("gpu_node_groups", mode="after")
    @classmethod
    def _described(cls, groups: tuple[OnpremGpuGroup, ...]) -> tuple[OnpremGpuGroup, ...]:
        if not groups:
            raise custom(
                "required", "describe the GPU servers: at least one {name, labels, taints}"
            )
        return groups

    @field_validator("monitoring", mode="after")
    @classmethod
    def _no_node_agent(cls, monitoring: Monitoring) -> Monitoring:
        rules = Rules()
        if "node_health" in monitoring.model_fields_set:
            rules.add(
                "nodeHealth",
                monitoring.node_health,
                "remove it: the EKS node monitoring agent runs on EKS only "
                "(docs/gpu-metrics-and-node-health.md says what covers it on premises)",
            )
        rules.raise_if_any()
        return monitoring

    @field_validator("kubeflow", mode="after")
    @classmethod
    def _kubeflow_on_prem(cls, kubeflow: Kubeflow) -> Kubeflow:
        rules = Rules()
        if kubeflow.registry_access == "ecr":
            rules.add("registryAccess", "ecr", "use docker-config; ecr needs EKS nodes")
        for key in ("hosted_zone_id", "certificate_arn"):
            if getattr(kubeflow, key) is not None:
                rules.add(to_camel(key), getattr(kubeflow, key), "remove it: only for mode: eks")
        if "scheme" in kubeflow.load_balancer.model_fields_set:
            rules.add("loadBalancer.scheme", kubeflow.load_balancer.scheme, "remove it: eks only")
        lb = kubeflow.load_balancer
        if (
            kubeflow.ingress == "load-balancer"
            and lb.service_type == "NodePort"
            and lb.node_port is None
        ):
            rules.add(
                "loadBalancer.nodePort",
                MISSING,
                "set the HTTPS node port (30000-32767): plain HTTP is redirected to "
                "https://<domain>:<nodePort>/, which a port Kubernetes picks cannot be",
            )
        tls = kubeflow.tls
        if kubeflow.ingress == "load-balancer" and not (tls.cluster_issuer or tls.secret_name):
            rules.add(
                "tls",
                MISSING,
                "set tls.clusterIssuer (cert-manager issues the certificate) or tls.secretName "
                "(an existing TLS Secret in istio-system)",
            )
        rules.raise_if_any()
        return kubeflow

    @field_validator("onprem_kubeconfig", mode="after")
    @classmethod
    def _reachable(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        onprem = info.data.get("onprem")
        if value is None and onprem is not None and onprem.kubeconfig_path is None:
            raise custom(
                "required",
                "set onprem.kubeconfigPath, or this secret: "
                'pulumi config set --secret onpremKubeconfig "$(cat kubeconfig)"',
            )
        return value


def _stack_rules(
    rules: Rules,
    *,
    region: str | None,
    kubernetes_version: str | None,
    vpc: Vpc | None,
    groups: Mapping[int, EksGpuGroup],
    cluster_autoscaler: ClusterAutoscaler | None,
    kubeflow: Kubeflow | None,
    system_node_group: SystemNodeGroup | None,
    node_ami_releases: Mapping[versions.AmiFamily, str] | None,
) -> None:
    """The rules of an EKS stack that read several keys; each runs when its keys are valid
    (None: the key has problems of its own). ``groups``: the valid GPU groups by index."""
    if region is not None and vpc is not None:
        _zones_in_region(rules, region, vpc)
        _node_group_names_distinct(rules, region, vpc, groups)
    if cluster_autoscaler is not None:
        _scale_from_zero(rules, groups, cluster_autoscaler)
        if kubernetes_version is not None:
            _autoscaler_minor(rules, cluster_autoscaler, kubernetes_version)
    if region is not None and kubeflow is not None:
        _certificate_in_region(rules, region, kubeflow)
    if kubernetes_version is not None and node_ami_releases is not None:
        node_groups: dict[str, SystemNodeGroup | EksGpuGroup] = {
            f"gpuNodeGroups[{index}]": group for index, group in groups.items()
        }
        if system_node_group is not None:
            node_groups = {"systemNodeGroup": system_node_group, **node_groups}
        _node_ami_releases(rules, kubernetes_version, node_ami_releases, node_groups)


def _zones_in_region(rules: Rules, region: str, vpc: Vpc) -> None:
    if vpc.creates_vpc:
        for index, zone in enumerate(vpc.availability_zones):
            if not zone.startswith(region):
                rules.add(
                    f"vpc.availabilityZones[{index}]",
                    zone,
                    f"use an AZ of {region}, e.g. {region}a",
                )


def _node_group_names_distinct(
    rules: Rules, region: str, vpc: Vpc, groups: Mapping[int, EksGpuGroup]
) -> None:
    """Node groups are named ``<group>`` or ``<group>-<zone>``: two of one name would repeat
    Pulumi resource names, which fails the deployment after resources were created."""
    taken: dict[str, tuple[str, str]] = {SYSTEM_NODE_GROUP: ("", "the system node group")}
    for index, group in groups.items():
        zones: tuple[str | None, ...] = vpc.zones if group.placement == "zonal" else (None,)
        for zone in zones:
            name = node_group_name(group.name, zone and vpc.zone_suffix(zone, region))
            where = f" in {zone}" if zone else ""
            owner, first = taken.setdefault(
                name, (group.name, f"the node group of gpuNodeGroups[{index}]{where}")
            )
            if owner != group.name:  # a repeated group name is reported on its own
                rules.add(
                    f"gpuNodeGroups[{index}].name",
                    group.name,
                    f"rename the group: its node group{where} would be named {name!r}, as is "
                    f"{first}; Pulumi needs one name per node group",
                )
                break


def _scale_from_zero(
    rules: Rules, groups: Mapping[int, EksGpuGroup], autoscaler: ClusterAutoscaler
) -> None:
    for index, group in groups.items():
        if group.min_size == 0 and not autoscaler.enabled:
            rules.add(
                f"gpuNodeGroups[{index}].minSize",
                0,
                "set minSize 1 or clusterAutoscaler.enabled: true; a group at zero never "
                "scales up without the autoscaler",
            )


def _autoscaler_minor(rules: Rules, autoscaler: ClusterAutoscaler, kubernetes_version: str) -> None:
    if autoscaler.image_tag is not None:
        minor = autoscaler.image_tag.lstrip("v").rsplit(".", 1)[0]
        if minor != kubernetes_version:
            rules.add(
                "clusterAutoscaler.imageTag",
                autoscaler.image_tag,
                f"use a v{kubernetes_version}.x image; the autoscaler's minor version "
                "must match the cluster's",
            )


def _node_ami_releases(
    rules: Rules,
    kubernetes_version: str,
    stack_wide: Mapping[versions.AmiFamily, str],
    node_groups: Mapping[str, SystemNodeGroup | EksGpuGroup],
) -> None:
    """Every node group runs a release of the cluster's minor version, and has one: a family
    whose pin could not be verified (``release: null`` in versions.yaml) must be given one."""
    for family, release in stack_wide.items():
        problem = versions.ami_release_problem(family, release, kubernetes_version)
        if problem:
            rules.add(f"nodeAmiReleases.{family}", release, problem)
    pinned = versions.pins(kubernetes_version).node_ami_releases
    for at, group in node_groups.items():
        family = versions.ami_family(group.ami_type)
        own = group.ami_release_version
        if own is not None:
            problem = versions.ami_release_problem(family, own, kubernetes_version)
            if problem:
                rules.add(f"{at}.amiReleaseVersion", own, problem)
        elif family not in stack_wide and pinned[family] is None:
            rules.add(
                f"{at}.amiReleaseVersion",
                MISSING,
                f"set it (or nodeAmiReleases.{family}): model/versions.yaml pins no verified "
                f"{family} release for Kubernetes {kubernetes_version}, and an unpinned group "
                "takes whatever release is newest when EKS creates or updates it",
            )


def _certificate_in_region(rules: Rules, region: str, kubeflow: Kubeflow) -> None:
    arn = kubeflow.certificate_arn
    if arn is not None and arn.split(":")[3] != region:
        rules.add(
            "kubeflow.certificateArn",
            arn,
            f"use a certificate of {region}: a load balancer serves ACM certificates of its "
            f"own region only (this one is of {arn.split(':')[3]})",
        )


# The keys the stack-wide rules read, besides the GPU groups.
_RULE_FIELDS = (
    "region",
    "kubernetes_version",
    "vpc",
    "cluster_autoscaler",
    "kubeflow",
    "system_node_group",
    "node_ami_releases",
)


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(EksStack.model_fields[name].rebuild_annotation())


_GPU_GROUP: TypeAdapter[EksGpuGroup] = TypeAdapter(EksGpuGroup)


def _valid_parts(data: Mapping[str, Any], error: ValidationError) -> dict[str, Any]:
    """What the stack-wide rules read, from a stack that failed validation: each key that
    validated (None for those with problems), and the GPU groups that validated by index."""
    locs = [item["loc"] for item in error.errors()]
    broken = {loc[0] for loc in locs if loc}
    parts: dict[str, Any] = {}
    for name in _RULE_FIELDS:
        field = EksStack.model_fields[name]
        key = field.alias or name
        value = data[key] if key in data else field.get_default(call_default_factory=True)
        parts[name] = None if {key, name} & broken else _validated(_field_adapter(name), value)
    groups = data.get("gpuNodeGroups")
    bad_groups = {loc[1] for loc in locs if len(loc) > 1 and loc[0] == "gpuNodeGroups"}
    parts["groups"] = {
        index: group
        for index, raw in enumerate(groups if isinstance(groups, list | tuple) else ())
        if index not in bad_groups and (group := _validated(_GPU_GROUP, raw)) is not None
    }
    return parts


def _validated(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _mode_of(data: Any) -> str:
    if isinstance(data, Mapping):
        return str(data.get("mode", "eks"))
    return "onprem" if isinstance(data, OnpremStack) else "eks"


StackConfig = Annotated[
    Annotated[EksStack, Tag("eks")] | Annotated[OnpremStack, Tag("onprem")],
    Discriminator(
        _mode_of,
        custom_error_type="mode",
        custom_error_message="use eks (create the cluster on AWS) or onprem (an existing cluster)",
        custom_error_context={"discriminator": "mode"},
    ),
]
