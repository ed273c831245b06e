"""The platform's promises, as pure checks over one resource's inputs.

Nothing here imports the policy SDK or the stack program: a rule sees a resource's type, name,
stack and input properties (plain Python values, with ``UNKNOWN`` where a value is only known
after a dependency is created) and yields one message per broken promise. ``pack.py`` turns
the rules into a Pulumi policy pack; tests call them directly and through the pack.

The pack deliberately shares no code with the program it guards, so a change to the program
cannot quietly weaken its own guardrails.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml


class _Unknown:
    """A value Pulumi computes later (an id, an ARN); previews see this instead."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EKS_MANAGED_NODE_GROUP = "eks:index:ManagedNodeGroup"
SUBNET = "aws:ec2/subnet:Subnet"
EKS_COMPONENT_CLUSTER = "eks:index:Cluster"
EKS_CLUSTER = "aws:eks/cluster:Cluster"
EKS_ADDON = "aws:eks/addon:Addon"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HELM_CHARTS = ("kubernetes:helm.sh/v3:Chart", "kubernetes:helm.sh/v4:Chart")
KUBE_SECRET = "kubernetes:core/v1:Secret"
CONFIG_GROUPS = ("kubernetes:yaml/v2:ConfigGroup", "kubernetes:yaml:ConfigGroup")
ECR_REPOSITORY = "aws:ecr/repository:Repository"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SECURITY_GROUP_INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"

# Ranges that together cover more than a /8 of IPv4 (or the same share of IPv6) are "the
# internet": no office, VPN or CI range is that large, and 0.0.0.0/1 + 128.0.0.0/1 is 0.0.0.0/0.
_OPEN_SHARE_PREFIX: Final = 8
# A GPU node group larger than this is a budget decision, not a default: say so in the pack.
MAX_GPU_NODES_PER_GROUP: Final = 100
# What a production cluster must log: API calls, their audit trail and who authenticated.
REQUIRED_CONTROL_PLANE_LOGS: Final = ("api", "audit", "authenticator")

# Production rules apply to every stack except these, so a new stack (say `staging` copied
# from prod) is guarded until someone says otherwise. Policy config `nonProductionStacks`.
DEFAULT_NON_PRODUCTION_STACKS: Final = ("dev",)

# Values that must never reach a cluster: the render command's placeholders (the real values
# exist only in the stack's state) and credentials upstream Kubeflow publishes.
PLACEHOLDER_MARKERS: Final = ("GENERATED-BY-STACK", "FROM-STACK-SECRET")
PUBLISHED_CREDENTIALS: Final = (
    "12341234",
    "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok",
    "minio123",
)

# GPU instance families by their letters (p, g, gr and a generation digit), wider than the
# stack's catalog (model/gpu_instances.yaml) on purpose: this pack also guards programs that
# do not use it. tests/policy/test_rules.py checks that every catalog type matches.
_GPU_FAMILY = re.compile(r"^(?:p\d|g\d|gr\d)[a-z0-9-]*\.")
_EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")


@dataclass(frozen=True)
class ResourceInputs:
    """What a rule sees of one resource."""

    type: str
    name: str
    stack: str
    props: Mapping[str, Any]
    # Top-level inputs known to be Pulumi secrets. None: the caller cannot tell, which is the
    # case inside `pulumi preview` (the Python policy SDK hands policies plain values,
    # pulumi/pulumi-policy#241); the mock-based tests can tell and pass the set.
    secret_props: frozenset[str] | None = None


@dataclass(frozen=True)
class PolicySettings:
    non_production_stacks: tuple[str, ...] = DEFAULT_NON_PRODUCTION_STACKS

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PolicySettings:
        """From a policy's config (`--policy-pack-config`); raises ValueError naming the key."""
        stacks = config.get("nonProductionStacks", DEFAULT_NON_PRODUCTION_STACKS)
        if isinstance(stacks, str) or not all(isinstance(s, str) for s in stacks):
            raise ValueError(f"nonProductionStacks: expected a list of stack names, got {stacks!r}")
        return cls(non_production_stacks=tuple(stacks))

    def is_production(self, stack: str) -> bool:
        return stack not in self.non_production_stacks


