"""The deliberation protocol (v2): propose (drafts, verified), `rounds` x (critique, revise, verify), rank, decide.

Plain async Python on three ports (ports.py): a Generator for completions, a Verifier that runs the
artifacts, and a RecordSink for checkpoints and events. The council actor hosts it; tests drive it
with in-process fakes.

Seats: seat i is agent i of the council (the first num_agents of them) and owns proposal i, whose
versions are its drafts (up to `drafts_per_agent`; with the request's tests, drawn in waves that stop
once a draft passes them) and the revisions of it. When the answer is code and the request has no tests, seat 0
also writes asserts for the task beside its first draft (the test-writing step, `test_messages`); every
candidate runs on their calls and on generated inputs (verifiers/behaviour.py), and scoring.agree weighs
behaviour groups by them.
In round k, seat i critiques proposal (i+1) mod N (the version it stands for; where a verifier failed,
its findings are the critique), then writes a revision of it. Every version is kept and stays a
candidate; a proposal stands for its best verified version (scoring.displaces).
Early stop: when a version passes the request's tests, or every proposal passes every verifier that
applied, the remaining critique/revise rounds are skipped (recorded in `stages_skipped`).
Rank: each agent ranks the other proposals, anonymized and shuffled per reviewer, with its answer
constrained to JSON by the engine; Borda count; by default only when the verifiers and votes leave
the top tied (see _skip). Decide: scoring.decide (user tests, running code and static checks, generated
evidence, votes, peer rank, stable tie-break; prose never outranks running code when the answer is code).
Model text placed in another prompt is fenced with the record's nonce.

Usage: Proposal.usage counts every generation made *for* that proposal (its drafts, the critique
aimed at it, its revision, the rankings by its author), so the proposals' usages add up to the
deliberation's usage.

Why one module of ~600 lines: it is the protocol read top to bottom, the prompts (~130 lines: fences, the
brief, the propose/critique/revise/rank messages and the ranking parser) then the stage runner and the five
stages (~360 lines); both halves share the seat ring, the nonce fences and the checkpoint-per-stage contract a
restarted council resumes from, so split, a reader would follow one stage across files. What can stand alone
already does: the decision rule and ranking (scoring.py), exact answers (answers.py), the verifiers
(verifiers/), the ports (ports.py) and the models (models/).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Awaitable, Callable

from . import answers
from .ports import Generator, RecordSink, Verifier
from .scoring import (agree, all_verified, answer_is_code, behaviour_group, behaviour_majority, best_version, decide,
                      displaces, distinguishing, judgement_points, rank_proposals, score_checks, settled, tests_of,
                      tied_groups, undecided)
from .models.councils import AgentSpec, CouncilSpec
from .models.records import (
    CheckResult,
    Completion,
    DeliberationRecord,
    DeliberationResult,
    Judgement,
    PeerRanking,
    Proposal,
    StageTiming,
    Usage,
    Version,
)
from .models.requests import Constraints, DeliberationRequest

# The default engine is a 135M model with a 2048-token context: bound every piece of a prompt.
PERSONA_CHARS = 500
TASK_CHARS = 1500
CONTEXT_CHARS = 8000  # about 2,000 tokens of code: what a 2048-token window can share with one short answer
RUBRIC_CHARS = 600
REQUIREMENTS_CHARS = 800
TESTS_CHARS = 800
PROPOSAL_CHARS = 1200
CRITIQUE_CHARS = 600
FINDINGS_CHARS = 600
RANKED_PROPOSAL_CHARS = 500
MAX_GENERATED_TESTS = 12  # assert lines kept from the test writer's answer
# A ranking is a short JSON list of labels.
RANK_TOKENS_BASE, RANK_TOKENS_PER_ITEM = 12, 6
JUDGE_TOKENS_BASE, JUDGE_TOKENS_PER_INPUT = 12, 4
JUDGED = ("X", "Y")  # the two outputs' labels in a judgement

# Seeds of later stages are offset so a revision does not replay the sampling of the proposal;
# drafts of one agent are offset within the propose stage (CEILING_DRAFTS * DRAFT_SEED_STRIDE < SEED_STRIDE).
SEED_STRIDE = 1009
DRAFT_SEED_STRIDE = 101

Clock = Callable[[], float]
Generate = Callable[..., Awaitable[Completion]]
Events = list[tuple[str, dict]]  # (kind, data) to publish once a stage's results are applied


class DeliberationTimeout(Exception):
    """The deliberation passed its deadline (created_at + constraints.timeout_s)."""


def stage_names(rounds: int) -> list[str]:
    """["propose", "critique-1", "revise-1", ..., "critique-R", "revise-R", "rank", "score"]."""
    stages = ["propose"]
    for k in range(1, rounds + 1):
        stages += [f"critique-{k}", f"revise-{k}"]
    return stages + ["rank", "score"]


def stage_seed(seed: int | None, stage_index: int, draft: int = 0) -> int | None:
    return None if seed is None else seed + SEED_STRIDE * stage_index + DRAFT_SEED_STRIDE * draft


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …[truncated]"


def fence(text: str, label: str, nonce: str, limit: int) -> str:
    """Model text inside a prompt, between markers carrying the deliberation's nonce. The nonce is
    removed from the text, so no model output can close the fence or forge another section."""
    body = _clip(text.replace(nonce, ""), limit)
    return f"<<<{label} {nonce}>>>\n{body}\n<<<END {label} {nonce}>>>"


# ---------------------------------------------------------------- prompts
# Layout for vLLM's prefix cache: the system message (the role and the shared brief) is the same
# for every agent and every stage of a deliberation; the persona and the stage's own part follow.


def _has_tests(request: DeliberationRequest) -> bool:
    return bool(request.constraints.tests and request.constraints.tests.strip())


def _brief(request: DeliberationRequest, nonce: str) -> str:
    """Task, context, rubric, requirements, tests, answer format: the part every prompt of a deliberation shares.
    The context (code or documents the caller pasted, which may hold text a model wrote) is fenced with the
    nonce like every proposal: it cannot close its fence and pose as the instructions that follow."""
    c = request.constraints
    parts = [f"Task:\n{_clip(request.task, TASK_CHARS)}"]
    if c.context.strip():
        parts.append(f"Context:\n{fence(c.context, 'CONTEXT', nonce, CONTEXT_CHARS)}")
    if c.rubric.strip():
        parts.append(f"Rubric:\n{_clip(c.rubric, RUBRIC_CHARS)}")
    if c.requirements:
        reqs = "\n".join(f"- {r.strip()}" for r in c.requirements)
        parts.append(f"Requirements:\n{_clip(reqs, REQUIREMENTS_CHARS)}")
    if _has_tests(request):
        parts.append(f"Tests the code must pass:\n```python\n{_clip(c.tests, TESTS_CHARS)}\n```")
    if c.answer_format:
        parts.append("End with the final answer alone on the last line.")
    return "\n\n".join(parts)


def system_prompt(role: str, request: DeliberationRequest, nonce: str) -> str:
    return f"You are a member of the {role} council; answer as that role.\n\n{_brief(request, nonce)}"


def _persona(agent: AgentSpec, role: str) -> str:
    return _clip(agent.persona, PERSONA_CHARS) or f"You are an expert {role} engineer."


def _messages(agent: AgentSpec, request: DeliberationRequest, user: str, nonce: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt(request.role, request, nonce)},
            {"role": "user", "content": f"{_persona(agent, request.role)}\n\n{user}"}]


def propose_messages(agent: AgentSpec, request: DeliberationRequest, nonce: str) -> list[dict[str, str]]:
    return _messages(agent, request, (
        "Write your proposal for this task. Be concrete and cover every requirement; "
        "put code or config in fenced blocks tagged with their language."), nonce)


def test_messages(agent: AgentSpec, request: DeliberationRequest, nonce: str) -> list[dict[str, str]]:
    """The test-writing step: asserts with concrete inputs and expected values, as a QA engineer would write."""
    return _messages(agent, request, (
        "Before any solution exists, write the tests for this task as a QA engineer would: up to 6 lines, each "
        "`assert <call of the function the task asks for> == <expected value>`, with concrete inputs including "
        "edge cases. Answer with the assert lines only, in one ```python block."), nonce)


def generated_tests(text: str) -> list[str]:
    """The assert lines of the test writer's answer (at most MAX_GENERATED_TESTS); verifiers/behaviour.py keeps
    those it can run: `assert f(<literals>) == <literal>`."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("assert ")]
    return list(dict.fromkeys(lines))[:MAX_GENERATED_TESTS]


