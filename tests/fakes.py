"""In-process stand-ins for the protocol's ports: a deterministic generator and a memory sink.

Test-only: never a default anywhere in the project.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import re
from typing import Any, Callable

from actors.models.records import CheckResult, Completion, DeliberationRecord

Responder = Callable[..., str]  # (messages, seed) or, for rankings, (messages, seed, json_schema)


def requirements_in(prompt: str) -> list[str]:
    """The "- item" lines of a prompt's "Requirements:" section."""
    lines = prompt.splitlines()
    if "Requirements:" not in lines:
        return []
    out = []
    for line in lines[lines.index("Requirements:") + 1 :]:
        if not line.startswith("- "):
            break
        out.append(line[2:])
    return out


def default_response(messages: list[dict[str, str]], seed: int | None, json_schema: dict | None = None) -> str:
    """Text that depends only on the messages and the seed, shaped by the persona so that
    scores differ: "pragmatic" agents answer well, "meticulous" ones miss requirements,
    everyone else writes a Python block that does not parse. A ranking (json_schema given) lists
    the labels in reverse order, as structured outputs would constrain it to."""
    digest = hashlib.sha256(json.dumps([messages, seed], sort_keys=True).encode()).hexdigest()[:8]
    if json_schema is not None and "choices" in json_schema["properties"]:  # a judgement: the first output each time
        return json.dumps({"choices": ["X"] * json_schema["properties"]["choices"]["minItems"]})
    if json_schema is not None:
        shown = json_schema["properties"]["ranking"]["items"]["enum"]
        return json.dumps({"ranking": list(reversed(shown))})
    system, user = messages[0]["content"], messages[-1]["content"]
    if "\nCandidates:\n" in user and '"choice"' in user:
        return architect_response(user)
    reqs = requirements_in(system) or requirements_in(user)
    persona = user.split("\n\n", 1)[0] if len(messages) > 1 else system
    if "pragmatic" in persona:
        items = "\n".join(f"- {r}" for r in reqs) or "- keep it simple"
        return f"Plan {digest}:\n{items}\n\n```python\ndef solve():\n    return {digest!r}\n```\n"
    if "meticulous" in persona:
        return f'Plan {digest}:\n- edge cases first\n\n```json\n{{"plan": "{digest}"}}\n```\n'
    return f"Plan {digest}: one quick idea.\n```python\ndef broken(:\n    pass\n```\n"


# A task containing this makes the fake architect answer prose instead of its JSON choice.
UNPARSEABLE_ARCHITECT = "[architect answers prose]"


def architect_response(user: str) -> str:
    """The architect prompt of actors/orchestrate.py: a valid choice of the *last* candidate, so a
    test sees the architect overrule the ranking; prose when the task asks for it (fallback path)."""
    numbers = re.findall(r"^Candidate (\d+) \(", user, re.MULTILINE)
    if UNPARSEABLE_ARCHITECT in user or not numbers:
        return "I would go with the second candidate, it looks the most complete."
    return json.dumps({"choice": int(numbers[-1]), "reason": f"candidate {numbers[-1]} is the most thorough"})


class FakeGenerator:
    """Deterministic Generator. Records every call and the peak number of calls in flight.

    fail_on / block_on: the Nth call (1-based) raises RuntimeError / waits until cancelled.
    """

    def __init__(
        self,
        responder: Responder = default_response,
        *,
        fail_on: int | None = None,
        block_on: int | None = None,
        delay: float = 0.0,
    ) -> None:
        self.responder = responder
        self.fail_on = fail_on
        self.block_on = block_on
        self.delay = delay
        self.calls: list[dict[str, Any]] = []
        self.completions: list[Completion] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cancelled = 0

    async def generate(
        self,
        engine: str,
        messages: list[dict[str, str]],
        *,
        temperature: float,
        max_tokens: int,
        seed: int | None,
        json_schema: dict | None = None,
    ) -> Completion:
        self.calls.append(
            {"engine": engine, "messages": messages, "temperature": temperature, "max_tokens": max_tokens, "seed": seed,
             "json_schema": json_schema}
        )
        n = len(self.calls)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            # Yield once so every call of a gather is in flight before any finishes.
            await asyncio.sleep(self.delay)
            if n == self.block_on:
                await asyncio.Event().wait()
            if n == self.fail_on:
                raise RuntimeError(f"fake engine failure on call {n}")
            # Responders that do not rank take (messages, seed).
            text = self.responder(messages, seed, json_schema) if json_schema else self.responder(messages, seed)
            completion = Completion(
                text=text,
                prompt_tokens=sum(len(m["content"].split()) for m in messages),
                completion_tokens=len(text.split()),
                finish_reason="stop",
            )
            self.completions.append(completion)
            return completion
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


