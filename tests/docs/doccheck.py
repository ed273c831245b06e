"""Checks that keep the docs true: what a page claims is checked against the project.

- **Stack keys.** A code span naming a stack key (``kubeflow.culling.idleMinutes``,
  ``gpuNodeGroups[0].amiType``, ``kubeflow-eks:kubernetesVersion``, ``aws:region``,
  ``registryDockerConfigs.<profile>``, ``kubeflow.ingress: load-balancer``) must name a key of
  the model (``stack.reference.key_paths``). A span is read as a key when it is written
  ``kubeflow-eks:...`` or ``aws:...``, or when it is a dotted path whose first part is a
  top-level key or the name of an object key of the model (``notebookImage.image``, checked
  as the end of a full key). ``NOT_STACK_KEYS`` declares the few dotted names that start like
  a key and are something else (the Kubeflow SDK's Python packages).
- **Commands.** Every line of a ``bash``/``sh``/``shell`` block, and every code span that
  starts like a project command, is split into commands. A project command (``python -m
  stack.check``, ``python benchmarks/...``, ``fnjob ...``, ``./scripts/...``) is run with
  ``--help`` (after its subcommand), which must succeed and list every ``--option`` the
  doc gives it. ``python3 -c CODE`` compiles ``CODE``. Programs outside the project (no CLI
  here, or not ours) are skipped by name, ``OUTSIDE``; any other program is a problem.
- **Snippets.** ``python`` blocks compile; ``yaml`` and ``json`` blocks parse; a fenced
  block without a language is a problem (say ``text`` for output).
- **Figures.** A measured figure (a ratio such as ``1.27x`` or ``+20 %``, ``N times``, a
  time in ms, or a decimal time or size such as ``0.65 s`` or ``183.6 MB``) must sit in a
  paragraph, list item or table row that names the benchmark script that printed it
  (``benchmarks/bench_x.py`` or ``bench_x.py``), and that script must exist. Whole numbers of
  seconds, minutes or bytes are read as settings and limits (``120 s``, ``6 MiB``), not
  measurements. Figures inside code spans and blocks are values, not quotes.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from stack import reference

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
PROJECT = "kubeflow-eks"

# Programs a doc may show that are not the project's: no CLI for them here (pulumi, aws,
# kubectl against a cluster), or tools and shell words whose own docs are elsewhere.
OUTSIDE = frozenset(
    {
        "pulumi",
        "aws",
        "kubectl",
        "gh",
        "git",
        "docker",
        "podman",
        "buildah",
        "skopeo",
        "curl",
        "pip",
        "pytest",
        ".venv/bin/pytest",
        "cd",
        "cp",
        "mkdir",
        "export",
        "echo",
        "cat",
        "read",
        "for",
        "while",
    }
)
# Dotted names that start like a stack key but are not one.
NOT_STACK_KEYS = ("kubeflow.trainer", "kubeflow.common", "kubeflow.optimizer", "kubeflow.org")
SHELL_LANGUAGES = frozenset({"bash", "sh", "shell"})
OTHER_LANGUAGES = frozenset(
    {"python", "text", "yaml", "json", "mermaid", "toml", "ini", "dockerfile", "diff"}
)
PYTHONS = frozenset({"python", "python3", ".venv/bin/python", "policy/.venv/bin/python"})
PROJECT_MODULES = frozenset({"stack", "fnjob", "components", "ci_bootstrap"})


@dataclass(frozen=True)
class Problem:
    where: str  # path:line
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Help:
    """What ``--help`` of a command printed, or why it failed."""

    ok: bool
    text: str


def run_help(argv: tuple[str, ...]) -> Help:
    """Run a project command's help from the repository root."""
    try:
        done = subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
        )
    except OSError as error:
        return Help(False, str(error))
    return Help(done.returncode == 0, done.stdout + done.stderr)


