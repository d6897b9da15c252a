"""The check suite that scores a proposal, and the ranking of proposals.

Plain functions on text: no engine, no I/O, so a score can be recomputed anywhere.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

import yaml

from .specs import CheckResult, Proposal, ScoringSpec

CHECK_NAMES = ("non_empty", "within_limits", "code_blocks_parse", "requirements_addressed", "structured")

# Share of a requirement's significant words that must appear in the text for it to count as addressed.
REQUIREMENT_COVERAGE = 0.5
MAX_MESSAGE_CHARS = 300

# Words too common to tell whether a requirement is addressed.
STOPWORDS = frozenset(
    """
    a an the and or but if then else of to in on at by for with from into onto over under as is are was were be
    been being it its this that these those there their they them we our you your he she his her not no nor so
    too very can could should would will shall may might must do does did done have has had having also such
    than only each every all any both either neither some more most other same use used using make makes made
    which what when where while who whom whose why how about above after again against before below between
    during through until upon within without just like need needs please ensure sure provide provides
    """.split()
)

PYTHON_TAGS = frozenset({"python", "py", "python3", "py3"})
JSON_TAGS = frozenset({"json"})
YAML_TAGS = frozenset({"yaml", "yml"})

_WORD = re.compile(r"[a-z0-9]+")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_LIST_OR_HEADING = re.compile(r"^\s*(?:[-*+]\s+\S|\d+[.)]\s+\S|#{1,6}\s+\S)")


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


def _parse_error(block: CodeBlock) -> str | None:
    """Why the block does not parse, or None if it does (or is not a language we check)."""
    try:
        if block.lang in PYTHON_TAGS:
            ast.parse(block.code)
        elif block.lang in JSON_TAGS:
            json.loads(block.code)
        elif block.lang in YAML_TAGS:
            list(yaml.safe_load_all(block.code))
    except SyntaxError as e:
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError, yaml.YAMLError) as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())}"
    return None


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _significant_words(requirement: str) -> list[str]:
    words = [w for w in _words(requirement) if w not in STOPWORDS]
    long = [w for w in words if len(w) >= 4]
    # "Use Go" has no long word; fall back to the short ones rather than calling it addressed.
    return list(dict.fromkeys(long or [w for w in words if len(w) >= 2]))


def _present(word: str, text_words: set[str]) -> bool:
    """A word is present when a word of the text shares its stem: all but its last three letters,
    at least four ("retries" ~ "retry", "validation" ~ "validate"). Short words must match exactly."""
    if word in text_words:
        return True
    if len(word) < 4:
        return False
    stem = word[: max(4, len(word) - 3)]
    return any(t.startswith(stem) for t in text_words)


def requirement_coverage(requirement: str, text: str) -> tuple[int, int]:
    """(significant words found in text, significant words)."""
    text_words = set(_words(text))
    words = _significant_words(requirement)
    return sum(_present(w, text_words) for w in words), len(words)


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def _check_non_empty(content: str, scoring: ScoringSpec) -> tuple[bool, str]:
    n = len(content.strip())
    return n >= scoring.min_chars, f"{n} non-blank chars (min {scoring.min_chars})"


def _check_within_limits(content: str, scoring: ScoringSpec) -> tuple[bool, str]:
    n = len(content)
    return n <= scoring.max_chars, f"{n} chars (max {scoring.max_chars})"


def _check_code_blocks(content: str) -> tuple[bool, str]:
    blocks = extract_code_blocks(content)
    if not blocks:
        return True, "no fenced code blocks (nothing to parse)"
    checked = 0
    for number, block in enumerate(blocks, 1):
        error = _parse_error(block)
        if error:
            unclosed = ", unclosed" if not block.closed else ""
            return False, f"block {number} ({block.lang or 'untagged'}, line {block.line}{unclosed}): {error}"
        checked += block.lang in PYTHON_TAGS | JSON_TAGS | YAML_TAGS
    skipped = len(blocks) - checked
    return True, f"{checked} code block(s) parse" + (f"; {skipped} untagged/other skipped" if skipped else "")


def _check_requirements(content: str, requirements: list[str]) -> tuple[bool, str]:
    if not requirements:
        return True, "no requirements given"
    missing = []
    for req in requirements:
        found, total = requirement_coverage(req, content)
        if total and found / total < REQUIREMENT_COVERAGE:
            missing.append(f"{req.strip()!r} ({found}/{total} key words)")
    if not missing:
        return True, f"all {len(requirements)} requirement(s) addressed"
    return False, f"missing {len(missing)} of {len(requirements)}: " + "; ".join(missing)


def _check_structured(content: str) -> tuple[bool, str]:
    lines = [line for line in content.splitlines() if line.strip()]
    if len(lines) >= 2:
        return True, f"{len(lines)} non-empty lines"
    if any(_LIST_OR_HEADING.match(line) for line in lines) or extract_code_blocks(content):
        return True, "has a list item, heading or code block"
    return False, "a single line of prose, no list, heading or code block"


def score_proposal(content: str, requirements: list[str], scoring: ScoringSpec) -> tuple[list[CheckResult], float]:
    """Run every check on one proposal; score = weighted share of passed checks, in [0, 1]."""
    outcomes = {
        "non_empty": _check_non_empty(content, scoring),
        "within_limits": _check_within_limits(content, scoring),
        "code_blocks_parse": _check_code_blocks(content),
        "requirements_addressed": _check_requirements(content, requirements),
        "structured": _check_structured(content),
    }
    checks = [
        CheckResult(name=name, passed=passed, message=_short(message), weight=scoring.weights.get(name, 1.0))
        for name, (passed, message) in outcomes.items()
    ]
    # A negative weight would push the score out of [0, 1]; it counts as 0.
    total = sum(max(c.weight, 0.0) for c in checks)
    if total <= 0:
        return checks, 0.0
    return checks, sum(max(c.weight, 0.0) for c in checks if c.passed) / total


def rank_proposals(proposals: list[Proposal]) -> list[Proposal]:
    """Proposals by score, best first, with rank 1..N set on them (in place).
    Ties keep their original order (sorted is stable), so ranking is deterministic."""
    ranked = sorted(proposals, key=lambda p: -(p.score if p.score is not None else float("-inf")))
    for rank, proposal in enumerate(ranked, 1):
        proposal.rank = rank
    return ranked
