"""Plan a Kubeflow change before it runs: what is added, removed, changed, replaced, and in
what order, and whether anything users made would be lost.

    python -m stack.upgrade_plan --stack prod --to ../manifests-26.03
    python -m stack.upgrade_plan --from build/deployed --to ../manifests-26.03   # no stack

Each side is a kubeflow/manifests tree (rendered with the pinned Kustomize and, with
`--stack`, the stack's own changes), a folder written by `python -m stack.render`, or a
rendered YAML file (`.yaml` or `.yaml.gz`). With `--stack` and no `--from`, the old side is
what the stack deploys now (its release or `kubeflow.localPath`).

Exit status: 0 the change is safe to deploy, 1 it is refused (each reason printed: a CRD,
PVC or namespace deleted without `kubeflow.allowDeletion` naming it, a replacement that
loses data, a CRD storage version dropped with objects still stored in it), 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from components.kubeflow.manifests import (
    EXAMPLE_KUSTOMIZATION,
    YAML_LOADER,
    RenderError,
    render_manifests,
)
from components.kubeflow.phases import Phase, split_phases
from components.kubeflow.transform import KubeflowConfigError, TransformError
from components.kubeflow.upgrade import UpgradePlan, plan_upgrade
from model import EksStack, OnpremStack


class SideError(ValueError):
    """A side of the comparison is neither a tree, a render folder nor a YAML file."""


@dataclasses.dataclass(frozen=True)
class Side:
    objects: tuple[Mapping[str, Any], ...]
    phases: tuple[Phase, ...]
    described: str


def _read_yaml(path: Path) -> list[Mapping[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as stream:
        return [d for d in yaml.load_all(stream, Loader=YAML_LOADER) if d]


def load_side(where: str, stack: EksStack | OnpremStack | None, cache_dir: Path | None) -> Side:
    """The objects one side applies, and their phases."""
    path = Path(where).expanduser()
    if path.is_file():
        objects = tuple(_read_yaml(path))
        return Side(objects, split_phases(objects), f"{path} (as rendered)")
    if path.is_dir() and not (path / EXAMPLE_KUSTOMIZATION).is_file():
        files = sorted(path.glob("[0-9][0-9]-*.yaml"))
        if not files:
            raise SideError(
                f"{where} is neither a kubeflow/manifests tree (no {EXAMPLE_KUSTOMIZATION}) "
                "nor a folder written by python -m stack.render (no NN-*.yaml)"
            )
        phases = tuple(Phase(f.stem, str(f), tuple(_read_yaml(f))) for f in files)
        return Side(
            tuple(o for p in phases for o in p.objects), phases, f"{path} (stack.render output)"
        )
    if stack is None:
        rendered = render_manifests(where, cache_dir=cache_dir)
        return Side(rendered.objects, split_phases(rendered.objects), f"{where} (upstream)")
    from stack.program.kubeflow import plan

    _, kubeflow_plan = plan(stack, source=where, cache_dir=cache_dir)
    objects = tuple(o for p in kubeflow_plan.phases for o in p.objects)
    return Side(objects, kubeflow_plan.phases, f"{where} (as the stack applies it)")


def format_plan(plan: UpgradePlan, before: Side, after: Side) -> str:
    lines = [
        f"from {before.described}",
        f"to   {after.described}",
        f"{len(plan.kept)} objects kept ({len(plan.changed)} changed), "
        f"{len(plan.removed)} removed, {len(plan.added)} added",
    ]

    def section(title: str, rows: Sequence[str]) -> None:
        if rows:
            lines.append(f"\n{title} ({len(rows)}):")
            lines.extend(f"  {row}" for row in rows)

    section("removed", [str(k) for k in plan.removed])
    section("added", [str(k) for k in plan.added])
    section("renamed (generated names)", [f"{a} -> {b.name}" for a, b in plan.renamed])
    section("apiVersion changes", [f"{k}: {a} -> {b}" for k, a, b in plan.api_versions])
    section(
        "replaced (an immutable field changes: deleted and created again)",
        [f"{r.key}: {', '.join(r.fields)}" for r in plan.replacements],
    )
    section(
        "CRD versions",
        [
            f"{c.name}: storage {c.storage_before} -> {c.storage_after}, served "
            f"[{', '.join(c.served_before)}] -> [{', '.join(c.served_after)}]"
            + (f", dropped {', '.join(c.dropped)}" if c.dropped else "")
            for c in plan.crd_versions
        ],
    )
    lines.append("\norder:")
    for step in plan.order:
        lines.append(
            f"  {step.name}: {len(step.added)} created, {len(step.changed)} updated, "
            f"{len(step.replaced)} replaced"
        )
    lines.append(f"  then {len(plan.removed) + len(plan.renamed)} deleted")
    if plan.refusals:
        section("REFUSED", [f"{r.key}: {r.reason}" for r in plan.refusals])
    else:
        lines.append("\nsafe: nothing users made is deleted")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stack.upgrade_plan",
        description="What a Kubeflow change would do, and whether it loses anything.",
    )
    parser.add_argument("--stack", help="stack name (reads stacks/Pulumi.<stack>.yaml)")
    parser.add_argument("--from", dest="before", help="the old side (default: the stack's)")
    parser.add_argument("--to", required=True, help="the new side: a tree, folder or file")
    parser.add_argument(
        "--allow-deletion",
        action="append",
        default=[],
        metavar="KIND/[NAMESPACE/]NAME",
        help="accept deleting this object (adds to the stack's kubeflow.allowDeletion)",
    )
    parser.add_argument("--stacks-dir", type=Path, default=Path("stacks"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    options = parser.parse_args(argv)

    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    stack: EksStack | OnpremStack | None = None
    allowed = list(options.allow_deletion)
    try:
        if options.stack:
            from stack.load import load_stack_file

            stack_file = options.stacks_dir / f"Pulumi.{options.stack}.yaml"
            if not stack_file.is_file():
                raise SideError(f"stack file {stack_file} does not exist")
            stack = load_stack_file(stack_file, require_secrets=False)
            if not stack.kubeflow.enabled:
                raise SideError(f"{stack_file} has Kubeflow disabled; nothing to plan")
            allowed += list(stack.kubeflow.allow_deletion)
        before_source = options.before or (stack.kubeflow.source if stack else None)
        if before_source is None:
            raise SideError("give --from (or --stack, whose Kubeflow is the old side)")
        before = load_side(before_source, stack, options.cache_dir)
        after = load_side(options.to, stack, options.cache_dir)
    except (RenderError, TransformError, KubeflowConfigError, ValueError, OSError) as err:
        console.print(f"[red]upgrade plan failed:[/red] {err}")
        return 2
    plan = plan_upgrade(before.objects, after.objects, after.phases, allow_deletion=allowed)
    print(format_plan(plan, before, after))
    return 0 if plan.safe else 1


if __name__ == "__main__":
    sys.exit(main())
