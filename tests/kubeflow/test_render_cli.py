"""The render command: the exact objects the stack applies, one YAML file per phase."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.kubeflow.component import DeployInputs, build_phases, placeholder_credentials
from components.kubeflow.manifests import RenderedManifests
from components.kubeflow.phases import Phase
from components.kubeflow.references import find_missing_references
from components.kubeflow.transform import find_default_credentials
from stack.render import main, render_to_directory
from tests.kubeflow.conftest import FIXTURE_SOURCE, REPO_ROOT, UpstreamRelease, make_args
from tests.kubeflow.invariants import PHASE_NAMES, closure_violations


def test_render_writes_phase_files_in_apply_order(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    args = make_args(registry_access="ecr")
    summary = render_to_directory(args, out, cache_dir=tmp_path / "cache")
    names = [p.name for p in summary.files]
    assert names == sorted(names)
    assert names[0] == "01-namespaces-crds.yaml"
    assert sorted(p.name for p in out.iterdir()) == names
    rendered = [o for path in summary.files for o in yaml.safe_load_all(path.read_text()) if o]
    # Exactly what the stack applies (with placeholder secrets), in the same order.
    expected = [
        o
        for phase in build_phases(
            _render(args.kubeflow.source, tmp_path), args, placeholder_credentials()
        )
        for o in phase.objects
    ]
    assert rendered == expected


def _render(source: str, tmp_path: Path) -> tuple[dict, ...]:
    from components.kubeflow.manifests import render_manifests

    result: RenderedManifests = render_manifests(source, cache_dir=tmp_path / "cache")
    return result.objects  # type: ignore[return-value]


def test_rendered_secrets_are_clear_placeholders(tmp_path: Path) -> None:
    # The render command gives the stack's profiles placeholder credentials, as here.
    deploy = DeployInputs(docker_configs={"team-vision": "set by the stack"})
    summary = render_to_directory(
        make_args(), tmp_path / "out", cache_dir=tmp_path / "cache", deploy=deploy
    )
    text = "\n".join(p.read_text() for p in summary.files)
    assert "# placeholders: `pulumi up` generates" in summary.files[0].read_text()
    secrets = [o for o in yaml.safe_load_all(text) if o and o["kind"] == "Secret"]
    decoded = {
        f"{s['metadata']['name']}/{k}": base64.b64decode(v).decode()
        for s in secrets
        for k, v in s.get("data", {}).items()
    }
    assert decoded["dex-oidc-client/OIDC_CLIENT_SECRET"].startswith("GENERATED-BY-STACK")
    assert "FROM-STACK-SECRET" in decoded["registry-credentials/.dockerconfigjson"]
    assert "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok" not in text


def test_rerender_removes_phase_files_that_no_longer_exist(tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_to_directory(make_args(), out, cache_dir=tmp_path / "cache")
    only_namespace = make_args(components=("../common/kubeflow-namespace/base",), profiles=())
    render_to_directory(only_namespace, out, cache_dir=tmp_path / "cache")
    assert [p.name for p in out.iterdir()] == ["01-namespaces-crds.yaml"]


def test_cli_reports_a_missing_stack_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--stack", "nope", "--out", str(tmp_path / "o"), "--stacks-dir", str(tmp_path)])
    assert code == 1
    assert "Pulumi.nope.yaml does not exist" in capsys.readouterr().err


STACKS = sorted((Path(__file__).resolve().parents[2] / "stacks").glob("Pulumi.*.yaml"))


@pytest.mark.parametrize("stack_file", STACKS, ids=lambda p: p.name)
def test_cli_renders_every_stack_file_against_a_local_source(
    stack_file: Path, tmp_path: Path
) -> None:
    stack = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    out = tmp_path / "out"
    code = main(
        [
            "--stack",
            stack,
            "--out",
            str(out),
            "--stacks-dir",
            str(stack_file.parent),
            "--kubeflow-source",
            str(FIXTURE_SOURCE),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    document = yaml.safe_load(stack_file.read_text())["config"]
    admin = document["kubeflow-eks:kubeflow"]["adminEmail"]
    objects = [o for p in sorted(out.iterdir()) for o in yaml.safe_load_all(p.read_text()) if o]
    dex = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "dex")
    assert yaml.safe_load(dex["data"]["config.yaml"])["staticPasswords"][0]["email"] == admin


# --- end to end on upstream's real release ---------------------------------------------------


def test_upstream_render_is_exactly_upstreams_plain_kustomize_output(
    upstream_rendered: RenderedManifests, upstream_example_objects: list[dict[str, object]]
) -> None:
    # All 675 objects, Trainer included, unchanged by how we decode kustomize's output.
    assert len(upstream_example_objects) == 675
    assert list(upstream_rendered.objects) == upstream_example_objects


def test_render_command_end_to_end_on_upstream(
    upstream: UpstreamRelease, upstream_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "manifests"
    command = [sys.executable, "-m", "stack.render", "--stack", "dev", "--out", str(out)]
    options = ["--kubeflow-source", str(upstream.source), "--cache-dir", str(upstream_cache)]
    result = subprocess.run(
        [*command, *options], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"{name}.yaml" for name in PHASE_NAMES]
    for path, line in zip(files, result.stderr.splitlines(), strict=False):
        assert str(path) in line  # each file reported with its object count
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    phases = tuple(
        Phase(f.stem, "", tuple(o for o in yaml.load_all(f.read_text(), Loader=loader) if o))
        for f in files
    )
    objects = [o for phase in phases for o in phase.objects]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # Trainer is there, with its CRDs, controller, runtimes and webhook.
    assert ("CustomResourceDefinition", "trainjobs.trainer.kubeflow.org") in kinds
    assert ("Deployment", "kubeflow-trainer-controller-manager") in kinds
    assert ("ValidatingWebhookConfiguration", "validator.trainer.kubeflow.org") in kinds
    assert any(kind == "ClusterTrainingRuntime" for kind, _ in kinds)
    # Upstream's 675 objects, the dev stack's profile, and for it and upstream's example
    # profile (now the admin's) the namespace, its isolation NetworkPolicy, fnjob's GPU
    # groups and its PodDefault.
    assert len(objects) == 675 + 1 + 2 * 4
    assert ("Profile", "team-ml") in kinds
    assert ("PodDefault", "fnjob") in kinds
    # What the stack would apply keeps every invariant.
    assert find_default_credentials(objects) == []
    assert find_missing_references(objects) == ()
    assert closure_violations(phases) == []
    dex = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "dex")
    [admin] = yaml.safe_load(dex["data"]["config.yaml"])["staticPasswords"]
    assert admin["email"] == "admin@kubeflow.dev.example.org"
