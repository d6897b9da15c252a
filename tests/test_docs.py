"""The documentation: README.md is a front page (at most 150 lines), every relative link in it and in docs/*.md
points at a file inside the repository that exists, security.md covers each control, and the facts the docs
state once stay true: the table of test files and their markers (testing.md), the source layout
(architecture.md), the limits (api.md) and the application arguments (operations.md). No Ray, no Valkey."""

from __future__ import annotations

import ast
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


def test_security_doc_covers_each_item():
    doc = (ROOT / "docs" / "security.md").read_text()
    for needle in ("Threat model", "open by default", "allow_unauthenticated", "COUNCILS_ADMIN_TOKEN_FILE",
                   "max_councils", "max_agents_total", "max_active_total", "max_sse_connections", "maxmemory",
                   "appendfsync", "RAY_AUTH_MODE", "dashboard", "/proc", "public_docs", "--token-file"):
        assert needle in doc, needle


# -- facts the docs state once, checked against the code ---------------------------------------------------------
MARKERS = ("unit", "valkey", "ray", "slow")
MARKER_SETS = [{"unit"}, {"valkey"}, {"ray"}, {"slow"}, {"slow", "ray"}]


def _table(page: Path, header: str) -> list[list[str]]:
    """The cells of each body row of the table whose header line starts with `header`."""
    lines = page.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _pytest_markers(nodes) -> set[str]:
    """The markers among MARKERS that `pytest.mark.<name>` expressions under these nodes name."""
    return {n.attr for node in nodes for n in ast.walk(node) if isinstance(n, ast.Attribute) and n.attr in MARKERS
            and isinstance(n.value, ast.Attribute) and n.value.attr == "mark"}


def file_markers(path: Path) -> set[str]:
    """The markers of a test file's module-level `pytestmark`."""
    tree = ast.parse(path.read_text())
    return _pytest_markers(node.value for node in tree.body if isinstance(node, ast.Assign)
                           and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets))


TEST_FILES = sorted((ROOT / "tests").glob("test_*.py"))


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_every_test_file_carries_its_markers_at_module_level_and_no_test_its_own(path: Path):
    assert file_markers(path) in MARKER_SETS, f"{path.name}: pytestmark names {sorted(file_markers(path))}"
    tree = ast.parse(path.read_text())
    own = [f.name for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
           and _pytest_markers(f.decorator_list)]
    assert not own, f"{path.name}: {own} mark themselves; a file's tests share its marker (docs/testing.md)"


def test_the_table_of_test_files_is_the_files_with_their_markers():
    documented = {}
    for files, _covers, needs in _table(ROOT / "docs" / "testing.md", "| file | what it covers | marker: needs |"):
        markers = set(re.findall(r"`(\w+)`", needs.split(":", 1)[0]))
        for name in re.findall(r"`(test_\w+\.py)`", files):
            assert name not in documented, f"{name} stands twice in docs/testing.md"
            documented[name] = markers
    assert documented == {path.name: file_markers(path) for path in TEST_FILES}


def _layout() -> list[str]:
    """The lines of the code block under `## Layout` in docs/architecture.md."""
    section = (ROOT / "docs" / "architecture.md").read_text().split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1].splitlines()[1:]


def layout_paths(lines: list[str]) -> set[Path]:
    """Every path the layout names: each entry (a top-level one at column 0, one inside it at column 2), and each
    `name.py` in an entry's description, inside the entry when it is a folder, beside it when it is a file (a
    name with a slash is from the repository root)."""
    paths, top, base = set(), ROOT, ROOT
    for line in lines:
        if not line.strip():
            continue
        indent, text = len(line) - len(line.lstrip()), line.strip()
        if indent in (0, 2):
            name, _, text = text.partition(" ")
            entry = (ROOT if indent == 0 else top) / name
            paths.add(entry)
            if indent == 0:
                top = entry
            base = entry if name.endswith("/") else entry.parent
        paths |= {ROOT / name if "/" in name else base / name for name in re.findall(r"[\w/]*\w\.py\b", text)}
    return paths


def test_the_layout_in_architecture_md_is_the_tree():
    """Every path the layout lists exists, and it lists every module and package of the three packages."""
    listed = layout_paths(_layout())
    missing = sorted(str(p.relative_to(ROOT)) for p in listed if not p.exists())
    assert not missing, f"docs/architecture.md lists paths that do not exist: {missing}"
    code = [p for pkg in ("actors", "serve_app", "councils_local") for p in (ROOT / pkg).rglob("*.py")]
    wanted = {p for p in code if p.name != "__init__.py"} | {p.parent for p in code if p.name == "__init__.py"}
    unlisted = sorted(str(p.relative_to(ROOT)) for p in wanted - listed)
    assert not unlisted, f"docs/architecture.md's layout does not list: {unlisted}"


def test_the_layout_reader_sees_entries_descriptions_and_folders():
    lines = ["pkg/        a package", "  sub/         a folder: a.py (x), b.py", "                 c.py, top/d.py",
             "  e.py         a module; f.py  beside it"]
    assert layout_paths(lines) == {ROOT / p for p in ("pkg", "pkg/sub", "pkg/sub/a.py", "pkg/sub/b.py", "pkg/sub/c.py",
                                                      "top/d.py", "pkg/e.py", "pkg/f.py")}


def _amount(text: str) -> int | str:
    """A table cell as a number ("100 000", "256 KiB", "16 MiB"), or the text in its backticks."""
    text = text.strip()
    if text.startswith("`"):
        return text.strip("`")
    number, _, unit = text.partition(" ")
    return int(number) * {"KiB": 1024, "MiB": 1024 ** 2}[unit] if unit in ("KiB", "MiB") else int(text.replace(" ", ""))


def test_the_limits_table_in_api_md_is_the_limits_model():
    from actors.models.limits import Limits

    rows = _table(ROOT / "docs" / "api.md", "| limit | what it bounds | default | hard ceiling | over it |")
    documented = {name.strip("`"): (_amount(default), ceiling) for name, _bounds, default, ceiling, _over in rows}
    assert set(documented) == set(Limits.model_fields)
    for name, field in Limits.model_fields.items():
        ceiling = next((m.le for m in field.metadata if hasattr(m, "le")), None)
        assert documented[name][0] == field.default, name
        assert (_amount(documented[name][1]) if ceiling is not None else documented[name][1]) == (ceiling or "—"), name


def test_the_app_config_table_in_operations_md_is_every_field():
    from actors.models.config import AppConfig

    rows = _table(ROOT / "docs" / "operations.md", "| field | meaning |")
    assert sorted(name.strip("`") for name, _meaning in rows) == sorted(AppConfig.model_fields)
