"""Output outside a terminal: plain progress lines, never wrapped, and a value that cannot
be loaded here still described (type, repr, why)."""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fnjob import cli
from fnjob.progress import ProgressEvent
from fnjob.report import PLAIN_UPLOAD_INTERVAL, RichReporter
from fnjob.run.protocol import ResultNotLoadable
from tests.fnjob.run_fixtures import with_fnjob_importable

# -- plain progress --------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _plain_reporter(clock: FakeClock) -> tuple[RichReporter, io.StringIO]:
    err = io.StringIO()
    console = Console(file=err, force_terminal=False, force_jupyter=False, width=80)
    return RichReporter(console, io.StringIO(), err, clock=clock), err


def test_plain_progress_is_one_line_per_stage_and_uploads_every_few_seconds() -> None:
    clock = FakeClock()
    reporter, err = _plain_reporter(clock)
    base = "registry.example/" + "very-long-repository-name/" * 4 + "python:3.11"
    reporter.progress(ProgressEvent("resolve-base", base))
    reporter.progress(ProgressEvent("check-python"))
    for done in range(0, 100, 10):  # within one interval: no line of its own
        reporter.progress(ProgressEvent("check-python", bytes_done=done, bytes_total=100))
    reporter.progress(ProgressEvent("build-layer", "train"))
    reporter.progress(ProgressEvent("mount", "sha256:a", bytes_total=10))
    # 30 s of upload, an event every half second: a line every PLAIN_UPLOAD_INTERVAL.
    total = 60 * 10**6
    for step in range(60):
        clock.now += 0.5
        reporter.progress(
            ProgressEvent("upload", "sha256:b", bytes_done=step * 10**6, bytes_total=total)
        )
    reporter.progress(ProgressEvent("manifest", "sha256:c"))
    reporter.progress(ProgressEvent("done", base + "@sha256:" + "d" * 64))
    lines = err.getvalue().splitlines()
    assert lines[0] == f"build: reading base image {base}"  # never wrapped at 80 columns
    assert lines[1] == "build: finding the base image's Python"
    assert lines[2] == "build: code layer for train"
    assert lines[3] == "push: sending blobs"
    uploads = [line for line in lines if line.endswith("MB acknowledged") and "of" in line]
    assert 30 / PLAIN_UPLOAD_INTERVAL - 1 <= len(uploads) <= 30 / PLAIN_UPLOAD_INTERVAL
    assert all(line.endswith("of 60.0 MB acknowledged") for line in uploads)
    assert lines[-3] == "push: manifest"
    assert lines[-2] == "push: 1 uploaded (59.0 MB acknowledged), 1 mounted, 0 already there"
    assert lines[-1] == f"pushed {base}@sha256:{'d' * 64}"
    assert "\x1b[" not in err.getvalue()


def _fnjob(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "fnjob", *args],
        env=with_fnjob_importable(dict(env or os.environ)),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_error_lines_are_never_wrapped_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("def main():\n    return 1\n")
    memory = "a-typo-in-a-memory-quantity-that-makes-the-error-line-much-longer-than-80-columns"
    env = {**os.environ, "COLUMNS": "80"}
    completed = _fnjob(
        ["run", "train.py", "--base-image", "b", "--registry", "r.example", "--memory", memory],
        tmp_path,
        env,
    )
    assert completed.returncode == cli.EXIT_USAGE
    line = completed.stderr.strip()
    assert "\n" not in line
    assert line.startswith(f"error: memory='{memory}' is not a Kubernetes quantity")


@pytest.mark.real
def test_a_build_through_a_pipe_prints_one_plain_line_per_stage(
    tmp_path: Path, registry: Any, python_base: str
) -> None:
    (tmp_path / "train.py").write_text("def main():\n    return 1\n")
    completed = _fnjob(
        ["build", "train.py", "--base-image", python_base, "--registry", f"{registry.host}/t"],
        tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stderr.splitlines()
    assert lines[0] == f"build: reading base image {python_base}"
    assert any(line.startswith("build: code layer for ") for line in lines)
    for expected in ("push: sending blobs", "push: manifest"):
        assert expected in lines
    assert lines[-1] == f"pushed {completed.stdout.strip()}"
    assert "\x1b[" not in completed.stderr


# -- a value that cannot be loaded here --------------------------------------------------------


def _pickle_of_a_type_missing_here(tmp_path: Path) -> bytes:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "imageonly_lab.py").write_text(
        "class Measurement:\n    def __init__(self, value):\n        self.value = value\n"
    )
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("imageonly_lab")
        return pickle.dumps({"reading": module.Measurement(3.5), "ok": True})
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("imageonly_lab", None)


def test_json_describes_a_value_that_cannot_be_loaded_here(tmp_path: Path) -> None:
    data = _pickle_of_a_type_missing_here(tmp_path)
    error = ResultNotLoadable(
        "module 'imageonly_lab' is not installed here",
        missing_module="imageonly_lab",
        pickled_value=data,
    )
    record = cli.result_record("failed", cli.EXIT_JOB_FAILED, error=error)
    assert record["value"] is None
    assert record["value_type"] == "builtins.dict"
    assert record["value_repr"] == ("{'reading': imageonly_lab.Measurement(value=3.5), 'ok': True}")
    assert record["error"]["missing_module"] == "imageonly_lab"
    assert "not installed here" in record["error"]["message"]
    json.dumps(record)


RETURNS_IMAGE_ONLY_PY = """\
def measure(reading=3.5):
    import imageonly_lab  # shipped with --extra-file; not installed where fnjob runs

    return imageonly_lab.Measurement(reading)
"""


@pytest.mark.real
def test_json_from_the_command_names_the_type_and_repr_of_an_unloadable_value(
    tmp_path: Path, registry: Any, python_base: str, podman_env: dict[str, str]
) -> None:
    library = tmp_path / "elsewhere" / "imageonly_lab.py"
    library.parent.mkdir()
    library.write_text(
        "class Measurement:\n    def __init__(self, value):\n        self.value = value\n"
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "measure.py").write_text(RETURNS_IMAGE_ONLY_PY)
    completed = _fnjob(
        [
            *("run", "measure.py", "--function", "measure", "--local", "--json"),
            *("--extra-file", str(library), "--base-image", python_base),
            *("--registry", f"{registry.host}/tests"),
        ],
        project,
        podman_env,
    )
    assert completed.returncode == cli.EXIT_JOB_FAILED, completed.stderr
    record = json.loads(completed.stdout)
    assert record["value_type"] == "imageonly_lab.Measurement"
    assert record["value_repr"] == "imageonly_lab.Measurement(value=3.5)"
    assert record["error"]["missing_module"] == "imageonly_lab"
    assert "'imageonly_lab' is not installed here" in record["error"]["message"]
