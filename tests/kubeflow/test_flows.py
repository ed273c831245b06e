"""The platform's connections against the NetworkPolicies each stack applies.

The stacks' real renders of upstream 26.03 (what `python -m stack.render` writes), evaluated
with Kubernetes' semantics (components.kubeflow.reachability): every flow the platform needs
(tests/kubeflow/flows.yaml) is admitted, every flow that must stay closed is refused. The
VPC CNI enforces these policies on EKS (enableNetworkPolicy), as Calico or Cilium do on
premises.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.kubeflow.objects import name_of, namespace_of, service_selects
from components.kubeflow.profiles import FNJOB_LABEL
from components.kubeflow.reachability import (
    Address,
    Endpoint,
    NetworkPolicies,
    Pod,
    cluster_namespaces,
    pod_of,
    workload_pods,
)
from fnjob.run.manifest import JobOptions, build_job_manifest
from model import EksStack, StackConfig
from stack.load import load_stack_file
from stack.render import stack_plan
from tests.kubeflow.conftest import REPO_ROOT, UpstreamRelease

FLOWS = yaml.safe_load((Path(__file__).with_name("flows.yaml")).read_text())
STACKS = {
    "dev": REPO_ROOT / "stacks" / "Pulumi.dev.yaml",
    "prod": REPO_ROOT / "stacks" / "Pulumi.prod.yaml",
    "onprem": REPO_ROOT / "stacks" / "Pulumi.onprem.yaml",
    # On premises by name: a NodePort for two lab ranges.
    "onprem-node-port": REPO_ROOT
    / "tests/stack/files/good/Pulumi.onprem-node-port-for-the-lab-network.yaml",
}
OUTSIDE = "192.0.2.7"
API_SERVER = "172.20.0.1"
REGISTRY = "203.0.113.50"
KUBEFLOW_GATEWAY = "kubeflow/kubeflow-gateway"


@dataclass(frozen=True)
class StackNetwork:
    """One stack's render, as NetworkPolicies and the pods and addresses of its flows."""

    name: str
    config: StackConfig
    objects: Sequence[Mapping[str, Any]]
    policies: NetworkPolicies
    pods: Mapping[tuple[str, str], Pod]
    profiles: Sequence[str]

    @property
    def eks(self) -> bool:
        return isinstance(self.config, EksStack)

    @property
    def by_name(self) -> bool:
        return self.config.kubeflow.ingress == "load-balancer"

    def applies(self, flow: Mapping[str, Any]) -> bool:
        when = flow.get("when")
        mode = "eks" if self.eks else "onprem"
        if when is not None and (not self.by_name or when != f"load-balancer-{mode}"):
            return False
        allowed = self.config.kubeflow.load_balancer.allowed_cidrs
        return not flow.get("restricted") or "0.0.0.0/0" not in allowed

    def pod_address(self, index: int) -> str | None:
        """On EKS pods have VPC addresses (the VPC CNI), which ipBlocks of the VPC match."""
        if not isinstance(self.config, EksStack):
            return None
        return str(ipaddress.ip_network(self.config.vpc.cidr)[4096 + index])

    def profile(self, which: int | str) -> str:
        return self.profiles[-1 if which == "last" else int(which)]

    def address(self, what: str) -> Address:
        if what == "vpc":
            assert isinstance(self.config, EksStack)
            return Address(str(ipaddress.ip_network(self.config.vpc.cidr)[10]), "VPC address")
        if what == "client":
            first = ipaddress.ip_network(self.config.kubeflow.load_balancer.allowed_cidrs[0])
            return Address(str(first[min(23, first.num_addresses - 1)]), "client")
        if what == "outside":
            return Address(OUTSIDE, "address outside the VPC and allowedCidrs")
        return {
            "api-server": Address(API_SERVER, "Kubernetes API"),
            "registry": Address(REGISTRY, "registry"),
        }[what]

    def endpoints(self, spec: Mapping[str, Any]) -> Iterator[tuple[Endpoint, int | None]]:
        """The endpoints a flow's end names, each with the port it implies (web apps)."""
        if "workload" in spec:
            namespace, name = spec["workload"].split("/")
            yield self.pods[(namespace, name)], None
        elif "web-apps" in spec:
            yield from self.web_apps(spec["web-apps"].get("except") or ())
        elif "notebook" in spec:
            profile = self.profile(spec["notebook"])
            yield (
                Pod(
                    name="notebook",
                    namespace=profile,
                    # As the notebook controller labels its pods (and the form's fnjob box).
                    labels={
                        "app": "notebook",
                        "notebook-name": "notebook",
                        "statefulset": "notebook",
                        FNJOB_LABEL: "true",
                    },
                    named_ports={("notebook-port", "TCP"): 8888},
                    address=self.pod_address(1),
                ),
                None,
            )
        elif "profile-pod" in spec:
            profile = self.profile(spec["profile-pod"])
            labels = {"workflows.argoproj.io/workflow": "training-run"}
            yield Pod("step", profile, labels, address=self.pod_address(2)), None
        elif "training-pod" in spec:
            yield from self.training_pods(self.profile(spec["training-pod"]))
        elif "fnjob" in spec:
            job = build_job_manifest(
                image="registry.example/job@sha256:" + "0" * 64,
                function_name="train",
                run_id="run-1",
                namespace=self.profile(spec["fnjob"]),
                options=JobOptions(),
            )
            yield dataclasses.replace(pod_of(job, self.pod_address(3)), name="fnjob-train"), None
        else:
            yield self.address(spec["address"]), None

    def training_pods(self, profile: str) -> Iterator[tuple[Endpoint, int | None]]:
        """A pod of every replicated job of the stack's default training runtime, as JobSet
        runs a TrainJob on it in the profile (the runtime's pod labels, plus JobSet's)."""
        runtime = self.config.kubeflow.training.default_runtime
        [found] = [
            o
            for o in self.objects
            if o.get("kind") == "ClusterTrainingRuntime" and name_of(o) == runtime
        ]
        for index, job in enumerate(found["spec"]["template"]["spec"]["replicatedJobs"]):
            template = job["template"]["spec"]["template"]
            labels = {
                **((template.get("metadata") or {}).get("labels") or {}),
                "jobset.sigs.k8s.io/jobset-name": "train",
                "jobset.sigs.k8s.io/replicatedjob-name": job["name"],
            }
            address = self.pod_address(5 + index)
            yield Pod(f"train-{job['name']}-0-0", profile, labels, address=address), None

    def web_apps(self, excluded: Sequence[str]) -> Iterator[tuple[Endpoint, int | None]]:
        """Every destination of the VirtualServices on kubeflow-gateway: the pods behind the
        Service, on the pod port that Service port targets."""
        services = {
            (namespace_of(o), name_of(o)): o for o in self.objects if o.get("kind") == "Service"
        }
        found = 0
        for route in self.objects:
            if route.get("kind") != "VirtualService":
                continue
            gateways = [
                g if "/" in g else f"{namespace_of(route)}/{g}"
                for g in route["spec"].get("gateways") or []
            ]
            if (
                KUBEFLOW_GATEWAY not in gateways
                or f"{namespace_of(route)}/{name_of(route)}" in excluded
            ):
                continue
            for http in route["spec"].get("http") or []:
                for target in http.get("route") or []:
                    host = target["destination"]["host"].split(".")
                    service = services[(host[1], host[0])]
                    number = target["destination"]["port"]["number"]
                    [port] = [p for p in service["spec"]["ports"] if p["port"] == number]
                    pod_port = port.get("targetPort", number)
                    for pod in self.pods.values():
                        if pod.namespace == host[1] and service_selects(service, pod.labels):
                            if isinstance(pod_port, str):
                                yield pod, pod.named_ports[(pod_port, "TCP")]
                            else:
                                yield pod, int(pod_port)
                            found += 1
        assert found >= 10, "fewer web apps behind kubeflow-gateway than upstream has"