def findings(checks: list[CheckResult], nonce: str | None = None) -> str:
    """What the verifiers found wrong with a version, for a critic: failed checks and their messages.

    With the record's nonce (every prompt), the messages are fenced like a proposal: a check message repeats
    what the tested code printed or raised (exception text, doctest output), which a model wrote, so it must
    not close its fence and forge instructions. Without it (the critique kept in a record or an event) the
    text is plain."""
    failed = [f"- {c.name}: {c.message}" for c in checks if c.failed]
    if not failed:
        passed = [c.name for c in checks if c.passed]
        return "Verifiers: every check that applied passed" + (f" ({', '.join(passed)})." if passed else ".")
    if nonce is None:
        return "Verifier findings:\n" + _clip("\n".join(failed), FINDINGS_CHARS)
    return "Verifier findings:\n" + fence("\n".join(failed), "FINDINGS", nonce, FINDINGS_CHARS)


def critique_messages(agent: AgentSpec, request: DeliberationRequest, target: Proposal,
                      nonce: str) -> list[dict[str, str]]:
    return _messages(agent, request, (
        f"A proposal by another agent:\n{fence(target.content, 'PROPOSAL', nonce, PROPOSAL_CHARS)}\n\n"
        f"{findings(target.checks, nonce)}\n\n"
        "Critique this proposal against the task and the verifier findings. "
        "List its concrete problems and how to fix them, briefly."), nonce)