@dataclass
class Checker:
    """Checks one page at a time against the model, the benchmarks and the project's CLIs."""

    keys: Mapping[str, bool] = field(default_factory=reference.key_paths)
    help_of: Callable[[tuple[str, ...]], Help] = field(default_factory=lambda: cache(run_help))

    def check(self, text: str, name: str) -> list[Problem]:
        problems: list[Problem] = []
        for block in _fenced(text):
            problems += self._fenced_block(block, name)
        for para in _paragraphs(text):
            where = f"{name}:{para.line}"
            for span in _code_spans(para.text):
                problems += [Problem(where, m) for m in self._span(span)]
            problems += [Problem(where, m) for m in _figures(para.text)]
        return problems

    # -- fenced blocks ------------------------------------------------------------------

    def _fenced_block(self, block: Fenced, name: str) -> list[Problem]:
        where = f"{name}:{block.line}"
        if not block.language:
            return [Problem(where, "a fenced block without a language (bash, python, text, ...)")]
        if block.language in SHELL_LANGUAGES:
            return [Problem(where, m) for m in self._shell(block.text)]
        if block.language == "python":
            return [Problem(where, m) for m in _compiles(block.text)]
        if block.language == "yaml":
            try:
                yaml.safe_load(block.text)
            except yaml.YAMLError as error:
                return [Problem(where, f"YAML does not parse: {error}")]
        if block.language == "json":
            try:
                json.loads(block.text)
            except ValueError as error:
                return [Problem(where, f"JSON does not parse: {error}")]
        if block.language not in OTHER_LANGUAGES:
            return [Problem(where, f"unknown language {block.language!r} of a fenced block")]
        return []

    # -- code spans ---------------------------------------------------------------------

    def _span(self, span: str) -> list[str]:
        if _looks_like_project_command(span):
            return self._shell(span)
        key = self._key_in(span)
        if key is None or self._key_exists(key):
            return []
        return [f"`{span}` names no stack key (see docs/stack-reference.md)"]

    def _key_in(self, span: str) -> str | None:
        """The key path a span names, normalised (``[0]`` as ``[]``), or None."""
        text = span.split(": ", 1)[0].strip()
        text = re.sub(r"\[\d*\]", "[]", text)
        if re.search(r":<[\w-]+>$", text):
            return None  # the form of a key (kubeflow-eks:<key>), not a key
        if text.startswith(f"{PROJECT}:"):
            return text.removeprefix(f"{PROJECT}:") or None
        if text.startswith("aws:"):
            return text if re.fullmatch(r"aws:[a-z][A-Za-z0-9]*", text) else None
        if not _KEY_PATH.fullmatch(text) or "." not in text:
            return None
        if text.startswith(NOT_STACK_KEYS):
            return None
        first = text.split(".", 1)[0].removesuffix("[]")
        if first in self._top_level or first in self._object_names:
            return text
        return None

    @property
    def _top_level(self) -> set[str]:
        return {k for k in self.keys if "." not in k and "[" not in k}

    @property
    def _object_names(self) -> set[str]:
        """Names of the model's nested objects and lists (``culling``, ``profiles``)."""
        prefixes = {k.rsplit(".", 1)[0] for k in self.keys if "." in k}
        return {p.rsplit(".", 1)[-1].removesuffix("[]") for p in prefixes if "." in p}

    def _key_exists(self, key: str) -> bool:
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            head = ".".join(parts[:end])
            full = [k for k in self.keys if k == head or k.endswith(f".{head}")]
            if not full:
                continue
            if end == len(parts):
                return True
            # The rest are the user's own keys of a map (``tags.team``, ``<profile>``).
            return any(self.keys[k] for k in full)
        return False

    # -- commands -----------------------------------------------------------------------

    def _shell(self, script: str) -> list[str]:
        try:
            commands = list(_commands(script))
        except ValueError as error:
            return [str(error)]
        problems: list[str] = []
        for command in commands:
            problems += self._command(command)
        return problems

    def _command(self, words: list[str]) -> list[str]:
        while words and (
            re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]) or words[0] in _SHELL_PREFIXES
        ):
            words = words[1:]
        if not words:
            return []
        program, args = words[0], words[1:]
        if program in PYTHONS:
            return self._python(program, args)
        if program in ("fnjob", ".venv/bin/fnjob"):
            sub = [args[0]] if args and not args[0].startswith("-") else []
            return self._help((*_fnjob(), *sub), words)
        if re.fullmatch(r"(\./)?scripts/[\w-]+", program):
            path = program.removeprefix("./")
            if not (ROOT / path).is_file():
                return [f"`{' '.join(words)}`: there is no {path}"]
            return self._help((str(ROOT / path),), words)
        if program in OUTSIDE:
            return []
        return [
            f"`{' '.join(words)}`: {program!r} is neither a project command nor in the"
            " declared list of outside programs (tests/docs/doccheck.py OUTSIDE)"
        ]

    def _python(self, program: str, args: list[str]) -> list[str]:
        shown = [program, *args]
        if args[:1] == ["-c"] and len(args) > 1:
            return _compiles(args[1])
        if args[:1] == ["-m"] and len(args) > 1:
            if args[1].split(".")[0] not in PROJECT_MODULES:
                return []  # someone else's module (python -m pulumi.policy)
            return self._help((sys.executable, "-m", args[1]), shown)
        if args and args[0].endswith(".py"):
            return _benchmark(args[0], shown)
        return [f"`{' '.join(shown)}`: a Python command the docs' check cannot read"]

    def _help(self, argv: tuple[str, ...], shown: list[str]) -> list[str]:
        answer = self.help_of((*argv, "--help"))
        command = " ".join(shown)
        if not answer.ok:
            return [f"`{command}`: `{' '.join(argv[-2:])} --help` fails: {answer.text[-300:]}"]
        problems = []
        for word in shown:
            option = word.strip("[]()").split("=", 1)[0]
            listed = re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", answer.text)
            if option.startswith("--") and len(option) > 2 and not listed:
                problems.append(f"`{command}`: {option} is not an option of it")
        return problems


