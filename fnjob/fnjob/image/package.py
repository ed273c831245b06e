"""The preprocessor: turn a function, a Python file or a notebook into a ``CodePackage``.

A ``CodePackage`` is pure data (file tree + entry spec); builders turn it into an image layer.

Rule for shipping a function:

- a module-level function of a module loaded from a ``.py`` file (its ``__qualname__`` has
  no ``<locals>`` / ``<lambda>`` and ``getattr(module, qualname) is func``) is shipped as
  source: the module file (plus sibling modules it imports), or the whole top-level package
  when the module lives in one. The container imports it by name. Any Python 3 in the base
  image that can parse the sources will do.
- a function from an installed library (site-packages) is referenced by import name only;
  the library must be in the base image or in ``requirements``.
- everything else (lambdas, closures, functions defined in ``__main__``, a notebook or an
  interactive session) is pickled by value with cloudpickle. A pickle needs the SAME Python
  major.minor in the base image (``needs_exact_python``).
"""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
import sys
import sysconfig
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cloudpickle

from fnjob.errors import FnJobError
from fnjob.image import stablepickle
from fnjob.run.runner import PICKLE_PROTOCOL

__all__ = [
    "APP_DIR",
    "CodePackage",
    "FileContent",
    "UnshippableFunction",
    "package_file",
    "package_function",
    "package_notebook",
    "read_content",
]

APP_DIR = "/fnjob/app"
PICKLE_FILE = "fnjob_function.pkl"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnshippableFunction(FnJobError):
    """The function (or file, notebook, extra file) cannot be shipped to the container."""


# A shipped file's content: bytes, or the path of a file on this machine, read only when the
# layer is written (extra files may be gigabytes; they are streamed, never held in memory).
FileContent = bytes | Path


def read_content(content: FileContent) -> bytes:
    """The whole content (for small files: sources, comparisons)."""
    return content if isinstance(content, bytes) else content.read_bytes()


