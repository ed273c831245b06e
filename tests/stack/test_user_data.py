"""A stack edit never takes users' data with it: a removed profile's registry outlives it."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws
import pytest

from tests.pulumi_mocks import run_program, stack_file_config


@pytest.fixture
def repository_options(monkeypatch: pytest.MonkeyPatch) -> dict[str, pulumi.ResourceOptions]:
    """Each ECR repository's resource options, by resource name."""
    seen: dict[str, pulumi.ResourceOptions] = {}
    original = aws.ecr.Repository

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, resource_name: str, *args: Any, **kwargs: Any) -> None:
            seen[resource_name] = kwargs["opts"]
            super().__init__(resource_name, *args, **kwargs)

    monkeypatch.setattr(aws.ecr, "Repository", Recording)
    return seen


def test_profile_registries_are_retained_unless_the_stack_allows_their_deletion(
    repository_options: dict[str, pulumi.ResourceOptions],
) -> None:
    config = stack_file_config("prod")
    kubeflow = dict(config["kubeflow-eks:kubeflow"])
    kubeflow["allowDeletion"] = ["Profile/production-models"]
    config["kubeflow-eks:kubeflow"] = kubeflow
    run_program(config, stack="prod")
    retained = {
        name.partition("-registries-")[2]: bool(opts.retain_on_delete)
        for name, opts in repository_options.items()
        if "-registries-" in name
    }
    assert retained == {
        "research": True,
        "production-models": False,
        "kubeflow-user-example-com": True,
    }
    # The notebook image is rebuilt from its recipe: the stack's destroy takes it along.
    assert not repository_options["ml-platform-prod-notebook-repo"].retain_on_delete