@pytest.fixture(scope="session")
def networks(upstream: UpstreamRelease, upstream_cache: Path) -> dict[str, StackNetwork]:
    out = {}
    for name, path in STACKS.items():
        _, plan = stack_plan(path, source=str(upstream.source), cache_dir=upstream_cache)
        objects = [o for phase in plan.phases for o in phase.objects]
        config = load_stack_file(path, require_secrets=False)
        configured = [p.name for p in config.kubeflow.profiles]
        others = [
            name_of(o)
            for o in objects
            if o.get("kind") == "Profile" and name_of(o) not in configured
        ]
        out[name] = StackNetwork(
            name=name,
            config=config,
            objects=objects,
            policies=NetworkPolicies(objects, cluster_namespaces(objects)),
            pods=workload_pods(objects),
            profiles=[*configured, *others],
        )
    return out


def _verdicts(network: StackNetwork, kind: str) -> Iterator[tuple[str, bool, str]]:
    for flow in FLOWS[kind]:
        if not network.applies(flow):
            continue
        for source, _ in network.endpoints(flow["from"]):
            for destination, implied in network.endpoints(flow["to"]):
                for port in flow.get("ports") or [implied]:
                    verdict = network.policies.connects(source, destination, port)
                    what = f"{flow['why']}: {source} -> {destination}:{port}"
                    yield what, verdict.admitted, verdict.reason


@pytest.mark.parametrize("stack", list(STACKS))
def test_every_flow_the_platform_needs_is_admitted(
    networks: dict[str, StackNetwork], stack: str
) -> None:
    verdicts = list(_verdicts(networks[stack], "needed"))
    refused = [f"{what}\n    {reason}" for what, admitted, reason in verdicts if not admitted]
    assert refused == []
    assert len(verdicts) >= 30


@pytest.mark.parametrize("stack", list(STACKS))
def test_every_flow_that_must_stay_closed_is_refused(
    networks: dict[str, StackNetwork], stack: str
) -> None:
    verdicts = list(_verdicts(networks[stack], "closed"))
    admitted = [f"{what}\n    {reason}" for what, allowed, reason in verdicts if allowed]
    assert admitted == []
    assert len(verdicts) >= 7


def test_the_flows_cover_both_load_balancer_paths(networks: dict[str, StackNetwork]) -> None:
    """The ALB flows run on prod, the NodePort ones (restricted) on the lab stack."""
    assert networks["prod"].by_name and networks["prod"].eks
    lab = networks["onprem-node-port"]
    assert lab.by_name and not lab.eks
    assert all(lab.applies(f) for f in FLOWS["closed"] if f.get("when") == "load-balancer-onprem")
    assert all(len(n.profiles) >= 2 for n in networks.values())
