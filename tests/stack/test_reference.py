"""The generated reference (JSON Schema, the docs' key tables) matches the model and the stack
files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from stack import reference
from tests.pulumi_mocks import ROOT

FILES = Path(__file__).parent / "files"
STACK_FILES = sorted((ROOT / "stacks").glob("Pulumi.*.yaml"))
GOOD = sorted((FILES / "good").glob("Pulumi.*.yaml"))


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(reference.SCHEMA_FILE.read_text()))


def test_schema_and_key_tables_are_current() -> None:
    assert reference.SCHEMA_FILE.read_text() == reference.render_schema(), (
        "run: python -m stack.reference --write"
    )
    full = reference.REFERENCE.read_text()
    assert reference.reference_with_table(full) == full, "run: python -m stack.reference --write"
    readme = reference.README.read_text()
    assert reference.readme_with_summary(readme) == readme, "run: python -m stack.reference --write"


def test_the_full_table_has_every_key_and_the_readmes_only_rows_of_it() -> None:
    full = reference.render_table().splitlines()
    keys = [line.split("`")[1] for line in full[2:]]
    paths = reference.key_paths()
    leaves = {k for k in paths if not any(p.startswith((f"{k}.", f"{k}[]")) for p in paths)}
    # Every row names a key of the model, and every model key is a row or under one.
    assert set(keys) <= set(reference.key_paths())
    assert all(
        any(k == row or k.startswith((f"{row}.", f"{row}[]")) for row in keys) for k in leaves
    )
    assert set(reference.render_summary().splitlines()[2:]) <= set(full)


@pytest.mark.parametrize("path", STACK_FILES + GOOD, ids=lambda p: p.name)
def test_stack_files_point_editors_at_the_schema_and_pass_it(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    schema_path = (path.parent / first.split("$schema=", 1)[1]).resolve()
    assert schema_path == reference.SCHEMA_FILE
    errors = list(_validator().iter_errors(yaml.safe_load(path.read_text())))
    assert errors == [], [e.message for e in errors]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"kubeflow-eks:nodeGroups": []}, "nodeGroups"),
        ({"kubeflow-eks:vpc": {"cidr": "10.0.0.0/16", "natGateway": "single"}}, "natGateway"),
        ({"kubeflow-eks:kubeflow": {"protocol": "ftp"}}, "ftp"),
        ({"kubeflow-eks:endpoint": {}}, "endpoint"),
        ({"kubeflow-eks:kubeflowAdminPassword": "plain text"}, "kubeflowAdminPassword"),
    ],
)
def test_schema_catches_what_an_editor_should_flag(change: dict[str, object], where: str) -> None:
    stack = "onprem" if where == "endpoint" else "dev"  # an EKS-only key in an onprem stack
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    document["config"].update(change)
    messages = [e.message for e in _validator().iter_errors(document)] + [
        str(list(e.path)) for e in _validator().iter_errors(document)
    ]
    assert any(where in m for m in messages), messages