def _local_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _check_app_path(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or path != str(pure):
        raise ValueError(
            f"files: path {path!r} must be relative, normalised and stay inside {APP_DIR}"
        )
    return path


@dataclass(frozen=True)
class CodePackage:
    """What goes into the image's code layer.

    - ``files``: path relative to ``/fnjob/app`` -> content: bytes, or an absolute ``Path``
      read when the layer is written (extra files).
    - ``links``: path relative to ``/fnjob/app`` -> relative symlink target (links found in
      shipped folders that point inside them).
    - ``entry``: the runner's ``FNJOB_ENTRY`` (``module:<mod>:<qualname>``, ``pickle:<file>``
      or ``script:<file>``).
    - ``needs_exact_python``: the entry is a pickle; the base image's Python must have the
      same major.minor as ``source_python``.
    - ``source_python``: the major.minor this package was made with.
    - ``requirements``: pip requirement lines, installed when the image is built (the append
      builder cross-installs them into ``/fnjob/site``; the docker builder runs the base's pip).
    - ``description``: a short human name (``train.fit (source)``) for progress and errors.
    - ``pickle_hint``: for a pickle, how this function could ship as source instead (said
      when the base image's Python differs).
    """

    files: Mapping[str, FileContent]
    entry: str
    needs_exact_python: bool
    source_python: str = field(default_factory=_local_python)
    requirements: tuple[str, ...] = ()
    description: str = ""
    links: Mapping[str, str] = field(default_factory=dict)
    pickle_hint: str = ""

    def __post_init__(self) -> None:
        for path, content in self.files.items():
            _check_app_path(path)
            if not isinstance(content, bytes) and not (
                isinstance(content, Path) and content.is_absolute()
            ):
                raise ValueError(
                    f"files: content of {path!r} is {type(content).__name__}, expected bytes "
                    "or an absolute Path"
                )
        kind, _, rest = self.entry.partition(":")
        if kind not in ("module", "pickle", "script") or not rest:
            raise ValueError(
                f"entry: {self.entry!r} is not 'module:<mod>:<name>', 'pickle:<file>' "
                "or 'script:<file>'"
            )
        if kind in ("pickle", "script") and rest not in self.files:
            raise ValueError(f"entry: {self.entry!r} names a file that is not in files")
        if not re.fullmatch(r"\d+\.\d+", self.source_python):
            raise ValueError(f"source_python: {self.source_python!r} is not 'MAJOR.MINOR'")
        for line in self.requirements:
            if not line.strip() or "\n" in line:
                raise ValueError(
                    f"requirements: {line!r} must be one non-empty requirement per item"
                )
        for path, target in self.links.items():
            _check_app_path(path)
            if path in self.files:
                raise ValueError(f"links: {path!r} is also a file")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if posixpath.isabs(target) or resolved == ".." or resolved.startswith("../"):
                raise ValueError(
                    f"links: {path!r} -> {target!r} must be relative and stay inside {APP_DIR}"
                )
        # Freeze the mappings so the package really is immutable.
        object.__setattr__(self, "files", types.MappingProxyType(dict(self.files)))
        object.__setattr__(self, "links", types.MappingProxyType(dict(self.links)))

    def python_sources(self) -> dict[str, bytes]:
        """The shipped ``.py`` files (checked against the base image's Python syntax)."""
        return {
            path: read_content(data) for path, data in self.files.items() if path.endswith(".py")
        }


# ---------------------------------------------------------------------------------------------
# Inputs shared by every preprocessor


def _read_requirements(requirements: Sequence[str] | str | os.PathLike[str]) -> tuple[str, ...]:
    if isinstance(requirements, str | os.PathLike):
        path = Path(requirements)
        try:
            text = path.read_text()
        except OSError as error:
            raise UnshippableFunction(
                f"requirements: cannot read requirements file {str(path)!r}: {error}"
            ) from error
        lines: Iterable[str] = text.splitlines()
    else:
        lines = requirements
    kept = []
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            kept.append(stripped)
    return tuple(kept)


@dataclass(frozen=True)
class _Tree:
    """Files (path in the app -> content) and symlinks (path in the app -> relative target)."""

    files: dict[str, FileContent] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def update(self, other: _Tree) -> None:
        self.files.update(other.files)
        self.links.update(other.links)


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"


def _tree_files(path: Path, name_in_app: str) -> _Tree:
    """A file, or a folder's files (skipping caches and hidden entries), under name_in_app,
    as absolute paths (read when the layer is written).

    Symlinks inside a folder are never followed out of it: a link whose target is inside
    the folder is shipped as a link (files and folders alike); a link leading outside, or to
    nothing, raises ``UnshippableFunction`` naming it. A path given explicitly is read even
    when it is itself a link: the caller named it.
    """
    if path.is_file():
        return _Tree(files={name_in_app: path.absolute()})
    if not path.is_dir():
        raise UnshippableFunction(f"extra_files: {str(path)!r} is neither a file nor a folder")
    root = path.resolve()
    tree = _Tree()
    for folder, folders, names in os.walk(path):
        here = Path(folder)
        kept = []
        for name in sorted(folders):
            if _skipped(name):
                continue
            if (here / name).is_symlink():
                names.append(name)  # handled as a link below, never descended into
            else:
                kept.append(name)
        folders[:] = kept
        for name in sorted(names):
            child = here / name
            relative = child.relative_to(path).as_posix()
            if _skipped(name) or (child.suffix == ".pyc" and not child.is_symlink()):
                continue
            in_app = f"{name_in_app}/{relative}"
            if child.is_symlink():
                tree.links[in_app] = _inside_link(child, root, path)
            elif child.is_file():
                tree.files[in_app] = child.absolute()
    return tree


def _inside_link(link: Path, root: Path, folder: Path) -> str:
    """The relative target of a symlink that stays inside root; else UnshippableFunction."""
    target = os.readlink(link)
    resolved = (link.parent / target).resolve()
    if not resolved.is_relative_to(root):
        raise UnshippableFunction(
            f"extra_files: {str(link)!r} is a symlink to {target!r}, outside {str(folder)!r}; "
            "fnjob does not follow links out of a folder (they could ship secrets such as "
            "~/.docker/config.json): copy the file into the folder, or pass it explicitly"
        )
    if not resolved.exists():
        raise UnshippableFunction(
            f"extra_files: {str(link)!r} is a symlink to {target!r}, which does not exist"
        )
    return os.path.relpath(resolved, link.parent.resolve())


def _extra_files(extra_files: Sequence[str | os.PathLike[str]]) -> _Tree:
    tree = _Tree()
    for item in extra_files:
        path = Path(item)
        if not path.exists():
            raise UnshippableFunction(f"extra_files: {str(path)!r} does not exist")
        tree.update(_tree_files(path, path.resolve().name))
    return tree


def _merge(code: _Tree, extra: _Tree) -> _Tree:
    code_paths = {**code.files, **code.links}
    extra_paths = {**extra.files, **extra.links}
    for path in sorted(set(code_paths) & set(extra_paths)):
        code_item, extra_item = code_paths[path], extra_paths[path]
        if isinstance(code_item, str) or isinstance(extra_item, str):
            same = code_item == extra_item
        else:
            same = read_content(code_item) == read_content(extra_item)
        if not same:
            raise UnshippableFunction(
                f"extra_files: {path!r} would replace a shipped code file of the same name"
            )
    return _Tree({**code.files, **extra.files}, {**code.links, **extra.links})


def _python_only(tree: _Tree) -> _Tree:
    return _Tree(
        # Sources are read now: the image holds the code as it was when packaged.
        {path: read_content(data) for path, data in tree.files.items() if path.endswith(".py")},
        {path: target for path, target in tree.links.items() if path.endswith(".py")},
    )


# ---------------------------------------------------------------------------------------------
# Functions


def _is_installed_library(path: Path) -> bool:
    """Whether a module file belongs to the standard library or an installed distribution."""
    resolved = str(path.resolve())
    if "site-packages" in resolved or "dist-packages" in resolved:
        return True
    stdlib = sysconfig.get_paths().get("stdlib", "")
    return bool(stdlib) and resolved.startswith(str(Path(stdlib).resolve()) + os.sep)


def _local_imports(source: str, folder: Path) -> list[str]:
    """Top-level names imported by source that resolve to modules/packages in folder."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return [
        name
        for name in dict.fromkeys(names)
        if (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()
    ]


def _module_sources(module_file: Path, module_name: str) -> _Tree:
    """The source files needed to import module_name in the container."""
    parts = module_name.split(".")
    is_package = module_file.name == "__init__.py"
    if len(parts) > 1 or is_package:
        # A module inside a package: ship the whole top-level package's .py files.
        top_dir = module_file.parent
        for _ in range(len(parts) - (1 if is_package else 2)):
            top_dir = top_dir.parent
        return _python_only(_tree_files(top_dir, parts[0]))
    # A plain module: ship it and the sibling modules it imports (transitively).
    folder = module_file.parent
    tree = _Tree()
    files = tree.files
    pending = [module_name]
    while pending:
        name = pending.pop()
        single = folder / f"{name}.py"
        if single.is_file():
            if f"{name}.py" in files:
                continue
            data = single.read_bytes()
            files[f"{name}.py"] = data
            pending.extend(_local_imports(data.decode("utf-8", "replace"), folder))
        elif (folder / name / "__init__.py").is_file() and f"{name}/__init__.py" not in files:
            package = _python_only(_tree_files(folder / name, name))
            tree.update(package)
            for content in package.files.values():
                text = read_content(content).decode("utf-8", "replace")
                pending.extend(_local_imports(text, folder))
    return tree


def _importable_source(func: Callable[..., Any]) -> tuple[str, Path] | None:
    """(module name, module file) when func can be imported by name from a real .py file."""
    module_name = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module_name or module_name == "__main__" or "<" in qualname:
        return None
    module = sys.modules.get(module_name)
    module_file = getattr(module, "__file__", None)
    if module is None or not module_file or not str(module_file).endswith(".py"):
        return None
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    # A decorator such as @job keeps the function as __wrapped__; inside the image the
    # decorator gives the function back, so the module's name still finds it.
    if target is not func and getattr(target, "__wrapped__", None) is not func:
        return None
    return module_name, Path(module_file)


def _pickle_by_value(func: Callable[..., Any], module_name: str | None) -> bytes:
    """cloudpickle func by value, even when its module is importable (registered with
    cloudpickle only for the duration of this dump)."""
    module = sys.modules.get(module_name) if module_name else None
    register = module is not None and module_name not in cloudpickle.list_registry_pickle_by_value()
    if register:
        cloudpickle.register_pickle_by_value(module)
    try:
        data = stablepickle.dumps(func, PICKLE_PROTOCOL)
    finally:
        if register:
            cloudpickle.unregister_pickle_by_value(module)
    return data


def _pickle_hint(func: Callable[..., Any], qualname: str, importable: bool) -> str:
    """What to do so that func ships as source (then any Python 3 base will do)."""
    if importable:
        return "leave out by_value=True so it ships as source"
    if "<" in qualname:
        return "define it at module level in a .py file so it ships as source"
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if getattr(func, "__module__", None) == "__main__" and main_file:
        script = Path(main_file).name
        return (
            f"{qualname} is defined in the script being run ({script}), and functions of the "
            f"running script are pickled: run `fnjob run {script} --function {qualname}`, or "
            f"move {qualname} into a module that {script} imports, so it ships as source"
        )
    return "define it in a .py module that you import (not in the notebook) so it ships as source"


def package_function(
    func: Callable[..., Any],
    *,
    extra_files: Sequence[str | os.PathLike[str]] = (),
    requirements: Sequence[str] | str | os.PathLike[str] = (),
    by_value: bool = False,
) -> CodePackage:
    """Package a function: as source when importable from a ``.py`` file, else pickled.

    ``by_value=True`` pickles even an importable function (needs the same Python in the
    image). A module that imports ``fnjob`` ships as source too: the image's ``fnjob`` runs
    functions in place (``fnjob.run.inimage``). ``extra_files`` are files or folders placed under
    ``/fnjob/app/<their name>``; ``requirements`` is a list of pip requirement lines or the
    path of a requirements file.
    Raises ``UnshippableFunction`` when the function is not callable or cannot be pickled,
    or an extra file is missing.
    """
    if not callable(func):
        raise UnshippableFunction(f"func: {func!r} is not callable")
    extra = _extra_files(extra_files)
    reqs = _read_requirements(requirements)
    qualname = getattr(func, "__qualname__", type(func).__name__)
    importable = _importable_source(func)
    code = _Tree()
    if importable is not None:
        module_name, module_file = importable
        if not _is_installed_library(module_file):
            code = _module_sources(module_file, module_name)
        if not by_value:
            merged = _merge(code, extra)
            return CodePackage(
                files=merged.files,
                links=merged.links,
                entry=f"module:{module_name}:{qualname}",
                needs_exact_python=False,
                requirements=reqs,
                description=f"{module_name}.{qualname} (source)",
            )
    try:
        pickled = _pickle_by_value(func, importable[0] if importable else None)
    except Exception as error:
        raise UnshippableFunction(
            f"func: {qualname} cannot be pickled ({type(error).__name__}: {error}); "
            "define it at module level in a .py file so it can be shipped as source"
        ) from error
    merged = _merge(_Tree({**code.files, PICKLE_FILE: pickled}, code.links), extra)
    return CodePackage(
        pickle_hint=_pickle_hint(func, qualname, importable is not None),
        files=merged.files,
        links=merged.links,
        entry=f"pickle:{PICKLE_FILE}",
        needs_exact_python=True,
        requirements=reqs,
        description=f"{qualname} (pickled)",
    )


# ---------------------------------------------------------------------------------------------
# Files and notebooks


def _module_name_for(path: Path) -> str:
    name = re.sub(r"\W", "_", path.stem)
    if not name or name[0].isdigit():
        name = f"m_{name}"
    return name


def _defined_function_names(source: str) -> set[str]:
    tree = ast.parse(source)
    return {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    } | {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _package_source(
    source: str,
    module_name: str,
    origin: str,
    function: str | None,
    extra_files: Sequence[str | os.PathLike[str]],
    requirements: Sequence[str] | str | os.PathLike[str],
    siblings_of: Path | None,
) -> CodePackage:
    try:
        defined = _defined_function_names(source)
    except SyntaxError as error:
        raise UnshippableFunction(f"{origin} is not valid Python: {error}") from error
    file_name = f"{module_name}.py"
    code = _Tree({file_name: source.encode("utf-8")})
    if siblings_of is not None:
        for name in _local_imports(source, siblings_of):
            if name != module_name:
                code.update(
                    _module_sources(siblings_of / f"{name}.py", name)
                    if (siblings_of / f"{name}.py").is_file()
                    else _module_sources(siblings_of / name / "__init__.py", name)
                )
    if function is None:
        entry = f"script:{file_name}"
        description = f"{origin} (script)"
    else:
        if not _IDENTIFIER.match(function):
            raise UnshippableFunction(f"function: {function!r} is not a Python identifier")
        if function not in defined:
            raise UnshippableFunction(
                f"function: {origin} defines no top-level function {function!r}"
            )
        entry = f"module:{module_name}:{function}"
        description = f"{origin}:{function} (source)"
    merged = _merge(code, _extra_files(extra_files))
    return CodePackage(
        files=merged.files,
        links=merged.links,
        entry=entry,
        needs_exact_python=False,
        requirements=_read_requirements(requirements),
        description=description,
    )


def package_file(
    path: str | os.PathLike[str],
    *,
    function: str | None = None,
    extra_files: Sequence[str | os.PathLike[str]] = (),
    requirements: Sequence[str] | str | os.PathLike[str] = (),
) -> CodePackage:
    """Package a Python file: call its top-level ``function``, or run it as a script when
    ``function`` is None (the outcome is then ``None``). Sibling modules it imports are
    shipped too. Raises ``UnshippableFunction`` for a missing/invalid file or function."""
    file_path = Path(path)
    try:
        source = file_path.read_text()
    except OSError as error:
        raise UnshippableFunction(f"path: cannot read {str(file_path)!r}: {error}") from error
    return _package_source(
        source,
        _module_name_for(file_path),
        str(file_path),
        function,
        extra_files,
        requirements,
        file_path.resolve().parent,
    )


def notebook_source(notebook: Mapping[str, Any]) -> str:
    """The code cells of a parsed ``.ipynb`` as one module; IPython magics and shell lines
    (``%``, ``%%``, ``!``) are commented out so line numbers still match the cells."""
    cells = notebook.get("cells")
    if not isinstance(cells, list):
        raise UnshippableFunction("the notebook has no 'cells' list (is it nbformat 4?)")
    chunks = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        raw = cell.get("source", "")
        text = "".join(raw) if isinstance(raw, list) else str(raw)
        lines = text.splitlines()
        whole_cell_magic = bool(lines) and lines[0].lstrip().startswith("%%")
        kept = []
        for line in lines:
            if whole_cell_magic or line.lstrip().startswith(("%", "!")):
                kept.append(f"# fnjob skipped IPython line: {line}")
            else:
                kept.append(line)
        chunks.append(f"# cell {index}\n" + "\n".join(kept))
    return "\n\n".join(chunks) + "\n"


def package_notebook(
    path: str | os.PathLike[str],
    *,
    function: str | None = None,
    extra_files: Sequence[str | os.PathLike[str]] = (),
    requirements: Sequence[str] | str | os.PathLike[str] = (),
) -> CodePackage:
    """Package a notebook's code cells as a module: call ``function`` defined in it, or run
    all cells top to bottom when ``function`` is None. Raises ``UnshippableFunction``."""
    notebook_path = Path(path)
    try:
        notebook = json.loads(notebook_path.read_text())
    except (OSError, ValueError) as error:
        raise UnshippableFunction(
            f"path: cannot read notebook {str(notebook_path)!r}: {error}"
        ) from error
    return _package_source(
        notebook_source(notebook),
        _module_name_for(notebook_path),
        str(notebook_path),
        function,
        extra_files,
        requirements,
        notebook_path.resolve().parent,
    )
