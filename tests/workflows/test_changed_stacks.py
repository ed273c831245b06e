"""scripts/changed-stacks: which stacks a pull request previews."""

from __future__ import annotations

import json
import subprocess
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

import pytest

from tests.pulumi_mocks import ROOT

SCRIPT = ROOT / "scripts" / "changed-stacks"
CI_STACKS = ["dev", "prod"]


def _load() -> ModuleType:
    loader = SourceFileLoader("changed_stacks", str(SCRIPT))
    spec = spec_from_loader("changed_stacks", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


touched_stacks = _load().touched_stacks


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["stacks/Pulumi.prod.yaml"], ["prod"]),
        (["stacks/Pulumi.prod.yaml", "stacks/Pulumi.dev.yaml"], ["dev", "prod"]),
        (["stacks/Pulumi.onprem.yaml"], []),  # deployed from the lab, not from CI
        (["README.md", "tests/stack/test_stacks.py", "fnjob/README.md"], []),
        # prod builds its notebook image from images/notebook with fnjob installed.
        (["fnjob/fnjob/api.py"], ["dev", "prod"]),
        (["fnjob/pyproject.toml"], ["dev", "prod"]),
        (["images/notebook/Containerfile"], ["dev", "prod"]),
        (["bootstrap/ci_bootstrap/program.py", "benchmarks/bench_render.py"], []),
        (["components/cluster.py"], ["dev", "prod"]),
        (["__main__.py"], ["dev", "prod"]),
        (["policy/platform_policy/rules.py"], ["dev", "prod"]),
        (["requirements.txt"], ["dev", "prod"]),
        (["scripts/deploy"], ["dev", "prod"]),
        (["stacks/Pulumi.dev.yaml", "stack/model.py"], ["dev", "prod"]),
        ([".github/workflows/deploy.yml"], ["dev", "prod"]),
        (["something/new.txt"], ["dev", "prod"]),  # unclassified: preview to be safe
        ([], []),
    ],
)
def test_touched_stacks(paths: list[str], expected: list[str]) -> None:
    assert touched_stacks(paths, CI_STACKS) == expected


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_reads_the_change_from_git_and_prints_a_matrix(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "stacks").mkdir(parents=True)
    (repo / "stacks" / "Pulumi.prod.yaml").write_text("config: {}\n")
    (repo / "README.md").write_text("# x\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-qb", "change")
    (repo / "stacks" / "Pulumi.prod.yaml").write_text("config: {a: 1}\n")
    (repo / "README.md").write_text("# y\n")
    git(repo, "commit", "-qam", "change prod")
    # main moves on meanwhile: its own changes are not the pull request's.
    git(repo, "checkout", "-q", "main")
    (repo / "app.py").write_text("print()\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "unrelated")
    main = git(repo, "rev-parse", "HEAD")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPT), *args], cwd=repo, capture_output=True, text=True, check=False
        )

    result = run("--base", main, "--head", "change", "--stacks", "dev prod")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["prod"]
    assert json.loads(run("--base", base, "--head", main, "--stacks", "dev prod").stdout) == [
        "dev",
        "prod",
    ]
    bad = run("--base", "no-such-ref", "--stacks", "dev")
    assert bad.returncode == 2 and "git diff no-such-ref...HEAD failed" in bad.stderr
