"""In a Jupyter notebook, fnjob shows its progress by default (a widget, or plain lines
without ipywidgets), and a switch turns it off. A real kernel (ipykernel, run by nbclient)
builds against the real registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _run_notebook(setup: str, registry: Any, python_base: str) -> nbformat.NotebookNode:
    cells = [
        f"import sys\nsys.path[:0] = [{str(REPO_ROOT / 'fnjob')!r}, {str(REPO_ROOT)!r}]\n" + setup,
        "from fnjob import Job\n"
        "from tests.fnjob import run_payloads\n"
        f"job = Job(base_image={python_base!r}, registry={registry.host + '/nb'!r})\n"
        "image = job.build(run_payloads.add)\n"
        "print('built', image.ref)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=600, kernel_name="python3", store_widget_state=True).execute()
    return notebook


def _texts(notebook: nbformat.NotebookNode) -> str:
    """Everything the build cell showed as text (streams and rich's display data), and the
    widgets' own contents."""
    parts = []
    for output in notebook.cells[1].outputs:
        parts.append(str(output.get("text", "")))
        data = output.get("data", {})
        parts += [str(data.get("text/plain", "")), str(data.get("text/html", ""))]
    widgets = notebook.metadata.get("widgets", {})
    parts.append(json.dumps(widgets))
    return "\n".join(parts)


def _widget_views(notebook: nbformat.NotebookNode) -> list[Any]:
    return [o for o in notebook.cells[1].outputs if WIDGET_VIEW in o.get("data", {})]


@pytest.mark.real
def test_a_notebook_shows_progress_in_a_widget_by_default_and_a_switch_turns_it_off(
    registry: Any, python_base: str
) -> None:
    notebook = _run_notebook("", registry, python_base)
    assert _widget_views(notebook), notebook.cells[1].outputs
    shown = _texts(notebook)
    assert "push:" in shown
    assert "built " in shown

    notebook = _run_notebook(
        "import os\nos.environ['FNJOB_PROGRESS'] = 'off'\n", registry, python_base
    )
    assert not _widget_views(notebook)
    shown = _texts(notebook)
    assert "build:" not in shown and "push:" not in shown
    assert "built " in shown


@pytest.mark.real
def test_without_ipywidgets_a_notebook_gets_plain_progress_lines(
    registry: Any, python_base: str
) -> None:
    # ipywidgets not importable (None in sys.modules blocks the import).
    notebook = _run_notebook("sys.modules['ipywidgets'] = None\n", registry, python_base)
    assert not _widget_views(notebook)
    shown = _texts(notebook)
    assert f"build: reading base image {python_base}" in shown
    assert "pushed " in shown