class MemorySink:
    """RecordSink that keeps deep copies of every checkpoint and event, in order.

    fail_on_checkpoint: the Nth checkpoint (1-based) raises, as a store outage would.
    """

    def __init__(self, *, fail_on_checkpoint: int | None = None) -> None:
        self.fail_on_checkpoint = fail_on_checkpoint
        self.checkpoints: list[DeliberationRecord] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.log: list[str] = []  # "checkpoint" and event kinds, interleaved as they happened

    async def checkpoint(self, record: DeliberationRecord) -> None:
        if len(self.checkpoints) + 1 == self.fail_on_checkpoint:
            self.fail_on_checkpoint = None
            raise ConnectionError("fake store unavailable")
        self.checkpoints.append(record.model_copy(deep=True))
        self.log.append("checkpoint")

    async def event(self, record: DeliberationRecord, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, copy.deepcopy(data)))
        self.log.append(kind)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]

    def last_checkpoint_after(self, stage: str) -> DeliberationRecord:
        """The checkpoint written right after `stage` finished."""
        for rec in self.checkpoints:
            if rec.stages_done and rec.stages_done[-1] == stage:
                return rec.model_copy(deep=True)
        raise LookupError(f"no checkpoint after {stage}")


def fake_checks(text: str, request) -> list[CheckResult]:
    """Deterministic checks standing in for the real verifiers (actors/verifiers): content is there,
    Python blocks parse, and constraints.tests (assert lines) pass when exec'd with the code (trusted
    test input only: this never runs model output from a real engine)."""
    import ast

    from actors.verifiers.blocks import extract_code_blocks

    checks = [CheckResult(name="content.non_empty", status="passed" if text.strip() else "failed",
                          message=f"{len(text.strip())} chars")]
    code = [b.code for b in extract_code_blocks(text) if b.lang in ("python", "py")]
    if not code:
        checks.append(CheckResult(name="python.parse", status="skipped", message="no Python code block"))
    else:
        try:
            for c in code:
                ast.parse(c)
            checks.append(CheckResult(name="python.parse", status="passed", message=f"{len(code)} block(s) parse"))
        except SyntaxError as exc:
            checks.append(CheckResult(name="python.parse", status="failed", message=f"SyntaxError: {exc.msg}"))
    tests = request.constraints.tests
    if tests:
        lines = [line for line in tests.splitlines() if line.strip()]
        passed = 0
        for line in lines:
            scope: dict = {}
            try:
                exec("\n".join(code), scope)
                exec(line, scope)
                passed += 1
            except Exception:
                pass
        checks.append(CheckResult(name="python.tests", status="passed" if code and passed == len(lines) else "failed",
                                  message=f"{passed}/{len(lines)} tests passed", tests_passed=passed,
                                  tests_total=len(lines), weight=5.0))
    return checks


class FakeVerifier:
    """The protocol's Verifier port on fake_checks; records every call."""

    def __init__(self, checks=fake_checks, delay: float = 0.0):
        self.checks = checks
        self.delay = delay
        self.calls: list[list[str]] = []

    async def verify(self, texts, request, names, scoring, examples=None) -> list[list[CheckResult]]:
        self.calls.append(list(texts))
        await asyncio.sleep(self.delay)
        return [self.checks(t, request) for t in texts]


def drafted(proposal: dict):
    """A proposal of a deliberation's result as it stood after the propose stage: its drafts (round-0
    versions), standing for the best-verified one."""
    from actors.scoring import best_version
    from actors.models.records import Proposal, Version

    versions = [Version.model_validate(v) for v in proposal["versions"] if v["round"] == 0]
    best = best_version(versions)
    return Proposal(author=proposal["author"], content=versions[best].content, versions=versions, chosen=best,
                    checks=versions[best].checks)
