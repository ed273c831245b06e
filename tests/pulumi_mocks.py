"""Run the stack program under Pulumi's mocks and record every registered resource.

The stock MockMonitor advertises resource references; with resources passed as inputs that
makes runs flaky ("Future attached to a different loop", pulumi/pulumi#6561). Our monitor
drops that feature, so references arrive as ids/URNs and runs are stable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.proto import resource_pb2

ROOT = Path(__file__).resolve().parent.parent
STACKS = ROOT / "stacks"
# Tests never fetch kubeflow/manifests: stacks render our own fixture of the same shape.
KUBEFLOW_FIXTURE = ROOT / "tests" / "fixtures" / "kubeflow-manifests"
# A connector's OAuth client secret, as the stack would hold it (never to appear in clear).
TEST_SSO_SECRET = "sso-client-secret-only-in-secrets-7f3a"
TEST_PASSWORD = "correct-horse-battery-staple"
ACCOUNT = "123456789012"
TEST_DOCKER_CONFIG = json.dumps({"auths": {"registry.example.org": {"auth": "dXNlcjpwYXNz"}}})


# How the engine marks a secret value inside resource inputs.
SECRET_SIG, SECRET_MARK = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_MARK


def reveal(value: Any) -> Any:
    """The plain value of a (possibly) secret input."""
    return value["value"] if is_secret(value) else value


class StableMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks

    def RegisterResource(self, request: Any) -> Any:
        # Keep each resource's explicit dependencies (depends_on), by resource name.
        self.recording.dependencies[request.name] = [
            urn.rsplit("::", 1)[-1] for urn in request.dependencies
        ]
        urn = self.make_urn(request.parent, request.type, request.name)
        property_deps = {dep for deps in request.propertyDependencies.values() for dep in deps.urns}
        self.recording.graph[urn] = Node(
            urn=urn,
            typ=request.type,
            name=request.name,
            parent=request.parent or None,
            dependencies=frozenset(request.dependencies) | property_deps,
        )
        return super().RegisterResource(request)

    def GetDeploymentInfo(self, request: Any) -> Any:
        info = super().GetDeploymentInfo(request)
        features = [
            f
            for f in info.supportedFeatures
            if f != resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES
        ]
        return resource_pb2.DeploymentInfo(supportedFeatures=features)

    def SupportsFeature(self, request: Any) -> Any:
        if request.id == "resourceReferences":
            return type("SupportsFeatureResponse", (), {"hasSupport": False})
        return super().SupportsFeature(request)


@dataclass(frozen=True)
class Node:
    """A registered resource as the engine orders it: its parent and what it waits for."""

    urn: str
    typ: str
    name: str
    parent: str | None
    dependencies: frozenset[str]


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    resources: list[Registered] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dependencies: dict[str, list[str]] = field(default_factory=dict)
    graph: dict[str, Node] = field(default_factory=dict)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs), args.provider))
        outputs = dict(args.inputs)
        rid = f"{args.name}-id"
        if args.typ == "eks:index:Cluster":
            kubeconfig = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": args.name}]}
            outputs.update(
                kubeconfig=kubeconfig,
                kubeconfigJson=json.dumps(kubeconfig),
                oidcProviderArn=f"arn:aws:iam::123456789012:oidc-provider/oidc.eks.test/id/{args.name}",
                oidcProviderUrl=f"https://oidc.eks.test/id/{args.name}",
            )
        elif args.typ in ("aws:iam/role:Role", "aws:kms/key:Key"):
            outputs.update(
                name=args.inputs.get("name", args.name),
                arn=f"arn:aws:iam::123456789012:role/{args.name}",
            )
        elif args.typ == "aws:eks/nodeGroup:NodeGroup":
            outputs.update(
                nodeGroupName=f"{args.inputs.get('nodeGroupNamePrefix', '')}abc",
                arn=f"arn:aws:eks:us-west-2:123456789012:nodegroup/{args.name}",
                resources=[{"autoscalingGroups": [{"name": f"eks-{args.name}-asg"}]}],
            )
        elif args.typ == "aws:acm/certificate:Certificate":
            domain = args.inputs["domainName"]
            outputs.update(
                arn=f"arn:aws:acm:us-west-2:{ACCOUNT}:certificate/{args.name}",
                domainValidationOptions=[
                    {
                        "domainName": domain,
                        "resourceRecordName": f"_0123abcd.{domain}.",
                        "resourceRecordType": "CNAME",
                        "resourceRecordValue": "_4567ef.acm-validations.aws.",
                    }
                ],
            )
        elif args.typ == "aws:ecr/repository:Repository":
            repo = args.inputs.get("name", args.name)
            outputs.update(
                arn=f"arn:aws:ecr:us-west-2:{ACCOUNT}:repository/{repo}",
                registryId=ACCOUNT,
                repositoryUrl=f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/{repo}",
            )
        elif args.typ == "aws:s3/bucket:Bucket":
            # AWS completes a bucketPrefix with a unique suffix.
            name = args.inputs.get("bucket") or f"{args.inputs.get('bucketPrefix', '')}0123abcd"
            outputs.update(bucket=name, arn=f"arn:aws:s3:::{name}")
        elif args.typ == "docker-build:index:Image":
            # The digest BuildKit reports: of the pushed manifest, stable per inputs here.
            inputs = json.dumps(args.inputs, sort_keys=True, default=str)
            outputs.update(digest="sha256:" + hashlib.sha256(inputs.encode()).hexdigest())
        elif args.typ == "aws:route53/record:Record":
            outputs.update(fqdn=str(args.inputs["name"]).rstrip("."))
        elif args.typ == "aws:lb/loadBalancer:LoadBalancer":
            outputs.update(
                arn=f"arn:aws:elasticloadbalancing:us-west-2:{ACCOUNT}:loadbalancer/app/{args.name}",
                dnsName=f"{args.name}-123.us-west-2.elb.amazonaws.com",
                zoneId="Z1H1FL5HABSF5",
            )
        elif args.typ == "aws:lb/targetGroup:TargetGroup":
            outputs.update(
                arn=f"arn:aws:elasticloadbalancing:us-west-2:{ACCOUNT}:targetgroup/{args.name}"
            )
        elif args.typ == "aws:ec2/launchTemplate:LaunchTemplate":
            outputs.update(latestVersion=1)
        elif args.typ == "random:index/randomPassword:RandomPassword":
            # Deterministic per name, the right length, never an upstream default.
            seed = hashlib.sha256(args.name.encode()).hexdigest() * 4
            outputs.update(result=seed[: int(args.inputs.get("length", 32))])
        return rid, outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": "ecr-token",
                "authorizationToken": "QVdTOmVjci10b2tlbg==",
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com",
                "id": ACCOUNT,
            }, []
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/ci",
                "userId": "AIDATEST",
                "id": ACCOUNT,
            }, []
        if args.token == "aws:ec2/getVpc:getVpc":
            return {"id": args.args.get("id"), "cidrBlock": "10.99.0.0/16"}, []
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}, []
        return {}, []

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def waits_for(self, urn: str) -> set[str]:
        """Every URN a resource waits for before it is created: its dependencies, its
        parent's (a child is registered only once its parent is), transitively."""
        seen: set[str] = set()
        todo = [urn]
        while todo:
            node = self.graph.get(todo.pop())
            if node is None:
                continue
            for dep in [*node.dependencies, *([node.parent] if node.parent else [])]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    def nodes(self, typ: str, name_part: str = "") -> list[Node]:
        return [n for n in self.graph.values() if n.typ == typ and name_part in n.name]

    def named(self, name: str) -> Registered:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name}, found {len(matches)}"
        return matches[0]