Check = Callable[[ResourceInputs], Iterator[str]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    resource_types: tuple[str, ...]
    check: Check
    production_only: bool = False


# --- helpers ---------------------------------------------------------------------------------


def _get(value: Any, *path: str | int) -> Any:
    """``value[path...]``, or None where a step is missing (UNKNOWN stays UNKNOWN)."""
    for step in path:
        if value is UNKNOWN or value is None:
            return value
        if isinstance(step, int):
            if not isinstance(value, Sequence) or isinstance(value, str) or step >= len(value):
                return None
            value = value[step]
        else:
            if not isinstance(value, Mapping):
                return None
            value = value.get(step)
    return value


def _list(value: Any) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return []


def _is_true(value: Any) -> bool:
    """Providers take booleans as bools or strings (`encrypted: "true"`)."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


def _is_set(value: Any) -> bool:
    return value is UNKNOWN or (value is not None and value != "")


def _uses_launch_template(resource: ResourceInputs) -> Iterator[str]:
    if not _is_set(resource.props.get("launchTemplate")):
        yield (
            f"{resource.name}: no launchTemplate, so EKS's default template applies "
            "(unencrypted volumes unless the account encrypts by default, IMDS hop limit 2); "
            "give the node group a launch template"
        )


# --- node groups and their launch templates --------------------------------------------------


def check_node_volumes_encrypted(resource: ResourceInputs) -> Iterator[str]:
    if resource.type != LAUNCH_TEMPLATE:
        yield from _uses_launch_template(resource)
        return
    mappings = resource.props.get("blockDeviceMappings")
    if mappings is UNKNOWN:
        return
    ebs_mappings = [(i, m) for i, m in enumerate(_list(mappings)) if _get(m, "ebs") is not None]
    if not ebs_mappings:
        yield (
            f"{resource.name}: no EBS block device mapping, so the AMI's unencrypted default "
            "applies; map the root volume with ebs.encrypted: true"
        )
    for index, mapping in ebs_mappings:
        encrypted = _get(mapping, "ebs", "encrypted")
        if encrypted is not UNKNOWN and not _is_true(encrypted):
            device = _get(mapping, "deviceName") or "?"
            yield (
                f"{resource.name}: blockDeviceMappings[{index}] ({device}) has ebs.encrypted "
                f"{encrypted!r}; set it to true"
            )


def check_imdsv2_hop_limit(resource: ResourceInputs) -> Iterator[str]:
    if resource.type != LAUNCH_TEMPLATE:
        yield from _uses_launch_template(resource)
        return
    options = resource.props.get("metadataOptions")
    if options is UNKNOWN:
        return
    if not isinstance(options, Mapping):
        yield (
            f"{resource.name}: no metadataOptions; set httpTokens: required and "
            "httpPutResponseHopLimit: 1"
        )
        return
    if options.get("httpEndpoint") == "disabled":
        return  # no metadata service at all: nothing to borrow
    tokens = options.get("httpTokens")
    if tokens is not UNKNOWN and tokens != "required":
        yield f"{resource.name}: metadataOptions.httpTokens is {tokens!r}; set it to 'required'"
    hops = options.get("httpPutResponseHopLimit")
    if hops is not UNKNOWN and hops != 1:
        yield (
            f"{resource.name}: metadataOptions.httpPutResponseHopLimit is {hops!r}; set it to 1 "
            "so pods cannot reach the node role's credentials"
        )


def check_no_public_node_ips(resource: ResourceInputs) -> Iterator[str]:
    props = resource.props
    if resource.type == LAUNCH_TEMPLATE:
        for index, interface in enumerate(_list(props.get("networkInterfaces"))):
            if _is_true(_get(interface, "associatePublicIpAddress")):
                yield (
                    f"{resource.name}: networkInterfaces[{index}].associatePublicIpAddress is "
                    "true; nodes get private addresses only"
                )
    elif resource.type == SUBNET:
        if _is_true(props.get("mapPublicIpOnLaunch")):
            yield (
                f"{resource.name}: mapPublicIpOnLaunch is true, so instances launched here get "
                "a public IP; set it to false (load balancers do not need it)"
            )
    elif resource.type == EKS_COMPONENT_CLUSTER:
        associate = props.get("nodeAssociatePublicIpAddress")
        default_group = not _is_true(props.get("skipDefaultNodeGroup"))
        if _is_true(associate) or (associate is None and default_group):
            yield (
                f"{resource.name}: nodeAssociatePublicIpAddress is "
                f"{'true' if _is_true(associate) else 'unset (pulumi-eks gives public IPs)'}; "
                "set it to false"
            )


def is_gpu_node_group(props: Mapping[str, Any]) -> bool:
    ami_type = props.get("amiType")
    if isinstance(ami_type, str) and "NVIDIA" in ami_type.upper():
        return True
    return any(
        isinstance(t, str) and _GPU_FAMILY.match(t) for t in _list(props.get("instanceTypes"))
    )


def check_gpu_groups_tainted(resource: ResourceInputs) -> Iterator[str]:
    if not is_gpu_node_group(resource.props):
        return
    taints = resource.props.get("taints")
    if taints is UNKNOWN:
        return
    # `taints: []` is the stack model's documented way to say "no taint on purpose" (the
    # program then registers an empty list); an absent list is a group nobody decided about.
    if isinstance(taints, Sequence) and not isinstance(taints, str) and not taints:
        return
    effects = {str(_get(t, "effect")).upper().replace("_", "") for t in _list(taints)}
    if not effects & {"NOSCHEDULE", "NOEXECUTE"}:
        yield (
            f"{resource.name}: a GPU node group without a NoSchedule taint lets any pod take "
            "its nodes; add e.g. {key: nvidia.com/gpu, value: 'true', effect: NO_SCHEDULE}, "
            "or write taints: [] to leave it untainted on purpose"
        )


def check_gpu_groups_bounded(resource: ResourceInputs) -> Iterator[str]:
    if not is_gpu_node_group(resource.props):
        return
    size = _get(resource.props, "scalingConfig", "maxSize")
    if isinstance(size, int | float) and size > MAX_GPU_NODES_PER_GROUP:
        yield (
            f"{resource.name}: scalingConfig.maxSize is {size:g} GPU nodes; at most "
            f"{MAX_GPU_NODES_PER_GROUP} per group, so a runaway job cannot buy a fleet"
        )


# --- the EKS control plane (production) ------------------------------------------------------


def _networks(cidrs: Iterable[Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    found = []
    for cidr in cidrs:
        if isinstance(cidr, str):
            try:
                found.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                continue
    return found


def open_to_world(cidrs: Iterable[Any]) -> list[str]:
    """The ranges among ``cidrs`` that together cover more than a /8 share of their address
    family (0.0.0.0/0, ::/0, or 0.0.0.0/0 split into pieces); [] when they are narrow."""
    networks = _networks(cidrs)
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    wide: list[str] = []
    for family, covered, bits in (
        (v4, sum(n.num_addresses for n in ipaddress.collapse_addresses(v4)), 32),
        (v6, sum(n.num_addresses for n in ipaddress.collapse_addresses(v6)), 128),
    ):
        if covered > 2 ** (bits - _OPEN_SHARE_PREFIX):
            pieces = [n for n in family if n.prefixlen <= _OPEN_SHARE_PREFIX] or family
            wide.extend(str(n) for n in pieces)
    return wide


def check_endpoint_not_open(resource: ResourceInputs) -> Iterator[str]:
    if resource.type == EKS_CLUSTER:
        config = resource.props.get("vpcConfig")
        if config is UNKNOWN or not isinstance(config, Mapping):
            config = {}
        public, cidrs = config.get("endpointPublicAccess"), config.get("publicAccessCidrs")
        where = "vpcConfig."
    else:
        public, cidrs = (
            resource.props.get("endpointPublicAccess"),
            resource.props.get("publicAccessCidrs"),
        )
        where = ""
    if _is_false(public) or public is UNKNOWN or cidrs is UNKNOWN:
        return
    open_cidrs = open_to_world(_list(cidrs))
    if not _list(cidrs) or open_cidrs:
        shown = ", ".join(open_cidrs) if open_cidrs else "unset (EKS then allows 0.0.0.0/0)"
        yield (
            f"{resource.name}: the public API endpoint is open to the internet "
            f"({where}publicAccessCidrs {shown}); list your office/VPN/CI ranges or set "
            f"{where}endpointPublicAccess: false"
        )


def check_secrets_encryption(resource: ResourceInputs) -> Iterator[str]:
    if resource.type == EKS_CLUSTER:
        configs = resource.props.get("encryptionConfig")
        if configs is UNKNOWN:
            return
        for config in _list(configs) if not isinstance(configs, Mapping) else [configs]:
            resources = _get(config, "resources")
            if (resources is UNKNOWN or "secrets" in _list(resources)) and _is_set(
                _get(config, "provider", "keyArn")
            ):
                return
        yield (
            f"{resource.name}: Kubernetes secrets are not envelope-encrypted; add an "
            "encryptionConfig with resources: [secrets] and a KMS key"
        )
    elif not _is_set(resource.props.get("encryptionConfigKeyArn")):
        yield (
            f"{resource.name}: Kubernetes secrets are not envelope-encrypted; set "
            "encryptionConfigKeyArn to a KMS key (stack key secretsEncryption: true)"
        )


def check_control_plane_logs(resource: ResourceInputs) -> Iterator[str]:
    # Both the pulumi-eks component and aws.eks.Cluster name the input the same way.
    logs = resource.props.get("enabledClusterLogTypes")
    if logs is UNKNOWN:
        return
    missing = [kind for kind in REQUIRED_CONTROL_PLANE_LOGS if kind not in _list(logs)]
    if missing:
        yield (
            f"{resource.name}: control-plane logs {', '.join(missing)} are off, so nobody can "
            "tell later who did what to the cluster; set the stack key controlPlaneLogs: "
            f"[{', '.join(REQUIRED_CONTROL_PLANE_LOGS)}]"
        )


# --- network exposure ------------------------------------------------------------------------


def _ingress_blocks(resource: ResourceInputs) -> Iterator[tuple[str, list[Any]]]:
    """(where, CIDRs) of every ingress rule a security group resource declares."""
    props = resource.props
    if resource.type == SECURITY_GROUP:
        for index, rule in enumerate(_list(props.get("ingress"))):
            cidrs = _list(_get(rule, "cidrBlocks")) + _list(_get(rule, "ipv6CidrBlocks"))
            yield f"ingress[{index}]", cidrs
    elif resource.type == SECURITY_GROUP_RULE:
        if props.get("type") == "ingress":
            yield "", _list(props.get("cidrBlocks")) + _list(props.get("ipv6CidrBlocks"))
    else:
        yield "", [props.get("cidrIpv4"), props.get("cidrIpv6")]


def check_security_groups_closed(resource: ResourceInputs) -> Iterator[str]:
    for where, cidrs in _ingress_blocks(resource):
        wide = open_to_world(cidrs)
        if wide:
            shown = f"{where} " if where else ""
            yield (
                f"{resource.name}: {shown}admits {', '.join(wide)}, the whole internet; list "
                "the ranges that need it (for Kubeflow: kubeflow.loadBalancer.allowedCidrs)"
            )


def check_load_balancer_guarded(resource: ResourceInputs) -> Iterator[str]:
    props = resource.props
    if _is_true(props.get("internal")) or props.get("loadBalancerType") == "network":
        return
    groups = props.get("securityGroups")
    if groups is not UNKNOWN and not _list(groups):
        yield (
            f"{resource.name}: an internet-facing load balancer without securityGroups gets the "
            "VPC's default group; give it a group that admits only the allowed ranges"
        )


# --- what lands on the cluster ---------------------------------------------------------------


def _decoded(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return value  # not base64: a broken Secret, but still look at what it holds


def secret_values(obj: Mapping[str, Any]) -> dict[str, str]:
    """A Kubernetes Secret object's values in plain text (`data` decoded, `stringData` as is)."""
    values: dict[str, str] = {}
    data = obj.get("data")
    if isinstance(data, Mapping):
        for key, value in data.items():
            decoded = _decoded(value)
            if decoded is not None:
                values[str(key)] = decoded
    string_data = obj.get("stringData")
    if isinstance(string_data, Mapping):
        values.update({str(k): v for k, v in string_data.items() if isinstance(v, str)})
    return values


def _secret_objects(resource: ResourceInputs) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(input name, Secret object) for every Kubernetes Secret the resource applies."""
    props = resource.props
    if resource.type == KUBE_SECRET:
        yield "data" if "data" in props else "stringData", props
        return
    for index, obj in enumerate(_list(props.get("objs"))):
        if isinstance(obj, Mapping) and obj.get("kind") == "Secret":
            yield f"objs[{index}]", obj
    texts = props.get("yaml")
    for text in [texts] if isinstance(texts, str) else _list(texts):
        if not isinstance(text, str):
            continue
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            continue
        for obj in documents:
            if isinstance(obj, Mapping) and obj.get("kind") == "Secret":
                yield "yaml", obj


def _forbidden_value(value: str) -> str | None:
    for marker in PLACEHOLDER_MARKERS:
        if marker in value:
            return f"the render placeholder {marker} (the real value lives in the stack state)"
    for credential in PUBLISHED_CREDENTIALS:
        if credential in value:
            return f"a credential upstream Kubeflow publishes ({credential[:4]}...)"
    return None


def check_kubernetes_secrets(resource: ResourceInputs) -> Iterator[str]:
    carriers: set[str] = set()
    for where, obj in _secret_objects(resource):
        carriers.add(where.split("[", 1)[0])
        metadata = obj.get("metadata")
        name = metadata.get("name", "?") if isinstance(metadata, Mapping) else "?"
        for key, value in sorted(secret_values(obj).items()):
            problem = _forbidden_value(value)
            if problem:
                yield f"{resource.name}: Secret {name} key {key} ({where}) holds {problem}"
    if resource.type in CONFIG_GROUPS and resource.secret_props is not None:
        for prop in sorted(carriers - resource.secret_props):
            yield (
                f"{resource.name}: input {prop} holds Kubernetes Secrets in plain text (state, "
                "previews and PR comments show it); wrap it in pulumi.Output.secret(...) and "
                "keep Secrets in a group of their own"
            )


def check_helm_chart_pinned(resource: ResourceInputs) -> Iterator[str]:
    chart = resource.props.get("chart")
    if isinstance(chart, str) and (
        chart.startswith(("./", "../", "/")) or chart.endswith((".tgz", ".tar.gz"))
    ):
        return  # a chart in the repository or a versioned archive: pinned by its content
    version = resource.props.get("version")
    if version is UNKNOWN:
        return
    if not isinstance(version, str) or not _EXACT_VERSION.match(version):
        yield (
            f"{resource.name}: chart {chart!r} has version {version!r}; pin an exact chart "
            "version (e.g. '0.20.0'), not a range or the repository's latest"
        )


def check_eks_addons_pinned(resource: ResourceInputs) -> Iterator[str]:
    props = resource.props
    if resource.type == EKS_ADDON:
        version = props.get("addonVersion")
        if version is not UNKNOWN and not _is_set(version):
            yield (
                f"{resource.name}: add-on {props.get('addonName', '?')!r} has no addonVersion, "
                "so EKS installs whatever is the default that day; pin one "
                "(aws eks describe-addon-versions)"
            )
        return
    # pulumi-eks's cluster component installs coredns, kube-proxy and vpc-cni as add-ons.
    wanted = {
        "corednsAddonOptions": ("coredns", "version"),
        "kubeProxyAddonOptions": ("kube-proxy", "version"),
        "vpcCniOptions": ("vpc-cni", "addonVersion"),
    }
    for option, (addon, key) in wanted.items():
        settings = props.get(option)
        if settings is UNKNOWN:
            continue
        settings = settings if isinstance(settings, Mapping) else {}
        if option == "vpcCniOptions" and _is_true(props.get("useDefaultVpcCni")):
            continue
        if _is_false(settings.get("enabled")):
            continue
        if not _is_set(settings.get(key)):
            yield (
                f"{resource.name}: the {addon} add-on is not pinned; set {option}.{key} "
                "(e.g. 'v1.12.1-eksbuild.2' from aws eks describe-addon-versions)"
            )


def check_ecr_scan_on_push(resource: ResourceInputs) -> Iterator[str]:
    scan = _get(resource.props, "imageScanningConfiguration", "scanOnPush")
    if scan is not UNKNOWN and not _is_true(scan):
        yield (
            f"{resource.name}: images pushed here are not scanned; set "
            "imageScanningConfiguration.scanOnPush: true"
        )


RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "node-volumes-encrypted",
        "Node volumes are encrypted: every node group uses a launch template whose EBS "
        "volumes set encrypted: true.",
        (LAUNCH_TEMPLATE, NODE_GROUP, EKS_MANAGED_NODE_GROUP),
        check_node_volumes_encrypted,
    ),
    Rule(
        "imdsv2-hop-limit-1",
        "Nodes require IMDSv2 with a hop limit of 1, so pods cannot use the node's IAM role.",
        (LAUNCH_TEMPLATE, NODE_GROUP, EKS_MANAGED_NODE_GROUP),
        check_imdsv2_hop_limit,
    ),
    Rule(
        "no-public-node-ips",
        "Nodes get no public IP address (launch templates, subnets, pulumi-eks node defaults).",
        (LAUNCH_TEMPLATE, SUBNET, EKS_COMPONENT_CLUSTER),
        check_no_public_node_ips,
    ),
    Rule(
        "gpu-node-groups-tainted",
        "GPU node groups carry a NoSchedule (or NoExecute) taint, so only GPU work lands there.",
        (NODE_GROUP, EKS_MANAGED_NODE_GROUP),
        check_gpu_groups_tainted,
    ),
    Rule(
        "gpu-node-groups-bounded",
        f"A GPU node group scales to at most {MAX_GPU_NODES_PER_GROUP} nodes.",
        (NODE_GROUP, EKS_MANAGED_NODE_GROUP),
        check_gpu_groups_bounded,
    ),
    Rule(
        "eks-public-endpoint-restricted",
        "Production: the EKS public API endpoint is off or limited to listed CIDRs, never "
        "0.0.0.0/0.",
        (EKS_COMPONENT_CLUSTER, EKS_CLUSTER),
        check_endpoint_not_open,
        production_only=True,
    ),
    Rule(
        "eks-secrets-encryption",
        "Production: Kubernetes secrets are envelope-encrypted with a KMS key.",
        (EKS_COMPONENT_CLUSTER, EKS_CLUSTER),
        check_secrets_encryption,
        production_only=True,
    ),
    Rule(
        "eks-control-plane-logs",
        "Production: the control plane logs api, audit and authenticator events.",
        (EKS_COMPONENT_CLUSTER, EKS_CLUSTER),
        check_control_plane_logs,
        production_only=True,
    ),
    Rule(
        "security-groups-not-open-to-world",
        "No security group admits the whole internet (0.0.0.0/0, ::/0, or pieces adding up).",
        (SECURITY_GROUP, SECURITY_GROUP_RULE, SECURITY_GROUP_INGRESS_RULE),
        check_security_groups_closed,
    ),
    Rule(
        "load-balancers-guarded",
        "An internet-facing load balancer has its own security groups.",
        (LOAD_BALANCER,),
        check_load_balancer_guarded,
    ),
    Rule(
        "kubernetes-secrets-not-plaintext",
        "Kubernetes Secrets carry no placeholder or published default value, and the inputs "
        "that hold them are Pulumi secrets.",
        (KUBE_SECRET, *CONFIG_GROUPS),
        check_kubernetes_secrets,
    ),
    Rule(
        "helm-charts-pinned",
        "Helm charts are installed at an exact version.",
        (HELM_RELEASE, *HELM_CHARTS),
        check_helm_chart_pinned,
    ),
    Rule(
        "eks-addons-pinned",
        "EKS add-ons are installed at an exact version.",
        (EKS_ADDON, EKS_COMPONENT_CLUSTER),
        check_eks_addons_pinned,
    ),
    Rule(
        "ecr-scan-on-push",
        "ECR repositories scan images on push.",
        (ECR_REPOSITORY,),
        check_ecr_scan_on_push,
    ),
)


def rule_named(name: str) -> Rule:
    for rule in RULES:
        if rule.name == name:
            return rule
    raise KeyError(f"no rule named {name!r}; rules: {', '.join(r.name for r in RULES)}")


def violations(
    resources: Iterable[ResourceInputs], settings: PolicySettings | None = None
) -> list[tuple[str, str]]:
    """(rule name, message) for every broken promise, as the pack would report them."""
    settings = settings or PolicySettings()
    found: list[tuple[str, str]] = []
    for resource in resources:
        for rule in RULES:
            if resource.type not in rule.resource_types:
                continue
            if rule.production_only and not settings.is_production(resource.stack):
                continue
            found.extend((rule.name, message) for message in rule.check(resource))
    return found