def revise_messages(agent: AgentSpec, request: DeliberationRequest, target: Proposal, critique: str,
                    nonce: str) -> list[dict[str, str]]:
    """The revision prompt; an empty critique means the verifier findings are the critique."""
    head = (f"Proposal:\n{fence(target.content, 'PROPOSAL', nonce, PROPOSAL_CHARS)}\n\n"
            f"{findings(target.checks, nonce)}\n\n")
    if not critique:
        return _messages(agent, request, head + (
            "Rewrite the proposal so it fixes these findings and meets every requirement. "
            "Answer with the complete corrected proposal only."), nonce)
    return _messages(agent, request, head + (
        f"Critique:\n{fence(critique, 'CRITIQUE', nonce, CRITIQUE_CHARS)}\n\n"
        "Rewrite the proposal so it fixes the findings and the critique and meets every requirement. "
        "Answer with the complete revised proposal only."), nonce)


def labels(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)] if n <= 26 else [f"P{i + 1}" for i in range(n)]


def ranking_schema(shown: list[str]) -> dict:
    """JSON Schema of a ranking answer: every label shown, best first."""
    return {"type": "object", "additionalProperties": False, "required": ["ranking"],
            "properties": {"ranking": {"type": "array", "items": {"type": "string", "enum": shown},
                                       "minItems": len(shown), "maxItems": len(shown)}}}


def ranking_order(record: DeliberationRecord, reviewer: str, others: list[Proposal]) -> list[Proposal]:
    """The others' proposals in the order this reviewer sees them: shuffled per reviewer, seeded by
    the deliberation id, so a resumed stage shows the same order."""
    order = list(others)
    random.Random(f"{record.id}:{reviewer}").shuffle(order)
    return order


def rank_messages(agent: AgentSpec, request: DeliberationRequest, shown: list[Proposal],
                  nonce: str) -> list[dict[str, str]]:
    names = labels(len(shown))
    blocks = [f"{fence(p.content, f'PROPOSAL {name}', nonce, RANKED_PROPOSAL_CHARS)}\n{findings(p.checks, nonce)}"
              for name, p in zip(names, shown)]
    return _messages(agent, request, (
        "Proposals by the other agents:\n\n" + "\n\n".join(blocks) + "\n\n"
        f"Rank these proposals from best to worst for the task. Answer with JSON only: "
        f'{{"ranking": [{", ".join(json.dumps(n) for n in names)}]}} in your order.'), nonce)


def parse_ranking(text: str, shown: list[str]) -> list[str] | None:
    """The labels in the reviewer's order (duplicates dropped, missing ones appended in the shown
    order), or None when the answer is not a JSON ranking of these labels."""
    try:
        data = json.loads(text.strip())
        ranking = data["ranking"] if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(ranking, list):
        return None
    order = list(dict.fromkeys(r for r in ranking if isinstance(r, str) and r in shown))
    if not order:
        return None
    return order + [s for s in shown if s not in order]


def borda(rankings: list[PeerRanking]) -> dict[str, float]:
    """Borda count over the parsed rankings: in a ranking of k, place p (0-based) earns k-1-p."""
    points: dict[str, float] = {}
    for r in rankings:
        if not r.parsed:
            continue
        k = len(r.order)
        for place, author in enumerate(r.order):
            points[author] = points.get(author, 0.0) + (k - 1 - place)
    return points