# --------------------------------------------------------------------------- reading Markdown

_KEY_PATH = re.compile(r"[a-z][A-Za-z0-9]*(\[\])?(\.([a-z][A-Za-z0-9]*|<[\w-]+>)(\[\])?)*")
_SHELL_PREFIXES = frozenset({"do", "then", "else", "done", "fi", "!", "sudo"})
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w-]*)")
_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_PROJECT_COMMAND = re.compile(
    r"((\.venv/bin/)?python3? (-m \w|benchmarks/)"
    r"|(\.venv/bin/)?fnjob( |$)"
    r"|(\./)?scripts/[\w-]+( |$))"
)


@dataclass(frozen=True)
class Fenced:
    language: str
    text: str
    line: int


@dataclass(frozen=True)
class Paragraph:
    text: str
    line: int


def _fenced(text: str) -> Iterator[Fenced]:
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, language = match.groups()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        yield Fenced(language, "\n".join(body) + "\n", i + 1)
        i = j + 1


def _paragraphs(text: str) -> Iterator[Paragraph]:
    """Prose outside fenced blocks, as paragraphs, list items and table rows."""
    current: list[str] = []
    start = 0
    in_fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if in_fence is not None:
            if line.strip().startswith(in_fence):
                in_fence = None
            continue
        new_block = (
            match is not None
            or not line.strip()
            or line.lstrip().startswith(("#", "|", "<!--"))
            or re.match(r"^\s*([-*+]|\d+\.)\s", line) is not None
        )
        if new_block and current:
            yield Paragraph("\n".join(current), start)
            current = []
        if match is not None:
            in_fence = match.group(2)
            continue
        if line.lstrip().startswith(("|", "#")):
            yield Paragraph(line, number)
        elif line.strip() and not line.lstrip().startswith("<!--"):
            if not current:
                start = number
            current.append(line)
    if current:
        yield Paragraph("\n".join(current), start)


def _code_spans(text: str) -> list[str]:
    return [" ".join(m.group(2).split()) for m in _SPAN.finditer(text)]


def _looks_like_project_command(span: str) -> bool:
    return _PROJECT_COMMAND.match(span) is not None


