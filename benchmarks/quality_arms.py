"""The arms of the quality benchmark, the task families and how each arm's answer is picked and graded.

Families (one task file gives the first two):
  python_tests    the Python function task with its visible tests as `constraints.tests` (the verifiers run them);
  python_notests  the same task with the prompt only; the hidden tests still grade the final answer;
  exact           exact-answer tasks (`constraints.answer_format: integer`).
Arms, each the real protocol (actors/protocol.py) with the real verifiers on the same engine:
  single            one agent, one draft, no rounds: its answer;
  council           the council `make run` ships (configs/local.yaml, default_councils: its agents, drafts_per_agent,
                    rounds, max_tokens), for DEV on the Python families and for EXACT_ROLE on exact answers;
  self_consistency  N independent samples (an N-agent council of the same role: one draft each, no rounds, no peer
                    ranking), N as many as fit in the council's total tokens on that task; its answer is picked
                    here, not by the council's rule: with visible tests the first sample that passes them, without
                    tests the largest behaviour group (generated.behaviour_agreement digests, weighed by
                    scoring.agree: size × (1 + share of the written asserts held), its council running the same
                    test-writing step) on the same generated inputs (verifiers/behaviour.py), on exact answers
                    the majority answer.
Every arm's agents carry make run's seeds, offset per repetition (REP_SEED_STRIDE), so a repetition is a fresh,
reproducible draw.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .common import ROOT, NullSink
from .quality_tasks import extract_code, grade_exact, grade_python

FAMILIES = ("python_tests", "python_notests", "exact")
ARMS = ("single", "self_consistency", "council")
ARM_NAMES = {"single": "one agent", "self_consistency": "self-consistency (equal tokens)", "council": "council"}
FAMILY_NAMES = {"python_tests": "Python, visible tests", "python_notests": "Python, no visible tests",
                "exact": "exact answers"}
CODE_ROLE = "DEV"
# make run ships no MATH role: exact answers go to the shipped role whose work is figures, DATA. Its verifiers
# (content, sql, python, json) skip a plain-text answer; an exact answer_format makes it a non-code task.
EXACT_ROLE = "DATA"
REP_SEED_STRIDE = 100_003  # added to every agent's seed per repetition (beyond the protocol's stage offsets)
TIMEOUT_S = 3600


@dataclass(frozen=True)
class Shape:
    """A council's shape: what default_councils in a config says."""

    agents: int
    rounds: int
    drafts: int
    max_tokens: int
    engine: str
    source: str  # where it was read from

    def as_dict(self) -> dict:
        return {"agents": self.agents, "rounds": self.rounds, "drafts": self.drafts, "max_tokens": self.max_tokens,
                "engine": self.engine, "source": self.source}


def shipped_shape(config: Path = ROOT / "configs" / "local.yaml") -> Shape:
    """The default councils of `make run`'s config (read, not hard-coded), through the typed config model."""
    import yaml

    from actors.models.config import DefaultCouncils

    raw = yaml.safe_load(config.read_text())["applications"][0]["args"]["default_councils"]
    d = DefaultCouncils.model_validate(raw)
    return Shape(agents=d.agents_per_council, rounds=d.rounds, drafts=d.drafts_per_agent, max_tokens=d.max_tokens,
                 engine=d.engine, source=str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config))


def role_for(family: str) -> str:
    return EXACT_ROLE if family == "exact" else CODE_ROLE


def council_for(arm: str, family: str, shape: Shape, rep: int, n_samples: int = 1):
    """The council spec of an arm: the council arm exactly as serve_app/declarative.py creates the default
    councils (default scoring); single and self-consistency as 1 or N agents of the same role, one draft, no
    rounds, no peer ranking. Seeds offset by the repetition."""
    from actors.models.councils import ScoringSpec, default_council

    role = role_for(family)
    if arm == "council":
        spec = default_council(role, shape.engine, shape.agents, shape.rounds, shape.max_tokens, shape.drafts)
    else:
        spec = default_council(role, shape.engine, n_agents=1 if arm == "single" else n_samples, rounds=0,
                               max_tokens=shape.max_tokens, drafts=1)
        spec.scoring = ScoringSpec(peer_rank="never")
    return spec.model_copy(update={"agents": [a.model_copy(update={"seed": a.seed + REP_SEED_STRIDE * rep})
                                              for a in spec.agents]})


def request_for(task: dict, family: str):
    from actors.models.requests import DeliberationRequest

    constraints: dict = {"timeout_s": TIMEOUT_S}
    if family == "python_tests":
        constraints["tests"] = task["tests"]
    elif family == "exact":
        constraints["answer_format"] = task["answer_format"]
    return DeliberationRequest.model_validate({"role": role_for(family), "task": task["task"],
                                               "constraints": constraints})