def judge_messages(agent: AgentSpec, request: DeliberationRequest, differing: list[tuple[str, str, str]],
                   nonce: str) -> list[dict[str, str]]:
    """Distinguishing inputs (S*): two programs written for the task ran on the same inputs and gave different
    outputs; the judge says, per input, which output the task asks for. Outputs are run results, fenced."""
    example = json.dumps({"choices": ["X"] * len(differing)})
    listing = "\n\n".join(f"Input {i}: {call}\nX: {x}\nY: {y}" for i, (call, x, y) in enumerate(differing, 1))
    return _messages(agent, request, (
        "Two programs written for this task were run on the same inputs and gave different outputs:\n\n"
        + fence(listing, "OUTPUTS", nonce, 1200) + "\n\n"
        "For each input, which output is correct for the task? Answer with JSON only: "
        f'{example}, one "X" or "Y" per input, in order.'), nonce)


def judge_schema(n: int) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["choices"],
            "properties": {"choices": {"type": "array", "items": {"type": "string", "enum": list(JUDGED)},
                                       "minItems": n, "maxItems": n}}}


def parse_judgement(text: str, n: int) -> list[str] | None:
    """The judge's "X"/"Y" per input ("" where it gave none), or None when the answer is no JSON choice list."""
    try:
        data = json.loads(text.strip())
        choices = data["choices"] if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(choices, list) or not any(c in JUDGED for c in choices):
        return None
    return [c if c in JUDGED else "" for c in choices[:n]] + [""] * (n - len(choices[:n]))


# ---------------------------------------------------------------- the protocol


def seats(record: DeliberationRecord, council: CouncilSpec) -> list[AgentSpec]:
    """Who holds seat i. Once proposals exist they fix the seats, so a council edited mid-deliberation
    cannot reshape it; a seat whose agent was removed keeps its id and borrows the settings of the
    council agent at the same position (modulo the council size)."""
    if record.proposals:
        by_id = {a.id: a for a in council.agents}
        return [
            by_id.get(p.author) or council.agents[i % len(council.agents)].model_copy(update={"id": p.author})
            for i, p in enumerate(record.proposals)
        ]
    # The ingress validates num_agents against the council; here it is only clamped.
    n = min(record.request.num_agents or len(council.agents), len(council.agents))
    return list(council.agents[:n])


def verifier_names(council: CouncilSpec, request: DeliberationRequest | None = None) -> list[str]:
    """The verifiers that run on this request's texts: the council's, plus, where it keeps the role's defaults, the
    one each of the request's own checks needs (Python tests run the python verifier on any role)."""
    from .verifiers import for_request

    constraints = request.constraints if request is not None else Constraints()
    return for_request(council.role, council.scoring.verifiers, constraints)


def code_answers(council: CouncilSpec, request: DeliberationRequest) -> bool:
    """Whether the answer is code (scoring.answer_is_code): then prose never outranks code that runs."""
    return answer_is_code(request.role, request.constraints, council.scoring.code_answers)


async def _all_before_deadline(
    record: DeliberationRecord, stage: str, clock: Clock, calls: list[Awaitable]
) -> list:
    """Run a stage's calls at once (one batched step on the engine), bounded by the deadline.
    If one fails the others are cancelled rather than left burning engine time."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        async with asyncio.timeout(max(record.deadline - clock(), 0)) as scope:
            return list(await asyncio.gather(*tasks))
    except TimeoutError:
        if scope.expired():
            raise DeliberationTimeout(
                f"deliberation {record.id} passed its {record.request.constraints.timeout_s}s deadline during {stage}"
            ) from None
        raise
    finally:
        for t in tasks:
            t.cancel()  # no-op on finished tasks


class _Stage:
    """What one stage needs: the record, its seats, the ports, the stage's seed offset."""

    def __init__(self, record, council, members, generator, verifier, clock, name, index):
        self.record, self.council, self.members = record, council, members
        self.generator, self.verifier, self.clock = generator, verifier, clock
        self.name, self.index = name, index
        self.request = record.request
        self.timing = StageTiming(stage=name)

    def generate(self, agent: AgentSpec, messages, *, max_tokens: int | None = None,
                 json_schema: dict | None = None, draft: int = 0) -> Awaitable[Completion]:
        kwargs = {"json_schema": json_schema} if json_schema is not None else {}
        return self.generator.generate(
            agent.engine, messages, temperature=agent.temperature,
            max_tokens=max_tokens or self.request.max_tokens or agent.max_tokens,
            seed=stage_seed(agent.seed, self.index, draft), **kwargs)

    async def all(self, calls: list[Awaitable]) -> list:
        return await _all_before_deadline(self.record, self.name, self.clock, calls)

    async def generations(self, calls: list[Awaitable[Completion]]) -> list[Completion]:
        """The stage's generations at once, timed and counted."""
        t0 = time.perf_counter()
        done = await self.all(calls)
        self.timing.generation_s += time.perf_counter() - t0
        self.timing.calls += len(done)
        self.timing.batches += 1
        self.timing.prompt_tokens += sum(c.prompt_tokens for c in done)
        self.timing.cached_prompt_tokens += sum(c.cached_tokens for c in done)
        self.timing.completion_tokens += sum(c.completion_tokens for c in done)
        return done

    async def verify(self, versions: list[Version]) -> None:
        """Run the council's verifiers on these versions; set their checks, score and answer."""
        names = verifier_names(self.council, self.request)
        t0 = time.perf_counter()
        results = await self.all([self.verifier.verify([v.content for v in versions], self.request, names,
                                                       self.council.scoring, self.record.generated_tests)])
        self.timing.verification_s += time.perf_counter() - t0
        fmt = self.request.constraints.answer_format
        for version, checks in zip(versions, results[0]):
            version.checks = checks
            version.score = score_checks(checks)
            version.answer = answers.extract(version.content, fmt) if fmt else None
        # Behaviour on generated inputs (no request tests): the evidence is the size of each candidate's group,
        # among every version so far (the propose stage agrees again once its drafts are in their proposals).
        known = [v for p in self.record.proposals for v in p.versions]
        ids = {id(v) for v in known}
        agree(known + [v for v in versions if id(v) not in ids])


