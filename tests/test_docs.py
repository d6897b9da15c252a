"""The documentation: README.md is a front page (at most 150 lines), and every relative link in it and in
docs/*.md points at a file inside the repository that exists. No Ray, no Valkey."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target), outside code; an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
EXPLICIT_ANCHOR = re.compile(r'<a\s+(?:id|name)="([^"]+)"')


def _links(page: Path) -> list[tuple[int, str]]:
    links, fenced = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        links += [(number, m.group(1)) for m in LINK.finditer(line)]
    return links


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors (lower case, punctuation dropped, spaces to hyphens) and explicit ones
    (`<a id="...">`, as docs/benchmarks.md's generator writes before a heading that names what the section ran)."""
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
        elif not fenced:
            anchors.update(EXPLICIT_ANCHOR.findall(line))
    return anchors


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("#")


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move the detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page: Path):
    problems = []
    for number, target in _links(page):
        if not _relative(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (page.parent / path).resolve()
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if "shared" in Path(path).parts or not resolved.is_relative_to(ROOT):
            problems.append(f"{where} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where} does not exist")
        elif "#" in target and resolved.suffix == ".md" and target.split("#", 1)[1] not in _anchors(resolved):
            problems.append(f"{where}: no such heading in {path}")
    assert not problems, "\n".join(problems)


def test_the_link_check_sees_links():
    # A guard against a regex that silently matches nothing.
    assert any(t == "docs/api.md" for _, t in _links(ROOT / "README.md"))
