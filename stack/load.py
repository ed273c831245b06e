"""Read a stack's configuration, from the running Pulumi program or from its stack file.

Both feed ``parse_stack_config``, which validates with the one model (``model``) and
raises ``StackConfigError`` listing every problem at once. Offline (from the file), secret
values stay opaque: a set secret counts as present.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from model import PROJECT, SECRET_PRESENT, EksStack, OnpremStack, StackBase, StackConfig
from stack.problems import (
    Problem,
    StackConfigError,
    accepted_spelling,
    key_path,
    problems_from,
    show,
)

SECRET_KEYS = StackBase.secret_keys
# Secrets set per profile: an object whose values are encrypted one by one.
PER_PROFILE_SECRETS = ("registryDockerConfigs", "ssoClientSecrets")
_ADAPTER: TypeAdapter[EksStack | OnpremStack] = TypeAdapter(StackConfig)


def parse_stack_config(
    raw: Mapping[str, Any],
    *,
    stack: str,
    region: str | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> EksStack | OnpremStack:
    """Validate project keys (without the ``kubeflow-eks:`` prefix), ``aws:region`` and the
    secrets' plain text (or ``SECRET_PRESENT`` when only their presence is known)."""
    data: dict[str, Any] = {**raw, "stack": stack}
    for key in ("stack",):
        if key in raw:
            raise StackConfigError([Problem(key, show(raw[key]), "unknown key")])
    if region is not None:
        data["aws:region"] = region
    for key, value in (secrets or {}).items():
        data[key] = value
    variant = str(data.get("mode", "eks"))
    try:
        # By alias only: a field's Python name (gpu_node_groups) is not a stack-file key.
        return _ADAPTER.validate_python(data, by_alias=True, by_name=False)
    except ValidationError as error:
        raise StackConfigError(problems_from(error, variant=variant)) from None


def _decode(value: Any) -> Any:
    """Pulumi hands structured values to the program as JSON text."""
    if isinstance(value, str) and (value[:1] in ("{", "[") or value in ("true", "false")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _split(values: Mapping[str, Any]) -> Iterator[tuple[str, str, Any]]:
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        yield namespace, key, value


def load_stack_config() -> EksStack | OnpremStack:
    """Read and validate the running Pulumi program's configuration."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    region: str | None = None
    for namespace, key, value in _split(values):
        if namespace == "aws" and key == "region":
            region = str(value)
        elif namespace == PROJECT and key in PER_PROFILE_SECRETS:
            secrets[key] = _decode(value)
        elif namespace == PROJECT and key in SECRET_KEYS:
            secrets[key] = str(value)
        elif namespace == PROJECT:
            raw[key] = _decode(value)
    return parse_stack_config(raw, stack=pulumi.get_stack(), region=region, secrets=secrets)


def stack_name_of(path: Path) -> str:
    match = re.fullmatch(r"Pulumi\.(.+)\.yaml", path.name)
    if match is None:
        raise StackConfigError(
            [Problem(str(path), show(path.name), "name stack files Pulumi.<stack>.yaml")]
        )
    return match.group(1)


def _duplicate_keys(node: yaml.Node, at: tuple[str | int, ...]) -> Iterator[Problem]:
    """Keys written twice in one object, at any depth: YAML readers keep the last silently."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                yield Problem(
                    key_path(_user_parts((*at, key))),
                    None,
                    f"written twice (lines {seen[key]} and {line}); YAML would keep only the "
                    "last: merge them into one",
                )
            else:
                seen[key] = line
            yield from _duplicate_keys(value_node, (*at, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*at, index))


def _user_parts(at: tuple[str | int, ...]) -> list[str | int]:
    """``config.kubeflow-eks:kubeflow.adminEmail`` as problems name it: ``kubeflow.adminEmail``."""
    parts = list(at[1:]) if at[:1] == ("config",) and len(at) > 1 else list(at)
    if parts and isinstance(parts[0], str):
        parts[0] = parts[0].removeprefix(f"{PROJECT}:")
    return parts


def _read_yaml(path: Path) -> Any:
    """The stack file's document; duplicate keys are refused, each named with both lines."""
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = list(_duplicate_keys(node, ()))
        if duplicates:
            raise StackConfigError(duplicates)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _stack_file_config(path: Path) -> Mapping[str, Any]:
    document = _read_yaml(path) or {}
    if not isinstance(document, Mapping):
        raise StackConfigError([Problem(str(path), None, "a stack file is a YAML object")])
    config = document.get("config") or {}
    if not isinstance(config, Mapping):
        raise StackConfigError([Problem("config", show(config), "expected an object of keys")])
    return config