def _check_summary(checks: list[CheckResult]) -> dict:
    tests = tests_of(checks)
    return {"failed": [c.name for c in checks if c.failed], "passed": [c.name for c in checks if c.passed],
            "tests": None if tests is None else {"passed": tests[0], "total": tests[1]}}


async def deliberate(
    record: DeliberationRecord,
    council: CouncilSpec,
    generator: Generator,
    sink: RecordSink,
    verifier: Verifier | None = None,
    *,
    clock: Clock = time.time,
) -> DeliberationRecord:
    """Run (or resume) a deliberation until it has its result, mutating and returning `record`: it comes back
    `in_progress` with `record.result` set; the caller ends it (Store.finish_record derives the status).

    Stages in record.stages_done or record.stages_skipped are skipped, so a record loaded from its
    last checkpoint resumes there. Without a verifier, verification runs in this process
    (actors/verification.py). Raises DeliberationTimeout past the deadline; generator, verifier and
    sink errors propagate: the caller marks the record failed / timeout and emits the events.
    """
    if record.finished:
        return record
    if verifier is None:
        from .verification import LocalVerifier

        verifier = LocalVerifier()
    request = record.request
    if request.rounds is None:
        # Pin the council's round count now, so the stage list survives a council edit before a resume.
        request.rounds = council.rounds
    stages = stage_names(request.rounds)
    members = seats(record, council)

    record.status = "in_progress"
    record.started_at = record.started_at or clock()
    record.updated_at = clock()
    await sink.checkpoint(record)

    for index, stage in enumerate(stages):
        if stage in record.stages_done or stage in record.stages_skipped:
            continue
        if clock() > record.deadline:
            raise DeliberationTimeout(
                f"deliberation {record.id} passed its {request.constraints.timeout_s}s deadline before {stage}"
            )
        kind, _, number = stage.partition("-")
        skip = _skip(record, council, stages, index)
        if skip is not None:
            rest, reason = skip
            record.stages_skipped.extend(rest)
            record.pending_critiques = []
            record.updated_at = clock()
            await sink.checkpoint(record)
            await sink.event(record, "stage.skipped", {"stages": rest, "reason": reason})
            continue
        await sink.event(record, "stage.started", {"stage": stage})
        started = time.perf_counter()
        ctx = _Stage(record, council, members, generator, verifier, clock, stage, index)
        if kind == "propose":
            events = await _propose(ctx)
        elif kind == "critique":
            events = await _critique(ctx, int(number))
        elif kind == "revise":
            events = await _revise(ctx, int(number))
        elif kind == "rank":
            events = await _rank(ctx)
        else:
            events = _score(record, council, clock)

        # The stage's results are applied and marked done before anything is published, so this
        # in-memory record never holds a half-applied stage. Item events go out before the checkpoint
        # and "stage.completed" after it: a crash in between replays the stage on resume and repeats
        # its item events (at least once), and "stage.completed" means the stage is durable.
        record.stages_done.append(stage)
        record.timings.append(ctx.timing)
        record.updated_at = clock()
        for event_kind, data in events:
            await sink.event(record, event_kind, data)
        before = time.perf_counter()
        await sink.checkpoint(record)
        # Stored with the next write (the next stage's checkpoint, or the completion).
        ctx.timing.checkpoint_s = time.perf_counter() - before
        ctx.timing.seconds = time.perf_counter() - started
        await sink.event(record, "stage.completed", {"stage": stage})
    return record


