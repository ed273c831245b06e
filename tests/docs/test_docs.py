"""The README and every page of docs/ say only what is true of the project (see doccheck)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.doccheck import ROOT, Checker

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker()  # one per module: each command's --help runs once


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_page_names_real_keys_working_commands_compiling_code_and_sourced_figures(
    page: Path, checker: Checker
) -> None:
    problems = checker.check(page.read_text(), str(page.relative_to(ROOT)))
    assert problems == [], "\n".join(str(p) for p in problems)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_the_docs_link_only_to_files_and_headings_that_exist() -> None:
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target:
                continue
            linked = (page.parent / target).resolve() if target else page
            assert linked.exists(), f"{page.name} links to missing {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked), f"{page.name} links to missing #{anchor}"
