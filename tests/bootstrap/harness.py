"""Run the bootstrap program under Pulumi's mocks (shared by the bootstrap and workflow tests)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from ci_bootstrap.config import load_bootstrap_config
from ci_bootstrap.program import build_bootstrap
from tests.pulumi_mocks import RecordingMocks, Registered, StableMonitor

NS = "kubeflow-eks-bootstrap"
ACCOUNT = "123456789012"
GOOD: dict[str, Any] = {
    "aws:region": "eu-central-1",
    f"{NS}:githubRepository": "example-org/kubeflow-eks",
}


class BootstrapMocks(RecordingMocks):
    """Echo the outputs the bootstrap reads (ARNs, the bucket's generated name)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, outputs = super().new_resource(args)
        if args.typ == "aws:s3/bucket:Bucket":
            name = f"{args.inputs['bucketPrefix']}20261128abc"
            outputs.update(bucket=name, arn=f"arn:aws:s3:::{name}")
            rid = name
        elif args.typ == "aws:kms/key:Key":
            outputs.update(arn=f"arn:aws:kms:eu-central-1:{ACCOUNT}:key/k-1", keyId="k-1")
        elif args.typ == "aws:iam/policy:Policy":
            path, policy = args.inputs["path"], args.inputs["name"]
            outputs.update(arn=f"arn:aws:iam::{ACCOUNT}:policy{path}{policy}")
        elif args.typ == "aws:iam/role:Role":
            outputs.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{args.inputs['name']}")
        elif args.typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            host = args.inputs["url"].removeprefix("https://")
            outputs.update(arn=f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}")
        return rid, outputs


@dataclass
class BootstrapRun:
    mocks: BootstrapMocks
    outputs: dict[str, Any]

    def one(self, typ: str) -> Registered:
        [resource] = self.mocks.of_type(typ)
        return resource

    def role(self, suffix: str) -> Registered:
        return self.mocks.named(f"kubeflow-eks-ci-{suffix}")

    def policy(self, name: str) -> dict[str, Any]:
        return json.loads(self.mocks.named(name).inputs["policy"])


def run_bootstrap(config: Mapping[str, Any], mocks: BootstrapMocks | None = None) -> BootstrapRun:
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    runtime_config.set_all_config(encoded, [])
    mocks = mocks if mocks is not None else BootstrapMocks()
    pulumi.runtime.set_mocks(
        mocks, project=NS, stack="ci", preview=False, monitor=StableMonitor(mocks)
    )
    outputs: dict[str, Any] = {}

    def body() -> Any:
        return pulumi.Output.all(**build_bootstrap(load_bootstrap_config())).apply(outputs.update)

    try:
        pulumi.runtime.test(body)()
    finally:
        runtime_config.set_all_config({}, [])
    return BootstrapRun(mocks, outputs)
