"""A stack with single sign-on: its connectors' client secrets stay Pulumi secrets."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tests.pulumi_mocks import TEST_SSO_SECRET, file_config, is_secret, run_program

# In Secret data it is base64.
FORMS = (TEST_SSO_SECRET, base64.b64encode(TEST_SSO_SECRET.encode()).decode())
GOOD = (
    Path(__file__).parent / "files" / "good" / "Pulumi.sso-okta-and-github-with-contributors.yaml"
)


def _in_clear(value: Any) -> bool:
    """Whether the secret shows anywhere in ``value`` outside a Pulumi secret."""
    if is_secret(value):
        return False
    if isinstance(value, dict):
        return any(_in_clear(v) for v in value.values())
    if isinstance(value, list):
        return any(_in_clear(v) for v in value)
    return isinstance(value, str) and any(form in value for form in FORMS)


def test_client_secrets_reach_dex_only_as_secrets() -> None:
    run = run_program(file_config(GOOD), stack="sso-okta-and-github-with-contributors")
    carriers = []
    for resource in run.mocks.resources:
        assert not _in_clear(resource.inputs), f"{resource.typ} {resource.name} shows it"
        if any(form in json.dumps(resource.inputs) for form in FORMS):
            carriers.append(resource.name)
    # It is there, as a secret, in the phase that holds dex's Secret.
    assert carriers and all(name.endswith("-secrets") for name in carriers)
