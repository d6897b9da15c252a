"""Fenced code blocks in a proposal, and which language each one is in.

A block is checked by the verifier of its language. The language comes from the fence's tag (aliases
below); an untagged block is recognised by its content (JSON, a Kubernetes/YAML document, a Dockerfile,
SQL, a shell script with a shebang or `$ ` prompts), and otherwise taken as code of the first of python,
shell among the enabled verifiers: an untagged block that is no known language then fails that
language's parse check (its message says to tag it) instead of passing unseen. Blocks tagged as
non-code (text, output, console...) or with a language no verifier knows are not checked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")

LANGUAGE_TAGS: dict[str, frozenset[str]] = {
    "python": frozenset({"python", "py", "python3", "py3"}),
    "shell": frozenset({"sh", "bash", "shell", "zsh", "ksh", "dash"}),
    "json": frozenset({"json"}),
    "yaml": frozenset({"yaml", "yml"}),
    "dockerfile": frozenset({"dockerfile", "docker", "containerfile"}),
    "sql": frozenset({"sql", "sqlite", "sqlite3", "postgres", "postgresql", "psql", "mysql", "tsql", "mssql"}),
}
_TAG_LANGUAGE = {tag: lang for lang, tags in LANGUAGE_TAGS.items() for tag in tags}
UNTAGGED_FALLBACK = ("python", "shell")

_YAML_LINE = re.compile(r"^\s*(?:-\s|-$|[\w.\-/\"']+:(?:\s|$)|#|---)")
_SQL_START = re.compile(r"^(?:SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(?:TABLE|VIEW|INDEX|UNIQUE"
                        r"|TEMP)|DROP\s+(?:TABLE|VIEW|INDEX)|ALTER\s+TABLE|WITH\s+(?:RECURSIVE\s+)?\w+(?:\s*\([^)]*\))?"
                        r"\s+AS\s*\()\b", re.IGNORECASE)
_SHELL_START = re.compile(r"^(?:#!\S*\b(?:ba|z|k|da)?sh\b|\$ \S)")


@dataclass(frozen=True)
class CodeBlock:
    lang: str  # lowercased first word of the info string, "" when untagged
    code: str
    line: int  # 1-based line of the opening fence
    closed: bool


def extract_code_blocks(text: str) -> list[CodeBlock]:
    """Fenced blocks (``` or ~~~). An unclosed fence runs to the end of the text, as in CommonMark:
    a model cut off by max_tokens leaves one, and its truncated code should be checked, not ignored."""
    blocks: list[CodeBlock] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m or (m.group(1)[0] == "`" and "`" in m.group(2)):
            i += 1
            continue
        fence, info = m.group(1), m.group(2).strip()
        lang = info.split()[0].lower().strip("{}.") if info else ""
        start = i
        body: list[str] = []
        i += 1
        closed = False
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                closed = True
                break
            body.append(lines[i])
            i += 1
        blocks.append(CodeBlock(lang=lang, code="\n".join(body), line=start + 1, closed=closed))
        i += 1
    return blocks


def language_of(block: CodeBlock, enabled: frozenset[str] | set[str]) -> str | None:
    """The verifier language of a block (a key of LANGUAGE_TAGS), or None when no verifier checks it."""
    if block.lang:
        return _TAG_LANGUAGE.get(block.lang)
    return _guess(block.code) or next((lang for lang in UNTAGGED_FALLBACK if lang in enabled), None)


def blocks_in(content: str, language: str, enabled: frozenset[str] | set[str]) -> list[CodeBlock]:
    """The blocks of `content` in `language`, in order."""
    return [b for b in extract_code_blocks(content) if language_of(b, enabled) == language]


def _guess(code: str) -> str | None:
    lines = [line for line in code.splitlines() if line.strip()]
    if not lines:
        return None
    first = next((line.strip() for line in lines if not line.lstrip().startswith("#")), lines[0].strip())
    if first[:1] in "{[":
        try:
            json.loads(code)
            return "json"
        except ValueError:
            pass
    if _SHELL_START.match(lines[0].strip()):
        return "shell"
    if re.match(r"^(?:FROM|ARG)\s+\S", first) and any(re.match(r"^FROM\s+\S", line) for line in lines):
        return "dockerfile"
    if re.match(r"^(?:apiVersion|kind):\s*\S", first) or (len(lines) >= 2 and all(_YAML_LINE.match(x) for x in lines)):
        return "yaml"
    if _SQL_START.match(first):
        return "sql"
    return None