def _votes(record: DeliberationRecord) -> dict[str, int] | None:
    """Answer -> how many versions gave it, for exact-answer requests (None otherwise)."""
    if not record.request.constraints.answer_format:
        return None
    return answers.tally([v.answer for p in record.proposals for v in p.versions])


def _skip(record: DeliberationRecord, council: CouncilSpec, stages: list[str],
          index: int) -> tuple[list[str], str] | None:
    """(stages to skip, why) when the stage at `index` would spend tokens that cannot change the decision.

    Early stop, before a critique or revise stage: a version passes the request's tests, or every proposal
    passes every verifier that applied; the remaining rounds are skipped. Rank: off (`peer_rank: never`),
    fewer than 3 proposals (a reviewer would see one), or, with `when_undecided`, when the request's tests
    ran (they order code better than a peer's opinion) or the verifiers and votes left no tie at the top: neither
    between proposals (the peers') nor between two behaviour groups (the judges', `scoring.tied_groups`).
    """
    stage = stages[index]
    kind = stage.partition("-")[0]
    proposals = record.proposals
    if kind in ("critique", "revise") and proposals:
        if settled(proposals):
            reason = "a version passes the request's tests"
        elif not _has_tests(record.request) and behaviour_majority(proposals):
            reason = "a behaviour group holds a clear majority of the candidates"
        elif all_verified(proposals):
            reason = "every proposal passes every verifier that applied"
        else:
            return None
        return [s for s in stages[index:] if s.startswith(("critique-", "revise-"))], reason
    if kind != "rank":
        return None
    mode = council.scoring.peer_rank
    if mode == "never":
        return [stage], "peer ranking is off (scoring.peer_rank: never)"
    if len(proposals) < 3:
        return [stage], "fewer than 3 proposals: each reviewer would see one"
    if mode == "when_undecided":
        if any(tests_of(v.checks) is not None for p in proposals for v in p.versions):
            return [stage], "the request's tests ran and decide"
        votes, code = _votes(record), code_answers(council, record.request)
        if not undecided(proposals, votes, code) and tied_groups(proposals, votes, code) is None:
            return [stage], "the verifiers and votes decided"
    return None


async def _propose(ctx: _Stage) -> Events:
    """Every agent drafts `drafts_per_agent` versions of its proposal. With the request's tests, or when the
    answer is code, the drafts come in waves (one per agent each) and drafting stops once a draft passes the
    tests, or, without tests, once a behaviour group holds a clear majority of the drafts
    (scoring.behaviour_majority); otherwise in one batch. Each proposal stands for its best-verified draft.
    Code without the request's tests: seat 0 writes asserts (test_messages) beside the first wave, counted in its
    proposal's usage; the wave is verified with them."""
    record, request = ctx.record, ctx.request
    drafts = ctx.council.drafts_per_agent
    tests = _has_tests(request)
    code = code_answers(ctx.council, request)
    per_wave = 1 if tests or code else drafts
    proposals = [Proposal(author=agent.id, content="") for agent in ctx.members]
    # One candidate in all (one seat, one draft): nothing to choose between, no tests to write.
    writer = ctx.members[0] if code and not tests and len(proposals) * drafts > 1 else None
    events: Events = []
    drawn = 0

    def enough() -> bool:
        return settled(proposals) if tests else behaviour_majority(proposals)

    while drawn < drafts and not (drawn and enough()):
        wave = [(seat, draft) for draft in range(drawn, min(drawn + per_wave, drafts)) for seat in range(len(proposals))]
        write_tests = writer is not None and not drawn
        calls = [ctx.generate(ctx.members[seat], propose_messages(ctx.members[seat], request, record.nonce),
                              draft=draft) for seat, draft in wave]
        if write_tests:  # seeded past every draft of the stage (CEILING_DRAFTS * DRAFT_SEED_STRIDE < SEED_STRIDE)
            calls.append(ctx.generate(writer, test_messages(writer, request, record.nonce), draft=drafts))
        done = await ctx.generations(calls)
        if write_tests:
            written = done.pop()
            record.generated_tests = generated_tests(written.text)
            proposals[0].usage = proposals[0].usage.add(written.usage)
            events.append(("tests.generated", {"author": writer.id, "asserts": record.generated_tests}))
        versions = [Version(round=0, written_by=ctx.members[seat].id, content=c.text.strip())
                    for (seat, _), c in zip(wave, done)]
        await ctx.verify(versions)
        for (seat, draft), version, c in zip(wave, versions, done):
            p = proposals[seat]
            p.versions.append(version)
            p.usage = p.usage.add(c.usage)
            events.append(("proposal", {"author": p.author, "draft": draft, "content": version.content,
                                        "checks": _check_summary(version.checks)}))
        drawn += per_wave
    agree(v for p in proposals for v in p.versions)
    for p in proposals:
        p.chosen = best_version(p.versions, code_answers(ctx.council, request))
        p.content, p.checks, p.score = p.current.content, p.current.checks, p.current.score
    record.proposals = proposals
    return events