def task_inputs(task: dict) -> bool:
    """Whether the task's own text gives the function and inputs to call every candidate with
    (verifiers/behaviour.py: the same generated inputs for every candidate, not each candidate's own)."""
    from actors.verifiers.behaviour import inputs_for

    return inputs_for(task["task"], "") is not None


# ---------------------------------------------------------------- self-consistency's picks (pure)


def first_passing(versions) -> int:
    """With visible tests: the first sample that passes them all; none does: the first with the largest share."""
    from actors.scoring import tests_of

    def share(v) -> float:
        t = tests_of(v.checks)
        return t[0] / t[1] if t else 0.0
    passing = [i for i, v in enumerate(versions) if (t := tests_of(v.checks)) and t[0] == t[1]]
    if passing:
        return passing[0]
    best = max((share(v) for v in versions), default=0.0)
    return next(i for i, v in enumerate(versions) if share(v) == best)


def behaviour_majority_pick(versions) -> int:
    """Without tests: a sample of the largest behaviour group (scoring.agree sizes each group over the pool), the
    first of it in sample order; no sample ran: the first sample."""
    from actors.scoring import BEHAVIOUR_CHECK, agree

    agree(versions)
    sizes = [max((c.evidence or 0.0 for c in v.checks if c.name == BEHAVIOUR_CHECK and c.group), default=0.0)
             for v in versions]
    best = max(sizes, default=0.0)
    return sizes.index(best) if best > 0 else 0


def majority_answer_pick(versions) -> int:
    """Exact answers: the first sample giving the most frequent answer (ties: the answer given first)."""
    answers = [v.answer for v in versions]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 0
    top = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == top)
    return answers.index(winner)


PICKS = {"python_tests": first_passing, "python_notests": behaviour_majority_pick, "exact": majority_answer_pick}


# ---------------------------------------------------------------- one attempt


class Grader:
    """Hidden-test / exact grading, cached per (task, text): pools repeat texts."""

    def __init__(self):
        self.cache: dict[tuple[str, str], bool] = {}

    async def __call__(self, text: str, task: dict, family: str) -> bool:
        key = (task["id"], hashlib.sha256(text.encode()).hexdigest())
        if key not in self.cache:
            if family == "exact":
                self.cache[key] = grade_exact(text, task)
            else:
                self.cache[key] = await asyncio.to_thread(grade_python, extract_code(text), task)
        return self.cache[key]


async def attempt(gen, verifier, grader: Grader, arm: str, family: str, task: dict, council, rep: int,
                  sem: asyncio.Semaphore) -> dict:
    """One arm on one task: the deliberation, its pick, and the pool graded (hidden tests or the exact answer)."""
    from actors.models.records import DeliberationRecord
    from actors.protocol import deliberate

    async with sem:
        record = DeliberationRecord(request=request_for(task, family))
        t0 = time.perf_counter()
        try:
            await deliberate(record, council, gen, NullSink(), verifier)
        except Exception as e:  # a failed deliberation is a failed attempt, on the page; the run goes on
            return {"id": task["id"], "family": family, "arm": arm, "rep": rep, "correct": False, "oracle": False,
                    "pool": 0, "pool_correct": 0, "decided_by": "error", "agents": len(council.agents), "drafts": 0,
                    "tokens": sum(p.usage.total_tokens for p in record.proposals), "completion_tokens": 0,
                    "wall_s": round(time.perf_counter() - t0, 2), "stages": list(record.stages_done),
                    "skipped": list(record.stages_skipped), "stage_tokens": _stage_tokens(record), "winner": "",
                    "error": f"{type(e).__name__}: {e}"[:300]}
        wall = time.perf_counter() - t0
    result = record.result
    if arm == "self_consistency":  # every sample, in seat (sample) order
        pool = [v for p in sorted(result.proposals, key=lambda p: p.author) for v in p.versions]
        picked, decided = pool[PICKS[family](pool)].content, {"python_tests": "first_passing",
                                                            "python_notests": "behaviour_majority",
                                                            "exact": "majority_answer"}[family]
    else:
        pool = [v for p in result.proposals for v in p.versions]
        picked, decided = result.proposals[0].content, result.decided_by
    graded = [await grader(v.content, task, family) for v in pool]
    return {"id": task["id"], "family": family, "arm": arm, "rep": rep, "correct": await grader(picked, task, family),
            "oracle": any(graded), "pool": len(pool), "pool_correct": sum(graded), "decided_by": decided,
            "agents": len(council.agents),
            "drafts": sum(1 for v in pool if v.round == 0), "tokens": result.usage.total_tokens,
            "completion_tokens": result.usage.completion_tokens, "wall_s": round(wall, 2),
            "stages": list(record.stages_done), "skipped": list(record.stages_skipped),
            "stage_tokens": _stage_tokens(record), "winner": picked[:600]}


def _stage_tokens(record) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in record.timings:
        kind = t.stage.split("-")[0]
        out[kind] = out.get(kind, 0) + t.prompt_tokens + t.completion_tokens
    return out
