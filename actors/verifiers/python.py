"""Python blocks: python.parse (ast), python.lint (ruff: syntax errors, undefined names, broken
comparisons) and python.tests (constraints.tests run against the code, in the sandbox).

The code under lint and test is every Python block that parses, in order (later definitions win):
a proposal often splits its answer over blocks, and a block that does not parse already fails
python.parse. Tests see the code's names directly, or import them `from solution import ...`.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from . import behaviour, py_tests
from .base import Job
from .blocks import CodeBlock
from .isolation import tool
from .sandbox import SandboxLimits

RUFF_RULES = "E9,F63,F7,F82"
TEST_LIMITS = SandboxLimits(output_bytes=256 * 1024)  # one result line per test
RUNNER_SOURCE = Path(__file__).with_name("py_runner.py").read_text(encoding="utf-8")


def verify(job: Job) -> None:
    blocks = job.blocks("python")
    parsed, errors = [], []
    for b in blocks:
        error = _parse_error(b)
        if error:
            errors.append(f"{'untagged ' if not b.lang else ''}block at line {b.line}: {error}")
        else:
            parsed.append(b)
    if not blocks:
        job.check("python.parse", "skipped", "no Python code block")
    elif errors:
        hint = " (tag a block that is not Python with its language, or `text`)" if "untagged" in errors[0] else ""
        job.check("python.parse", "failed", f"{len(errors)} of {len(blocks)} block(s) do not parse: {errors[0]}{hint}")
    else:
        job.check("python.parse", "passed", f"{len(blocks)} Python block(s) parse")
    _lint(job, parsed)
    _tests(job, parsed)


def _parse_error(block: CodeBlock) -> str | None:
    if not block.code.strip():
        return "empty"
    try:
        ast.parse(block.code)
    except SyntaxError as e:
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _joined(blocks: list[CodeBlock]) -> tuple[str, list[tuple[int, CodeBlock]]]:
    """The blocks as one program, and (first line in it, block) for each."""
    lines, starts = [], []
    for b in blocks:
        starts.append((len(lines) + 1, b))
        lines += b.code.splitlines() + [""]
    return "\n".join(lines), starts


def _lint(job: Job, blocks: list[CodeBlock]) -> None:
    if not blocks:
        job.check("python.lint", "skipped", "no Python code that parses")
        return
    source, starts = _joined(blocks)
    r = job.sandbox([tool("ruff") or "ruff", "check", "--isolated", "--no-cache", "--select", RUFF_RULES,
                       "--output-format", "json", "--stdin-filename", "solution.py", "-"], {}, stdin=source)
    try:
        findings = json.loads(r.stdout)
    except ValueError:
        job.check("python.lint", "failed", f"ruff did not run: {r.message}: {r.stderr[-200:]}", duration_s=r.duration_s)
        return
    if not findings:
        job.check("python.lint", "passed", f"ruff {RUFF_RULES}: no error", duration_s=r.duration_s)
        return
    first = findings[0]
    row = first["location"]["row"]
    start, block = max((s for s in starts if s[0] <= row), key=lambda s: s[0])
    job.check("python.lint", "failed",
              f"{len(findings)} error(s); block at line {block.line}, line {row - start + 1}: "
              f"{first['code']} {first['message']}", duration_s=r.duration_s)


def _tests(job: Job, blocks: list[CodeBlock]) -> None:
    tests = job.constraints.tests
    if not tests or not tests.strip():
        job.check("python.tests", "skipped", "no tests in constraints.tests")
        if blocks:  # evidence from running the code on generated inputs instead
            behaviour.run(job, blocks, RUNNER_SOURCE)
        return
    try:
        test_plan = py_tests.plan(tests)
    except SyntaxError as e:
        job.check("python.tests", "skipped", f"constraints.tests do not parse: SyntaxError: {e.msg} (line {e.lineno})")
        return
    except (ValueError, RecursionError, MemoryError) as e:
        job.check("python.tests", "skipped", f"constraints.tests do not parse: {type(e).__name__}: {e}")
        return
    labels = test_plan.labels
    if not labels:
        job.check("python.tests", "skipped", "constraints.tests hold no assert, >>> example or test function")
        return
    if not blocks:
        job.check("python.tests", "failed", "no Python code block to test", tests=(0, len(labels)))
        return
    payload = {"blocks": [[b.line, b.code] for b in blocks], **test_plan.job}
    r = job.sandbox([sys.executable, "-I", "-B", "runner.py"],
                    {"runner.py": RUNNER_SOURCE, "job.json": json.dumps(payload)}, limits=TEST_LIMITS)
    v = py_tests.verdict(test_plan, r.stdout)
    passed = sum(v.passed)
    problems = [f"tests setup failed: {m}" for m in v.setup]
    failed = next((i for i, ok in enumerate(v.passed) if not ok), None)
    if failed is not None:
        why = v.messages[failed] if v.messages[failed] != "no result" or v.finished else _unfinished(r)
        problems.append(f"first failure: {labels[failed][:100]}: {why}")
        problems += [f"code raised: {m}" for m in v.code]
    status = "passed" if passed == len(labels) and not problems else "failed"
    job.check("python.tests", status, "; ".join([f"{passed}/{len(labels)} tests passed", *problems]),
              tests=(passed, len(labels)), duration_s=r.duration_s)


def _unfinished(r) -> str:
    """Why a test has no result: the run ended before it."""
    if r.status != "ok":
        return f"did not finish: {r.message}"
    return f"did not finish: the test run {r.message}: {r.stderr.strip()[-200:]}"
