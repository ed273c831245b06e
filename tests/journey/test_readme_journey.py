"""The README's five-minute journey works on every example stack, as written.

Its Python snippets are read from the README and run, in order, in one namespace (as cells of
one notebook), with the environment and files each example stack's PodDefault ``fnjob`` gives
a notebook of each of its profiles: the env it sets, and the ConfigMaps it mounts (written to
a folder here, the env's paths pointing there). fnjob runs for real up to the network: the
build's and the cluster's I/O are replaced by recorders, so the test sees which registry and
base image each build got, and where each Job was placed.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fnjob.image.builders import AppendBuilder, BuiltImage
from fnjob.run.job import JobDeployer
from fnjob.run.manifest import JobOptions
from tests.pulumi_mocks import STACKS, reveal, run_program, stack_file_config

README = Path(__file__).resolve().parents[2] / "README.md"
JOURNEY = "## Five minutes: from a notebook to a GPU job's result"
EXAMPLE_STACKS = sorted(p.name.split(".")[1] for p in STACKS.glob("Pulumi.*.yaml"))
DIGEST = "sha256:" + "0" * 64


def journey_snippets() -> list[str]:
    """The ```python blocks of the README's journey section, in order."""
    text = README.read_text()
    start = text.index(f"\n{JOURNEY}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.DOTALL)


@dataclass
class Recorded:
    """What fnjob would have done over the network."""

    builds: list[tuple[str | None, str]]  # (base image, target repository)
    runs: list[tuple[str, JobOptions]]  # (image, the Job's options)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    record = Recorded([], [])

    def build(self: AppendBuilder, package: Any, target: str) -> BuiltImage:
        record.builds.append((self.base_image, target))
        return BuiltImage(f"{target}@{DIGEST}", f"{target}:fnjob", DIGEST, 0, None)

    def run(self: JobDeployer, image: str, call: bytes, **kwargs: Any) -> None:
        on_status = kwargs.get("on_status")
        if on_status is not None and self.options.placement is not None:
            on_status(self.options.placement.describe())
        record.runs.append((image, self.options))

    monkeypatch.setattr(AppendBuilder, "build", build)
    monkeypatch.setattr(JobDeployer, "run", run)
    yield record


def _stack_objects(stack: str) -> list[dict[str, Any]]:
    run = run_program(stack_file_config(stack), stack=stack)
    objects: list[dict[str, Any]] = []
    for group in run.mocks.of_type("kubernetes:yaml/v2:ConfigGroup"):
        objects += reveal(group.inputs["objs"])
    return objects


def _notebook_environment(
    objects: list[dict[str, Any]], namespace: str, root: Path
) -> dict[str, str]:
    """The env a notebook in ``namespace`` gets from the PodDefault ``fnjob``, with the
    ConfigMaps it mounts written under ``root`` (and the env's paths moved there)."""
    [pod_default] = [
        o
        for o in objects
        if o["kind"] == "PodDefault" and o["metadata"] == {**o["metadata"], "namespace": namespace}
    ]
    spec = pod_default["spec"]
    env = {e["name"]: e["value"] for e in spec["env"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in spec["volumeMounts"]:
        config_map = volumes[mount["name"]].get("configMap")
        if config_map is None:
            continue
        [data] = [
            o["data"]
            for o in objects
            if o["kind"] == "ConfigMap"
            and o["metadata"].get("namespace") == namespace
            and o["metadata"]["name"] == config_map["name"]
        ]
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True)
        for key, value in data.items():
            (folder / key).write_text(value)
        env = {k: v.replace(mount["mountPath"], str(folder)) for k, v in env.items()}
    return env


@pytest.mark.parametrize("stack", EXAMPLE_STACKS)
def test_the_readmes_journey_runs_in_every_profile_of_every_example_stack(
    stack: str, recorded: Recorded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    snippets = journey_snippets()
    assert len(snippets) >= 2, "the journey's steps 3 and 4"
    objects = _stack_objects(stack)
    profiles = [p["name"] for p in stack_file_config(stack)["kubeflow-eks:kubeflow"]["profiles"]]
    assert profiles, f"stacks/Pulumi.{stack}.yaml has no profile to walk the journey in"
    for profile in profiles:
        env = _notebook_environment(objects, profile, tmp_path / profile)
        for name in [n for n in env if n.startswith("FNJOB_")]:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        recorded.builds.clear()
        recorded.runs.clear()
        cell: dict[str, Any] = {"__name__": "__main__"}
        monkeypatch.setitem(sys.modules, "__main__", type(sys)("__main__"))
        has_data = (stack_file_config(stack)["kubeflow-eks:kubeflow"].get("data") or {}) != {}
        assert ("FNJOB_DATA_URL" in env) == has_data, (stack, profile)
        for snippet in snippets:
            if "FNJOB_DATA_URL" in snippet and not has_data:
                continue  # the data step: the README says what to do without a data location
            exec(compile(snippet, f"README.md ({JOURNEY[3:]})", "exec"), cell)

        # Every job was built on the stack's base image and pushed under the profile's prefix.
        assert recorded.builds, f"{stack}/{profile}: the snippets built nothing"
        for base, target in recorded.builds:
            assert base == env["FNJOB_BASE_IMAGE"], (stack, profile)
            assert target.startswith(env["FNJOB_REGISTRY"] + "/"), (stack, profile, target)
        # The GPU job landed on one of the stack's GPU groups, placed as the file says.
        # Step 3's CPU job, step 4's GPU job and, with a data location, step 5's.
        assert len(recorded.runs) == 3 if has_data else 2, (stack, profile)
        gpu_runs = [options for _, options in recorded.runs if options.placement is not None]
        assert gpu_runs, f"{stack}/{profile}: no GPU job"
        groups = {
            g["name"]: g for g in json.loads(Path(env["FNJOB_GPU_GROUPS"]).read_text())["groups"]
        }
        for options in gpu_runs:
            placement = options.placement
            assert placement is not None and placement.group is not None
            group = groups[placement.group.name]
            assert dict(placement.node_selector) == group["nodeSelector"]
            assert [dict(t) for t in placement.tolerations] == group["tolerations"]


def test_the_readme_names_each_example_stacks_gpu_groups_as_the_stack_file_does() -> None:
    text = README.read_text()
    start = text.index(f"\n{JOURNEY}\n")
    section = text[start : text.index("\n## ", start + 1)]
    rows = {
        cells[0]: cells
        for line in section.splitlines()
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    for stack in EXAMPLE_STACKS:
        assert stack in rows, f"the journey's table of example stacks has no row for {stack}"
        groups = stack_file_config(stack).get("kubeflow-eks:gpuNodeGroups") or []
        assert re.findall(r"`([^`]+)`", rows[stack][2]) == [g["name"] for g in groups], stack
        has_data = (stack_file_config(stack)["kubeflow-eks:kubeflow"].get("data") or {}) != {}
        assert rows[stack][4].startswith("none") != has_data, stack
