"""`python -m stack.render` writes exactly what `pulumi up` applies.

For every example stack and good stack file, the render command's files are compared with
the objects the program hands its Kubeflow ConfigGroups under the mocks: same objects, same
order, same values, except where the render shows a placeholder for a value that exists only
inside `pulumi up` (generated secrets, the built notebook image, ECR prefixes).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.kubeflow.component import PLACEHOLDER_DOCKER_CONFIG
from components.kubeflow.transform import CONFIG_DIGEST_ANNOTATION
from stack.render import main
from tests.pulumi_mocks import KUBEFLOW_FIXTURE, STACKS, file_config, reveal, run_program

EXAMPLE_STACKS = sorted(STACKS.glob("Pulumi.*.yaml"))
GOOD_FILES = [
    path
    for path in sorted((Path(__file__).parent / "files" / "good").glob("Pulumi.*.yaml"))
    if (yaml.safe_load(path.read_text())["config"].get("kubeflow-eks:kubeflow") or {}).get(
        "enabled", True
    )
]
# What the render shows instead of a value only `pulumi up` knows.
_PLACEHOLDER = re.compile(
    "|".join(
        [
            re.escape(PLACEHOLDER_DOCKER_CONFIG),
            r"\$2b\$12\$GENERATED-BY-STACK[\w.-]*",
            r"GENERATED-BY-STACK[\w.-]*",
            r"FROM-STACK[\w./@:-]*",
        ]
    )
)


def _stack(path: Path) -> str:
    return path.name.removeprefix("Pulumi.").removesuffix(".yaml")


def _same_string(rendered: str, deployed: str) -> bool:
    parts = _PLACEHOLDER.split(rendered)
    if len(parts) == 1:
        return rendered == deployed
    pattern = ".+?".join(re.escape(p) for p in parts)
    return re.fullmatch(pattern, deployed, flags=re.DOTALL) is not None


def differences(rendered: Any, deployed: Any, path: str = "") -> list[str]:
    """Where a deployed value is not the rendered one (a placeholder matches any text)."""
    deployed = reveal(deployed)
    if isinstance(rendered, Mapping) and isinstance(deployed, Mapping):
        found = []
        for key in sorted(set(rendered) | set(deployed), key=str):
            where = f"{path}.{key}"
            if key not in rendered or key not in deployed:
                side = "render" if key in rendered else "deploy"
                found.append(f"{where}: only in the {side}")
            elif key == CONFIG_DIGEST_ANNOTATION:
                continue  # a digest over the data, placeholders included
            else:
                found += differences(rendered[key], deployed[key], where)
        return found
    if isinstance(rendered, list) and isinstance(deployed, list):
        if len(rendered) != len(deployed):
            return [f"{path}: {len(rendered)} items rendered, {len(deployed)} deployed"]
        return [
            d
            for i, (r, v) in enumerate(zip(rendered, deployed, strict=True))
            for d in differences(r, v, f"{path}[{i}]")
        ]
    if isinstance(rendered, str) and isinstance(deployed, str):
        return [] if _same_string(rendered, deployed) else [f"{path}: {rendered!r} != {deployed!r}"]
    return [] if rendered == deployed else [f"{path}: {rendered!r} != {deployed!r}"]


def _decoded(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Secret with its data in clear, so placeholders inside it compare as text."""
    if obj.get("kind") != "Secret" or not obj.get("data"):
        return obj
    data = {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
    return {**obj, "data": data}


def _key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{obj.get('kind')} {metadata.get('namespace', '')}/{metadata.get('name')}"


def _rendered(path: Path, tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Phase name -> its objects, from the render command's files."""
    out = tmp_path / "render"
    options = ["--stacks-dir", str(path.parent), "--kubeflow-source", str(KUBEFLOW_FIXTURE)]
    assert main(["--stack", _stack(path), "--out", str(out), *options]) == 0
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return {
        f.stem: [o for o in yaml.load_all(f.read_text(), Loader=loader) if o]
        for f in sorted(out.glob("*.yaml"))
    }


def _deployed(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Phase name -> its objects, as the program hands them to its ConfigGroups: a phase's
    Secrets go to a group of their own, here after the rest."""
    stack = _stack(path)
    mocks = run_program(file_config(path), stack=stack).mocks
    phases: dict[str, dict[bool, list[dict[str, Any]]]] = {}
    for group in mocks.of_type("kubernetes:yaml/v2:ConfigGroup"):
        match = re.fullmatch(r".*-kubeflow-(\d\d-.*?)(-secrets)?", group.name)
        if match:
            objects = [reveal(o) for o in reveal(group.inputs["objs"])]
            phases.setdefault(match[1], {})[bool(match[2])] = objects
    return {phase: parts.get(False, []) + parts.get(True, []) for phase, parts in phases.items()}


@pytest.mark.parametrize("path", EXAMPLE_STACKS + GOOD_FILES, ids=lambda p: p.name)
def test_the_render_is_what_pulumi_up_applies(path: Path, tmp_path: Path) -> None:
    rendered = _rendered(path, tmp_path)
    deployed = _deployed(path)
    assert sorted(rendered) == sorted(deployed)
    found: list[str] = []
    for phase, objects in rendered.items():
        # The deploy splits each phase into its Secrets and the rest; so does this.
        in_order = [o for o in objects if o["kind"] != "Secret"] + [
            o for o in objects if o["kind"] == "Secret"
        ]
        assert [_key(o) for o in in_order] == [_key(o) for o in deployed[phase]], phase
        for obj, applied in zip(in_order, deployed[phase], strict=True):
            found += differences(_decoded(obj), _decoded(applied), f"{phase} {_key(obj)}")
    assert found == []


def _fnjob_env(objects: list[dict[str, Any]], profile: str) -> dict[str, str]:
    [pod_default] = [
        o
        for o in objects
        if o["kind"] == "PodDefault"
        and o["metadata"]["name"] == "fnjob"
        and o["metadata"]["namespace"] == profile
    ]
    return {e["name"]: e.get("value", "") for e in pod_default["spec"].get("env", [])}


def test_upstreams_example_profile_gets_its_registry_in_render_and_deploy(
    tmp_path: Path,
) -> None:
    """On prod, `pulumi up` creates an ECR prefix and push identity for upstream's example
    profile: its notebooks get FNJOB_REGISTRY, and the render says so too."""
    [prod] = [p for p in EXAMPLE_STACKS if _stack(p) == "prod"]
    rendered = [o for objects in _rendered(prod, tmp_path).values() for o in objects]
    deployed = [o for objects in _deployed(prod).values() for o in objects]
    profile = "kubeflow-user-example-com"
    assert _fnjob_env(rendered, profile)["FNJOB_REGISTRY"].startswith("FROM-STACK")
    registry = _fnjob_env(deployed, profile)["FNJOB_REGISTRY"]
    assert registry.endswith(f".amazonaws.com/ml-platform-prod/{profile}")
