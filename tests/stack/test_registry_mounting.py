"""ECR shares base layers across the profiles' repositories (blob mounting), under mocks."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from tests.pulumi_mocks import StackRun, file_config, run_program

CASE = "notebook-image-built"
FILE = Path(__file__).parent / "files" / "good" / f"Pulumi.{CASE}.yaml"


@cache
def _run() -> StackRun:
    return run_program(file_config(FILE), stack=CASE)


def test_blob_mounting_is_enabled_for_the_account_that_holds_the_profiles_repositories() -> None:
    mocks = _run().mocks
    [setting] = [r.inputs for r in mocks.of_type("aws:ecr/accountSetting:AccountSetting")]
    assert setting == {"name": "BLOB_MOUNTING", "value": "ENABLED"}
    # ECR mounts only between repositories with the same encryption: the notebook image's
    # (the jobs' base) and every profile's, and those created on push by the templates.
    repositories = mocks.of_type("aws:ecr/repository:Repository")
    templates = mocks.of_type("aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate")
    assert len(repositories) > 1 and templates
    encryptions = {
        str(r.inputs.get("encryptionConfigurations")) for r in [*repositories, *templates]
    }
    assert encryptions == {"[{'encryptionType': 'AES256'}]"}
