"""The bootstrap stack's configuration: one frozen model, checked before anything is created.

Keys live under `kubeflow-eks-bootstrap:` (plus `aws:region`). Every problem is reported at
once, each naming the key, what it got and what to write instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

PROJECT = "kubeflow-eks-bootstrap"

_HINTS = {
    "region": "set aws:region, e.g. eu-central-1",
    "githubRepository": "write OWNER/REPO as on GitHub, e.g. example-org/kubeflow-eks",
    "deployBranch": "a branch name without wildcards, e.g. main",
    "deployEnvironments": "a list of GitHub environment names, e.g. [prod]",
    "kmsAlias": "alias/<name> (letters, digits, '/', '_', '-'), not under alias/aws/",
    "stateBucketPrefix": "lowercase letters, digits, '.' and '-', at most 37 characters",
    "existingOidcProviderArn": (
        "the ARN of this account's token.actions.githubusercontent.com provider, "
        "e.g. arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    ),
    "tags": "a map of strings whose keys do not start with aws:",
}


class BootstrapConfig(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        regex_engine="python-re",  # the branch pattern needs look-ahead
    )

    region: str = Field(pattern=r"^[a-z]{2}(?:-[a-z]+)+-\d$")
    github_repository: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
    deploy_branch: str = Field(default="main", pattern=r"^(?!.*\.\.)(?!refs/)[A-Za-z0-9._/-]+$")
    deploy_environments: tuple[str, ...] = ("prod",)
    kms_alias: str = Field(
        default="alias/kubeflow-eks-pulumi-secrets", pattern=r"^alias/(?!aws/)[A-Za-z0-9/_-]+$"
    )
    state_bucket_prefix: str = Field(
        default="kubeflow-eks-state-", pattern=r"^[a-z0-9][a-z0-9.-]{0,36}$"
    )
    existing_oidc_provider_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com$",
    )
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("deploy_environments")
    @classmethod
    def _environment_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not name or len(name) > 255 or any(c in name for c in "*?:\"'<>|,;`\\"):
                raise ValueError(f"{name!r} is not a GitHub environment name")
        if len(set(names)) != len(names):
            raise ValueError("names an environment twice")
        return names

    @field_validator("tags")
    @classmethod
    def _tag_keys(cls, tags: dict[str, str]) -> dict[str, str]:
        reserved = [key for key in tags if key.lower().startswith("aws:")]
        if reserved:
            raise ValueError(f"tag keys {reserved} use the reserved aws: prefix")
        return tags


class BootstrapConfigError(ValueError):
    """The bootstrap stack's configuration is invalid; ``problems`` lists each, key first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid bootstrap configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


def _key(location: tuple[int | str, ...]) -> str:
    head, *rest = location
    key = "aws:region" if head == "region" else f"{PROJECT}:{head}"
    return key + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest)


def _describe(error: Any) -> str:
    location = tuple(error["loc"])
    field = str(location[0]) if location else ""
    if error["type"] == "missing":
        return f"{_key(location)}: required; {_HINTS.get(field, 'set it')}"
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(k for k in _HINTS if k != "region"))
        return f"{_key(location)}: unknown key; known keys: {known}"
    detail = error["msg"].removeprefix("Value error, ")
    hint = _HINTS.get(field, "")
    return f"{_key(location)}: got {error['input']!r}; {detail}" + (f" ({hint})" if hint else "")


def parse_bootstrap_config(raw: Mapping[str, Any], *, region: str | None) -> BootstrapConfig:
    """Validate the bootstrap keys (without namespace) and the region; raise every problem."""
    values = dict(raw)
    if region is not None:
        values["region"] = region
    try:
        return BootstrapConfig.model_validate(values)
    except ValidationError as error:
        raise BootstrapConfigError([_describe(e) for e in error.errors()]) from None


def _decode(value: Any) -> Any:
    """Pulumi passes structured config as JSON text."""
    if isinstance(value, str) and (value.startswith(("[", "{")) or value in ("true", "false")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def load_bootstrap_config() -> BootstrapConfig:
    """Read and validate the running bootstrap program's configuration."""
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    region: str | None = None
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if namespace == "aws" and key == "region":
            region = str(value)
        elif namespace == PROJECT:
            raw[key] = _decode(value)
    return parse_bootstrap_config(raw, region=region)
