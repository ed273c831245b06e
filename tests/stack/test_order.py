"""The order a live first `pulumi up` needs, read from what each resource waits for.

Mocks create everything at once, so ordering bugs never fail here by themselves. The table
tests/stack/preconditions.yaml says what each kind of resource must wait for on the live
system (and why); the check reads every registered resource's transitive dependencies
(direct, through its inputs and through its parents) and reports each missing wait.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from tests.pulumi_mocks import STACKS, RecordingMocks, file_config, run_program, stack_file_config
from tests.stack.ordering import Rule, Selector, check_order, load_rules

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
EXAMPLE_STACKS = sorted(STACKS.glob("Pulumi.*.yaml"))
GOOD_FILES = sorted((Path(__file__).parent / "files" / "good").glob("Pulumi.*.yaml"))


def _stack(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


@cache
def _mocks(path: Path) -> RecordingMocks:
    return run_program(file_config(path), stack=_stack(path)).mocks


@pytest.mark.parametrize("path", EXAMPLE_STACKS + GOOD_FILES, ids=lambda p: p.name)
def test_every_resource_waits_for_what_the_live_system_needs_first(path: Path) -> None:
    report = check_order(_mocks(path))
    assert report.missing == (), f"{len(report.missing)} missing waits:\n" + "\n".join(
        map(str, report.missing)
    )


def test_every_precondition_in_the_table_is_checked_somewhere() -> None:
    """A rule whose selectors pick nothing would pass vacuously: across the example stacks
    and good files, each precondition of each rule meets at least one resource."""
    checked: set[tuple[str, str]] = set()
    for path in EXAMPLE_STACKS + GOOD_FILES:
        checked |= check_order(_mocks(path)).exercised
    rules = load_rules()
    wanted = {(rule.name, str(selector)) for rule in rules for selector in rule.waits_for}
    assert wanted - checked == set()
    assert {r.name for r in rules} >= {
        "pod-identity-association",
        "addon-with-pods",
        "kubernetes-object",
        "https-listener",
        "dns-alias",
        "target-group-binding",
        "node-group",
    }


def test_the_check_finds_a_resource_that_does_not_wait() -> None:
    """The check itself: a rule the program does not follow is reported, naming the
    resource and what it should wait for."""
    [prod] = [p for p in EXAMPLE_STACKS if _stack(p) == "prod"]
    backwards = Rule(
        name="backwards",
        why="a cluster cannot wait for its own node groups",
        resource=Selector(type="eks:index:Cluster"),
        waits_for=(Selector(type=NODE_GROUP, name="-system-"),),
    )
    [missing] = check_order(_mocks(prod), [backwards]).missing
    assert missing.rule == "backwards"
    assert missing.resource == "eks:index:Cluster ml-platform-prod-eks"
    assert missing.waits_for.startswith("ml-platform-prod-system")


def test_pulumi_eks_does_not_create_coredns_alongside_the_control_plane() -> None:
    """CoreDNS comes as our add-on, after the system nodes (the table's addon-with-pods)."""
    clusters = [c for path in EXAMPLE_STACKS for c in _mocks(path).of_type("eks:index:Cluster")]
    assert clusters
    for cluster in clusters:
        assert cluster.inputs["corednsAddonOptions"]["enabled"] is False


def test_names_derived_from_the_longest_allowed_names_fit_aws_limits() -> None:
    """The model caps clusterName at 32 and GPU group names at 28 characters so that every
    name derived from them fits: IAM role names (64, Pulumi appends 8), managed node group
    name prefixes (37, Pulumi appends 26)."""
    config = stack_file_config("prod")
    config["kubeflow-eks:clusterName"] = "c" * 32
    groups = config["kubeflow-eks:gpuNodeGroups"]
    groups[0]["name"] = "g" * 28
    kubeflow = config["kubeflow-eks:kubeflow"]
    kubeflow["profiles"] = [*kubeflow["profiles"], {"name": "p" * 63, "owner": "a@example.org"}]
    mocks = run_program(config, stack="prod").mocks
    roles = mocks.of_type("aws:iam/role:Role")
    assert roles
    for role in roles:
        if "namePrefix" in role.inputs:  # IAM appends 26 characters to a prefix
            assert len(role.inputs["namePrefix"]) <= 38, role.inputs["namePrefix"]
        else:  # Pulumi appends 8 to the resource's name
            assert len(role.inputs.get("name", role.name)) + 8 <= 64, role.name
    for group in mocks.of_type(NODE_GROUP):
        assert len(group.inputs["nodeGroupNamePrefix"]) <= 37
    [cluster] = mocks.of_type("eks:index:Cluster")
    assert len(cluster.inputs["name"]) <= 100