def stack_file_config(stack: str, **overrides: Any) -> dict[str, Any]:
    """A stack file's config plus the secrets it leaves unset, as `pulumi up` would see it."""
    return file_config(STACKS / f"Pulumi.{stack}.yaml", **overrides)


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def file_config(path: Path, **overrides: Any) -> dict[str, Any]:
    """Any stack file's config as `pulumi up` would hand it to the program: the secrets the
    file calls for are set, and Kubeflow renders our fixture instead of fetching a release."""
    document = yaml.safe_load(path.read_text())
    config: dict[str, Any] = dict(document["config"])
    # Secrets the file holds encrypted arrive decrypted; stand-ins of the right shape.
    stand_ins = {
        "kubeflow-eks:kubeflowAdminPassword": TEST_PASSWORD,
        "kubeflow-eks:onpremKubeconfig": json.dumps({"apiVersion": "v1", "kind": "Config"}),
    }
    for key, value in list(config.items()):
        if _is_secure(value):
            config[key] = stand_ins.get(key, TEST_PASSWORD)
        elif key == "kubeflow-eks:registryDockerConfigs" and isinstance(value, dict):
            config[key] = {p: TEST_DOCKER_CONFIG if _is_secure(v) else v for p, v in value.items()}
        elif key == "kubeflow-eks:ssoClientSecrets" and isinstance(value, dict):
            config[key] = {c: TEST_SSO_SECRET if _is_secure(v) else v for c, v in value.items()}
    config.setdefault("kubeflow-eks:kubeflowAdminPassword", TEST_PASSWORD)
    kubeflow = config.get("kubeflow-eks:kubeflow") or {}
    if isinstance(kubeflow, dict) and kubeflow.get("registryAccess") == "docker-config":
        profiles = [p["name"] for p in kubeflow.get("profiles") or [] if isinstance(p, dict)]
        config.setdefault(
            "kubeflow-eks:registryDockerConfigs", {p: TEST_DOCKER_CONFIG for p in profiles}
        )
    sso = kubeflow.get("sso") if isinstance(kubeflow, dict) else None
    if isinstance(sso, dict):
        ids = [c["id"] for c in sso.get("connectors") or [] if isinstance(c, dict) and "id" in c]
        config.setdefault("kubeflow-eks:ssoClientSecrets", {c: TEST_SSO_SECRET for c in ids})
    if isinstance(kubeflow, dict) and kubeflow.get("enabled", True):
        config["kubeflow-eks:kubeflow"] = {**kubeflow, "localPath": str(KUBEFLOW_FIXTURE)}
    config.update(overrides)
    return config


