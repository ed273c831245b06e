"""Write the exact Kubernetes objects a stack would apply, one YAML file per apply phase.

    python -m stack.render --stack dev --out build/manifests [--kubeflow-source PATH]

Generated secrets (passwords, OIDC client secret, cookie secret, database and object-store
keys, the admin's bcrypt hash, the registry docker config) are shown as placeholders that
start with GENERATED-BY-STACK / FROM-STACK-SECRET: the real values exist only inside
`pulumi up`, in the stack's encrypted state.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from components.kubeflow.component import DeployInputs, KubeflowPlan, plan_kubeflow
from components.kubeflow.manifests import YAML_DUMPER, RenderError
from components.kubeflow.phases import Phase
from components.kubeflow.transform import KubeflowArgs, KubeflowConfigError, TransformError

_HEADER = """\
# {phase} - {description}
# Rendered by `python -m stack.render` from {source}.
# Applied by the stack as one step, after the previous file's objects are ready.
# Secret values starting GENERATED-BY-STACK / FROM-STACK-SECRET (base64 in Secret data) are
# placeholders: `pulumi up` generates the real ones and keeps them secret.
"""


@dataclasses.dataclass(frozen=True)
class RenderSummary:
    files: tuple[Path, ...]
    object_counts: tuple[tuple[str, int], ...]
    from_cache: bool


def render_phases(
    args: KubeflowArgs, deploy: DeployInputs | None = None, cache_dir: Path | None = None
) -> tuple[tuple[Phase, ...], bool]:
    """The stack's phases with placeholder secrets, and whether the render came from cache.

    Refuses (`ReferenceClosureError`) a component selection whose objects refer to objects
    it does not render, naming the entries to add, exactly as `pulumi up` would.
    """
    plan = plan_kubeflow(args, deploy, cache_dir=cache_dir)
    return plan.phases, plan.rendered.from_cache


def write_phases(phases: Sequence[Phase], out_dir: Path, source: str) -> tuple[Path, ...]:
    """One file per phase, in apply order; stale phase files from earlier runs are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("[0-9][0-9]-*.yaml"):
        stale.unlink()
    written = []
    for phase in phases:
        path = out_dir / f"{phase.name}.yaml"
        # libyaml's emitter: the pure-Python one takes ~7 s for the full example.
        body = yaml.dump_all(
            [dict(o) for o in phase.objects],
            Dumper=YAML_DUMPER,
            sort_keys=False,
            default_flow_style=False,
        )
        header = _HEADER.format(phase=phase.name, description=phase.description, source=source)
        path.write_text(header + "---\n" + body)
        written.append(path)
    return tuple(written)


def render_to_directory(
    args: KubeflowArgs,
    out_dir: Path,
    cache_dir: Path | None = None,
    deploy: DeployInputs | None = None,
) -> RenderSummary:
    phases, from_cache = render_phases(args, deploy, cache_dir)
    files = write_phases(phases, out_dir, args.kubeflow.source)
    return RenderSummary(files, tuple((p.name, len(p.objects)) for p in phases), from_cache)


def stack_plan(
    stack_file: Path, *, source: str | None = None, cache_dir: Path | None = None
) -> tuple[KubeflowArgs, KubeflowPlan]:
    """The plan `pulumi up` makes from this stack file (the program's own ``plan``), with
    ``source`` instead of the stack's kubeflow/manifests when given."""
    from stack.load import load_stack_file
    from stack.program.kubeflow import plan

    config = load_stack_file(stack_file, require_secrets=False)
    if not config.kubeflow.enabled:
        raise KubeflowConfigError(f"{stack_file} has Kubeflow disabled; nothing to render")
    return plan(config, source=source, cache_dir=cache_dir)


def render_stack(
    stack_file: Path, out_dir: Path, *, source: str | None = None, cache_dir: Path | None = None
) -> RenderSummary:
    """Write what the stack applies, phase by phase, exactly as `pulumi up` plans it."""
    args, kubeflow_plan = stack_plan(stack_file, source=source, cache_dir=cache_dir)
    phases = kubeflow_plan.phases
    files = write_phases(phases, out_dir, args.kubeflow.source)
    return RenderSummary(
        files, tuple((p.name, len(p.objects)) for p in phases), kubeflow_plan.rendered.from_cache
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack.render",
        description="Write the Kubernetes objects a stack applies, one YAML file per phase.",
    )
    parser.add_argument(
        "--stack", required=True, help="stack name (reads stacks/Pulumi.<stack>.yaml)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--kubeflow-source",
        help="local kubeflow/manifests checkout (or release tag) instead of the stack's",
    )
    parser.add_argument("--stacks-dir", type=Path, default=Path("stacks"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    options = parser.parse_args(argv)

    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    stack_file = options.stacks_dir / f"Pulumi.{options.stack}.yaml"
    try:
        if not stack_file.is_file():
            raise KubeflowConfigError(f"stack file {stack_file} does not exist")
        summary = render_stack(
            stack_file,
            options.out,
            source=options.kubeflow_source or None,
            cache_dir=options.cache_dir,
        )
    except (RenderError, TransformError, ValueError, OSError) as err:
        # ValueError covers every config error type (they all derive from it).
        console.print(f"[red]render failed:[/red] {err}")
        return 1
    for path, (name, count) in zip(summary.files, summary.object_counts, strict=True):
        console.print(f"{path}  [dim]{count} objects ({name})[/dim]")
    console.print(
        "[dim]kustomize output from cache[/dim]" if summary.from_cache else "[dim]rendered[/dim]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