def _commands(script: str) -> Iterator[list[str]]:
    """Simple commands of a shell script: continuations joined, split at ; && || | and
    newlines outside quotes, comments dropped, ``$(...)`` left as one word."""
    script = _without_comments(script.replace("\\\n", " "))
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace = " \t\r"
    lexer.commenters = ""
    lexer.wordchars += "$-./:=@,{}[]*~%+^!?#"
    words: list[str] = []
    depth = 0
    try:
        tokens = list(lexer)
    except ValueError as error:
        raise ValueError(f"the shell script does not parse ({error}): {script[:80]!r}") from None
    for token in tokens:
        if token == "(":
            depth += 1
        elif token == ")":
            depth = max(0, depth - 1)
        elif depth:
            continue
        elif token in ("\n", ";", "&&", "||", "|", "&", ";;") or set(token) <= set(";&|"):
            if words:
                yield words
            words = []
        elif token in ("<", ">", ">>") or set(token) <= set("<>"):
            words.append("__redirect__")
        else:
            words.append(token)
    if words:
        yield words


def _without_comments(script: str) -> str:
    """The script without its ``#`` comments (a ``#`` that starts a word outside quotes)."""
    out: list[str] = []
    quote: str | None = None
    comment = False
    previous = "\n"
    for char in script:
        if comment:
            if char == "\n":
                comment = False
                out.append(char)
        elif quote is not None:
            quote = None if char == quote else quote
            out.append(char)
        elif char == "#" and previous in " \t\n":
            comment = True
        else:
            if char in "'\"":
                quote = char
            out.append(char)
        previous = char
    return "".join(out)


def _benchmark(path: str, shown: list[str]) -> list[str]:
    """A benchmark is not started to read its help (some run for minutes): it must exist,
    compile, and handle every ``--option`` shown."""
    command = " ".join(shown)
    script = ROOT / path
    if not script.is_file():
        return [f"`{command}`: there is no {path}"]
    source = script.read_text()
    problems = [f"`{command}`: {path}: {m}" for m in _compiles(source)]
    for word in shown:
        option = word.strip("[]()").split("=", 1)[0]
        if option.startswith("--") and f'"{option}"' not in source:
            problems.append(f"`{command}`: {path} does not read {option}")
    return problems


def _fnjob() -> tuple[str, ...]:
    return (sys.executable, "-m", "fnjob")


def _compiles(code: str) -> list[str]:
    try:
        compile(code, "<doc snippet>", "exec")
    except SyntaxError as error:
        return [f"Python does not compile: {error.msg} (snippet line {error.lineno})"]
    return []


# --------------------------------------------------------------------------- figures

_FIGURE = re.compile(
    r"(?<![\w.])("
    r"[+-]?\d+(?:\.\d+)?\s?[\u00d7x](?![\w])"  # ratios: 1.27x, 42 and a multiplication sign
    r"|\d+(?:\.\d+)?\s+times\b"  # 1.8 times
    r"|[+-]?\d+(?:\.\d+)?\s?%"  # percentages
    r"|\d+(?:[.,]\d+)?\s?ms\b"  # any time in ms
    r"|\d+\.\d+\s?(?:s|min|minutes|h|KiB|MiB|GiB|KB|MB|GB|kB)\b"  # decimal times and sizes
    r")"
)
_BENCH = re.compile(r"(?:benchmarks/)?\b(bench_\w+\.py)")


def _figures(paragraph: str) -> list[str]:
    prose = _SPAN.sub(" ", paragraph)
    benches = _BENCH.findall(paragraph)
    problems = [
        f"names benchmarks/{b}, which does not exist"
        for b in dict.fromkeys(benches)
        if not (BENCHMARKS / b).is_file()
    ]
    figures = [m.group(1) for m in _FIGURE.finditer(prose)]
    if figures and not benches:
        problems.append(
            f"figure {figures[0]!r} with no benchmark script named next to it"
            " (name the benchmarks/bench_*.py that printed it)"
        )
    return problems
