"""What every verifier shares: its input (`Job`) and how it reports a check (`Job.check`).

Weights: a check weighs `scoring.weights[name]` when the council sets it, else DEFAULT_WEIGHTS[name],
else 1. Checks against the task's own spec (tests, schemas) weigh more than parse and lint checks:
an artifact that does what was asked beats one that merely parses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..models.councils import ScoringSpec
from ..models.records import CheckResult, CheckStatus
from ..models.requests import Constraints
from .blocks import CodeBlock, blocks_in
from .sandbox import SandboxResult, run_sandboxed

MAX_MESSAGE_CHARS = 300
DEFAULT_WEIGHTS: dict[str, float] = {
    "python.tests": 5.0,
    "sql.execute": 3.0,
    "json.schema": 3.0,
    "kubernetes.schema": 2.0,
}


def short(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line, at most `limit` characters."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def events(stdout: str, nonce: str) -> list[dict]:
    """The result lines a sandboxed runner wrote ("<nonce>{json}"); anything else is the code's output."""
    found = []
    for line in stdout.splitlines():
        if line.startswith(nonce):
            try:
                found.append(json.loads(line[len(nonce):]))
            except ValueError:  # cut off by a kill
                continue
    return found


@dataclass
class Job:
    """One proposal to verify, and the checks reported on it so far."""

    content: str
    task: str
    constraints: Constraints
    scoring: ScoringSpec
    enabled: frozenset[str]  # the verifiers that run on it: untagged blocks are guessed among them
    allow_unisolated: bool = False  # the operator's verification.allow_unisolated_sandbox
    examples: list[str] = field(default_factory=list)  # asserts agents wrote for the task (behaviour.py)
    results: list[CheckResult] = field(default_factory=list)

    def sandbox(self, argv: list[str], files: dict[str, str], **options) -> SandboxResult:
        """Run a command in the sandbox under this job's isolation policy (sandbox.run_sandboxed)."""
        return run_sandboxed(argv, files, allow_unisolated=self.allow_unisolated, **options)

    def blocks(self, language: str) -> list[CodeBlock]:
        return blocks_in(self.content, language, self.enabled)

    def check(self, name: str, status: CheckStatus, message: str, *, tests: tuple[int, int] | None = None,
              duration_s: float | None = None) -> CheckResult:
        result = CheckResult(
            name=name, status=status, message=short(message),
            weight=self.scoring.weights.get(name, DEFAULT_WEIGHTS.get(name, 1.0)),
            tests_passed=tests[0] if tests else None, tests_total=tests[1] if tests else None,
            duration_s=None if duration_s is None else round(duration_s, 4))
        self.results.append(result)
        return result
