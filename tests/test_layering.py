"""The Pulumi program's floors: each imports only its own floor and the ones below it.

    __main__.py   wires a stack (load it, build it)
    stack/        reads and checks stack files, wires components into a stack, its CLIs
    components/   the infrastructure components (AWS, GPU, Kubeflow), given model types
    model/        the vocabulary: stack types, GPU catalog, version table, naming rules

fnjob is its own installable package and imports none of them. Imports are read with ``ast``
from every file, nested (lazy) imports and ``TYPE_CHECKING`` blocks included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("model", "components", "stack", "__main__")
OURS = {*FLOORS, "fnjob"}


def floor_of(module: str) -> str | None:
    """The floor a module of ours lives on; None for anything else (stdlib, PyPI)."""
    top = module.partition(".")[0]
    return top if top in OURS else None


def imported_modules(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, a file of ``module``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name


def upward_imports(source: str, module: str) -> list[str]:
    """The imports of ``module`` that reach a higher floor (or leave fnjob for the program)."""
    own = floor_of(module)
    assert own is not None
    found = []
    for line, name in imported_modules(source, module):
        target = floor_of(name)
        if target is None or target == own:
            continue
        upward = (
            own == "fnjob"
            or target == "fnjob"
            or (own in FLOORS and FLOORS.index(target) > FLOORS.index(own))
        )
        if upward:
            found.append(f"line {line}: {module} ({own}) imports {name} ({target})")
    return found


def program_files() -> Iterator[tuple[Path, str]]:
    yield ROOT / "__main__.py", "__main__"
    for package in ("model", "components", "stack"):
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for path in sorted((ROOT / "fnjob" / "fnjob").rglob("*.py")):
        yield path, ".".join(path.relative_to(ROOT / "fnjob").with_suffix("").parts)


def test_every_floor_has_files() -> None:
    modules = [module for _, module in program_files()]
    for top in OURS:
        assert any(floor_of(m) == top for m in modules), f"no files found for {top}"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("model.gpu", "from components.gpu.scheduling import gpu_groups_document\n"),
        ("model.stacks", "def f():\n    import stack.program\n"),
        ("components.gpu.device_plugin", "from stack.program import build_stack\n"),
        ("components.kubeflow.transform", "from ...stack import load\n"),
        ("stack.load", "import __main__\n"),
        ("fnjob.options", "from model import GpuGroup\n"),
    ],
)
def test_an_upward_import_is_found(module: str, source: str) -> None:
    assert upward_imports(source, module)


def test_downward_and_outside_imports_pass() -> None:
    source = "import yaml\nfrom model import Taint\nfrom components.aws.iam import IrsaRole\n"
    assert upward_imports(source, "stack.program.eks") == []
    assert upward_imports("from . import catalog\n", "model.gpu") == []


def test_no_floor_imports_a_higher_one() -> None:
    problems = [
        problem
        for path, module in program_files()
        for problem in upward_imports(path.read_text(), module)
    ]
    assert problems == []