def load_stack_file(path: str | Path, *, require_secrets: bool = True) -> EksStack | OnpremStack:
    """Validate a ``stacks/Pulumi.<stack>.yaml`` file offline (secret values stay opaque).

    With ``require_secrets=False``, secrets not set yet count as set (``unset_secrets`` lists
    them), so an example stack file checks clean before its secrets are chosen.
    """
    path = Path(path)
    stack = stack_name_of(path)
    config = _stack_file_config(path)
    raw: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    region: str | None = None
    problems: list[Problem] = []
    for namespace, key, value in _split(config):
        is_secure = isinstance(value, Mapping) and set(value) == {"secure"}
        if namespace == "aws" and key == "region":
            region = str(value)
        elif namespace == PROJECT and key in PER_PROFILE_SECRETS:
            secrets[key], found = _per_profile_secret(key, value)
            problems += found
        elif namespace == PROJECT and key in SECRET_KEYS:
            if not is_secure:
                problems.append(
                    Problem(
                        key, "(plain text)", f"make it a secret: pulumi config set --secret {key}"
                    )
                )
            secrets[key] = SECRET_PRESENT
        elif namespace == PROJECT:
            raw[key] = value
        elif namespace not in ("aws", "pulumi", "kubernetes"):
            problems.append(
                Problem(f"{namespace}:{key}", None, f"unknown namespace; write {_project_key(key)}")
            )
    if not require_secrets:
        for key in unset_secrets(path):
            name, _, profile = key.partition(".")
            if profile:
                secrets.setdefault(name, {})[profile] = SECRET_PRESENT
            else:
                secrets[key] = SECRET_PRESENT
    try:
        parsed = parse_stack_config(raw, stack=stack, region=region, secrets=secrets)
    except StackConfigError as error:
        raise StackConfigError([*problems, *error.problems]) from None
    if problems:
        raise StackConfigError(problems)
    return parsed


def _project_key(key: str) -> str:
    """The stack-file key for a project key written in another namespace or spelling."""
    spelled = accepted_spelling(key, EksStack) or accepted_spelling(key, OnpremStack) or key
    return spelled if ":" in spelled else f"{PROJECT}:{spelled}"


def _per_profile_secret(key: str, value: Any) -> tuple[dict[str, str], list[Problem]]:
    """A secret set per profile (``--path 'key.<profile>'``): each value encrypted on its own."""
    if isinstance(value, Mapping) and set(value) == {"secure"}:
        return {}, [
            Problem(
                key,
                None,
                f"set each profile's value on its own: pulumi config set --secret --path "
                f"'{key}.<profile>' ...",
            )
        ]
    if not isinstance(value, Mapping):
        return {}, [Problem(key, None, f"an object of profiles, set with --path '{key}.<profile>'")]
    present: dict[str, str] = {}
    problems = []
    for profile, item in value.items():
        if isinstance(item, Mapping) and set(item) == {"secure"}:
            present[str(profile)] = SECRET_PRESENT
        else:
            problems.append(
                Problem(
                    f"{key}.{profile}",
                    "(plain text)",
                    f"make it a secret: pulumi config set --secret --path '{key}.{profile}' ...",
                )
            )
    return present, problems


def unset_secrets(path: str | Path) -> tuple[str, ...]:
    """The secrets a stack file's settings call for that it does not hold yet."""
    config = _stack_file_config(Path(path))
    kubeflow = config.get(f"{PROJECT}:kubeflow") or {}
    if not isinstance(kubeflow, Mapping):
        kubeflow = {}
    needed = []
    if kubeflow.get("enabled", True):
        needed.append("kubeflowAdminPassword")
        if kubeflow.get("registryAccess") == "docker-config":
            held = config.get(f"{PROJECT}:registryDockerConfigs") or {}
            for profile in kubeflow.get("profiles") or []:
                name = profile.get("name") if isinstance(profile, Mapping) else None
                if name and not (isinstance(held, Mapping) and name in held):
                    needed.append(f"registryDockerConfigs.{name}")
        sso = kubeflow.get("sso") or {}
        held_sso = config.get(f"{PROJECT}:ssoClientSecrets") or {}
        for connector in (sso.get("connectors") or []) if isinstance(sso, Mapping) else []:
            cid = connector.get("id") if isinstance(connector, Mapping) else None
            if cid and not (isinstance(held_sso, Mapping) and cid in held_sso):
                needed.append(f"ssoClientSecrets.{cid}")
    onprem = config.get(f"{PROJECT}:onprem") or {}
    has_path = isinstance(onprem, Mapping) and onprem.get("kubeconfigPath")
    if config.get(f"{PROJECT}:mode") == "onprem" and not has_path:
        needed.append("onpremKubeconfig")
    return tuple(key for key in needed if "." in key or f"{PROJECT}:{key}" not in config)