@dataclass
class StackRun:
    mocks: RecordingMocks
    outputs: dict[str, Any]


def run_program(
    config: Mapping[str, Any],
    program: Callable[[], dict[str, Any]] | None = None,
    *,
    stack: str = "test",
    mocks: RecordingMocks | None = None,
) -> StackRun:
    """Run ``program`` (default: the real ``__main__`` path) with ``config`` under mocks.

    ``config`` maps ``namespace:key`` to values; structured values are passed as JSON, as the
    Pulumi CLI passes them. Raises whatever the program raises.
    """
    from stack.load import SECRET_KEYS, load_stack_config
    from stack.program import build_stack

    encoded = {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in config.items()
    }
    secret_keys = [f"kubeflow-eks:{key}" for key in SECRET_KEYS if f"kubeflow-eks:{key}" in encoded]
    runtime_config.set_all_config(encoded, secret_keys)
    mocks = mocks if mocks is not None else RecordingMocks()
    pulumi.runtime.set_mocks(
        mocks, project="kubeflow-eks", stack=stack, preview=False, monitor=StableMonitor(mocks)
    )
    resolved: dict[str, Any] = {}

    def body() -> Any:
        outputs = program() if program is not None else build_stack(load_stack_config())
        return pulumi.Output.all(**outputs).apply(resolved.update) if outputs else None

    try:
        pulumi.runtime.test(body)()
    finally:
        runtime_config.set_all_config({}, [])
    return StackRun(mocks=mocks, outputs=resolved)