def _pairs(record: DeliberationRecord, members: list[AgentSpec]) -> list[tuple[AgentSpec, Proposal]]:
    """(critic, target) of this round: seat i and proposal (i+1) mod N, leaving out proposals that already
    pass every verifier that applied (nothing to fix; their budget is not spent). The same pairs in the
    critique and the revise stage of a round: the proposals do not change between them."""
    n = len(record.proposals)
    pairs = [(agent, record.proposals[(i + 1) % n]) for i, agent in enumerate(members)]
    return [(agent, target) for agent, target in pairs if not all_verified([target])]


async def _critique(ctx: _Stage, round_: int) -> Events:
    """Seat i critiques proposal i+1. Where a verifier failed, its findings are the critique (the failing
    assertion says more than a model could, at no cost; recorded as an empty critique, critic "verifiers");
    the agents write critiques of the proposals the verifiers found nothing wrong with."""
    record, nonce = ctx.record, ctx.record.nonce
    pairs = _pairs(record, ctx.members)
    by_verifiers = [any(c.failed for c in t.checks) for _, t in pairs]
    done = iter(await ctx.generations([ctx.generate(agent, critique_messages(agent, ctx.request, t, nonce))
                                       for (agent, t), found in zip(pairs, by_verifiers) if not found]))
    record.pending_critiques = []
    events: Events = []
    for (agent, target), found in zip(pairs, by_verifiers):
        if found:
            critique, critic = "", "verifiers"
        else:
            c = next(done)
            target.usage = target.usage.add(c.usage)
            critique, critic = c.text.strip(), agent.id
        record.pending_critiques.append(critique)
        events.append(("critique", {"round": round_, "critic": critic, "target": target.author,
                                    "critique": critique or findings(target.checks)}))
    return events


async def _revise(ctx: _Stage, round_: int) -> Events:
    record, nonce = ctx.record, ctx.record.nonce
    pairs = _pairs(record, ctx.members)
    critiques = record.pending_critiques
    done = await ctx.generations([ctx.generate(agent, revise_messages(agent, ctx.request, t, critique, nonce))
                                  for (agent, t), critique in zip(pairs, critiques)])
    # A blank answer is not a revision: the proposal keeps what it had.
    fresh = [(agent, t, critique, c, Version(round=round_, written_by=agent.id,
                                              critique=critique or findings(t.checks), content=c.text.strip()))
             for (agent, t), critique, c in zip(pairs, critiques, done) if c.text.strip()]
    await ctx.verify([v for *_, v in fresh])
    events: Events = []
    for (agent, target), c in zip(pairs, done):
        target.usage = target.usage.add(c.usage)
    for agent, target, critique, c, version in fresh:
        target.versions.append(version)
        kept = not displaces(version, target.current, code_answers(ctx.council, ctx.request))
        if not kept:
            target.chosen = len(target.versions) - 1
            target.content, target.checks, target.score = version.content, version.checks, version.score
        events.append(("revision", {"round": round_, "author": agent.id, "target": target.author,
                                    "content": version.content, "checks": _check_summary(version.checks),
                                    "adopted": not kept}))
    record.pending_critiques = []
    return events


async def _rank(ctx: _Stage) -> Events:
    """When two behaviour groups tie at the top (drafts of different proposals or of the same one), each agent first
    judges their outputs on the inputs where they differ (`_judge`). Then, if proposals still tie, each agent ranks
    the other proposals (at least two of them), anonymized and shuffled."""
    record = ctx.record
    record.rankings = []
    events = await _judge(ctx)
    points = judgement_points(record.judgements)
    separated = bool(points) and len(set(points.values())) > 1
    # Peers rank proposals: only a tie between proposals is theirs to break (a tie between two drafts of one
    # proposal is the judges' alone), and with `peer_rank: always` they rank whatever the judges said.
    tie = undecided(record.proposals, _votes(record), code_answers(ctx.council, ctx.request))
    if ctx.council.scoring.peer_rank == "always" or (tie and not separated):
        events += await _peer_rank(ctx)
    return events


async def _judge(ctx: _Stage) -> Events:
    """S*-style: the best versions of the two tied behaviour groups (scoring.tied_groups) differ on some inputs;
    every agent says, per input, which of the two outputs is right. Which group is X is drawn per judge, seeded by
    the deliberation id (a resumed stage shows the same), so a judge's bias for the first option cancels out."""
    record = ctx.record
    record.judgements = []
    pair = tied_groups(record.proposals, _votes(record), code_answers(ctx.council, record.request))
    if pair is None:
        return []
    groups = [behaviour_group(v) or "" for v in pair]
    differing = distinguishing(*pair)
    calls, shown = [], []
    for agent in ctx.members:
        flip = random.Random(f"{record.id}:{agent.id}:judge").random() < 0.5
        order = groups[::-1] if flip else groups
        shown.append(order)
        listed = [(call, b, a) if flip else (call, a, b) for call, a, b in differing]
        calls.append(ctx.generate(agent, judge_messages(agent, ctx.request, listed, record.nonce),
                                  max_tokens=JUDGE_TOKENS_BASE + JUDGE_TOKENS_PER_INPUT * len(differing),
                                  json_schema=judge_schema(len(differing))))
    done = await ctx.generations(calls)
    events: Events = []
    for agent, own, order, c in zip(ctx.members, record.proposals, shown, done):
        own.usage = own.usage.add(c.usage)
        choices = parse_judgement(c.text, len(differing))
        judgement = Judgement(judge=agent.id, groups=groups, inputs=[call for call, _, _ in differing],
                              choices=[order[JUDGED.index(x)] if x else "" for x in (choices or [])],
                              raw=c.text.strip()[:500], parsed=choices is not None)
        record.judgements.append(judgement)
        events.append(("judgement", judgement.model_dump()))
    return events


async def _peer_rank(ctx: _Stage) -> Events:
    record, nonce = ctx.record, ctx.record.nonce
    shown = [ranking_order(record, p.author, [o for o in record.proposals if o.author != p.author])
             for p in record.proposals]
    calls = []
    for agent, others in zip(ctx.members, shown):
        names = labels(len(others))
        calls.append(ctx.generate(agent, rank_messages(agent, ctx.request, others, nonce),
                                  max_tokens=RANK_TOKENS_BASE + RANK_TOKENS_PER_ITEM * len(others),
                                  json_schema=ranking_schema(names)))
    done = await ctx.generations(calls)
    record.rankings = []
    events: Events = []
    for agent, own, others, c in zip(ctx.members, record.proposals, shown, done):
        own.usage = own.usage.add(c.usage)
        names = labels(len(others))
        order = parse_ranking(c.text, names)
        by_label = dict(zip(names, (o.author for o in others)))
        ranking = PeerRanking(reviewer=agent.id, order=[by_label[n] for n in (order or names)],
                              raw=c.text.strip()[:500], parsed=order is not None)
        record.rankings.append(ranking)
        events.append(("ranking", ranking.model_dump()))
    return events


def _score(record: DeliberationRecord, council: CouncilSpec, clock: Clock) -> Events:
    votes = _votes(record)
    points = borda(record.rankings) if record.rankings else None
    verdicts, decided_by, why = decide(record.proposals, salt=record.id, votes=votes, borda=points,
                                       code=code_answers(council, record.request),
                                       judged=judgement_points(record.judgements))
    # record.proposals stays in seat order; the result holds its own ranked copies.
    ranked = rank_proposals(record.proposals)
    usage = Usage()
    for p in ranked:
        usage = usage.add(p.usage)
    winner = ranked[0]
    ended = clock()
    record.result = DeliberationResult(
        proposals=ranked,
        winner_id=winner.author,
        winner_version=winner.chosen,
        written_by=winner.current.written_by,
        decided_by=decided_by,
        reason=why,
        candidates=verdicts,
        rankings=[r.model_copy() for r in record.rankings],
        judgements=[j.model_copy() for j in record.judgements],
        duration_s=max(ended - (record.started_at or ended), 0.0),
        usage=usage,
    )
    return [("score", {"author": p.author, "score": p.score, "rank": p.rank, "version": p.chosen,
                       "reason": p.reason, "checks": [c.model_dump() for c in p.checks]})
            for p in ranked]
