"""The deliberation protocol: propose, `rounds` x (critique, revise), score.

Plain async Python on two ports (ports.py): a Generator for completions and a RecordSink for
checkpoints and events. The council actor hosts it; tests drive it with in-process fakes.

Seats: seat i is agent i of the council (the first num_agents of them) and owns proposal i.
In round k, seat i critiques proposal (i+1) mod N, then writes that proposal's revision from its
own critique. pending_critiques[i] is seat i's critique between critique-k and revise-k.

Usage: Proposal.usage counts every generation made *for* that proposal (the proposal itself, the
critique aimed at it, its revision), so the proposals' usages add up to the deliberation's usage.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from .ports import Generator, RecordSink
from .scoring import rank_proposals, score_proposal
from .specs import (
    AgentSpec,
    Completion,
    CouncilSpec,
    DeliberationRecord,
    DeliberationRequest,
    DeliberationResult,
    Proposal,
    Revision,
    Usage,
)

# The default engine is a 135M model with a 2048-token context: bound every piece of a prompt.
PERSONA_CHARS = 500
TASK_CHARS = 1500
RUBRIC_CHARS = 600
REQUIREMENTS_CHARS = 800
PROPOSAL_CHARS = 1200
CRITIQUE_CHARS = 600

# Seeds of later stages are offset so a revision does not replay the sampling of the proposal.
SEED_STRIDE = 1009

Clock = Callable[[], float]
Generate = Callable[[AgentSpec, list[dict[str, str]]], Awaitable[Completion]]
Events = list[tuple[str, dict]]  # (kind, data) to publish once a stage's results are applied


class DeliberationTimeout(Exception):
    """The deliberation passed its deadline (created_at + constraints.timeout_s)."""


def stage_names(rounds: int) -> list[str]:
    """["propose", "critique-1", "revise-1", ..., "critique-R", "revise-R", "score"]."""
    stages = ["propose"]
    for k in range(1, rounds + 1):
        stages += [f"critique-{k}", f"revise-{k}"]
    return stages + ["score"]


def stage_seed(seed: int | None, stage_index: int) -> int | None:
    return None if seed is None else seed + SEED_STRIDE * stage_index


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …[truncated]"


# ---------------------------------------------------------------- prompts


def system_prompt(agent: AgentSpec, role: str) -> str:
    persona = _clip(agent.persona, PERSONA_CHARS) or f"You are an expert {role} engineer."
    return f"{persona}\nYou are a member of the {role} council; answer as that role."


def _brief(request: DeliberationRequest) -> str:
    """Task, rubric and requirements: the part every prompt of a deliberation shares."""
    parts = [f"Task:\n{_clip(request.task, TASK_CHARS)}"]
    if request.constraints.rubric.strip():
        parts.append(f"Rubric:\n{_clip(request.constraints.rubric, RUBRIC_CHARS)}")
    if request.constraints.requirements:
        reqs = "\n".join(f"- {r.strip()}" for r in request.constraints.requirements)
        parts.append(f"Requirements:\n{_clip(reqs, REQUIREMENTS_CHARS)}")
    return "\n\n".join(parts)


def _messages(agent: AgentSpec, role: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt(agent, role)}, {"role": "user", "content": user}]


def propose_messages(agent: AgentSpec, request: DeliberationRequest) -> list[dict[str, str]]:
    user = (
        f"{_brief(request)}\n\n"
        "Write your proposal for this task. Be concrete and cover every requirement; "
        "put code or config in fenced blocks tagged with their language."
    )
    return _messages(agent, request.role, user)


def critique_messages(agent: AgentSpec, request: DeliberationRequest, target: Proposal) -> list[dict[str, str]]:
    user = (
        f"{_brief(request)}\n\n"
        f"Proposal by {target.author}:\n{_clip(target.content, PROPOSAL_CHARS)}\n\n"
        "Critique this proposal against the task, rubric and requirements. "
        "List its concrete problems and anything missing, briefly."
    )
    return _messages(agent, request.role, user)


def revise_messages(
    agent: AgentSpec, request: DeliberationRequest, target: Proposal, critique: str
) -> list[dict[str, str]]:
    user = (
        f"{_brief(request)}\n\n"
        f"Proposal:\n{_clip(target.content, PROPOSAL_CHARS)}\n\n"
        f"Critique:\n{_clip(critique, CRITIQUE_CHARS)}\n\n"
        "Rewrite the proposal so it fixes the critique and meets every requirement. "
        "Answer with the complete revised proposal only."
    )
    return _messages(agent, request.role, user)


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


async def _all_before_deadline(
    record: DeliberationRecord, stage: str, clock: Clock, calls: list[Awaitable[Completion]]
) -> list[Completion]:
    """Run a stage's generations at once (one batched step on the engine), bounded by the deadline.
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


async def deliberate(
    record: DeliberationRecord,
    council: CouncilSpec,
    generator: Generator,
    sink: RecordSink,
    *,
    clock: Clock = time.time,
) -> DeliberationRecord:
    """Run (or resume) a deliberation to completion, mutating and returning `record`.

    Stages in record.stages_done are skipped, so a record loaded from its last checkpoint resumes
    there. Raises DeliberationTimeout past the deadline; generator and sink errors propagate: the
    caller marks the record failed / timeout and emits the completion events.
    """
    if record.finished:
        return record
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
        if stage in record.stages_done:
            continue
        if clock() > record.deadline:
            raise DeliberationTimeout(
                f"deliberation {record.id} passed its {request.constraints.timeout_s}s deadline before {stage}"
            )
        await sink.event(record, "stage.started", {"stage": stage})

        def generate(agent: AgentSpec, messages: list[dict[str, str]]) -> Awaitable[Completion]:
            return generator.generate(
                agent.engine,
                messages,
                temperature=agent.temperature,
                max_tokens=request.max_tokens or agent.max_tokens,
                seed=stage_seed(agent.seed, index),
            )

        kind, _, number = stage.partition("-")
        if kind == "propose":
            events = await _propose(record, members, generate, stage, clock)
        elif kind == "critique":
            events = await _critique(record, members, generate, int(number), stage, clock)
        elif kind == "revise":
            events = await _revise(record, members, generate, int(number), stage, clock)
        else:
            events = _score(record, council, clock)

        # The stage's results are applied and marked done before anything is published, so this
        # in-memory record never holds a half-applied stage. Item events go out before the checkpoint
        # and "stage.completed" after it: a crash in between replays the stage on resume and repeats
        # its item events (at least once), and "stage.completed" means the stage is durable.
        record.stages_done.append(stage)
        record.updated_at = clock()
        for event_kind, data in events:
            await sink.event(record, event_kind, data)
        await sink.checkpoint(record)
        await sink.event(record, "stage.completed", {"stage": stage})
    return record


async def _propose(
    record: DeliberationRecord, members: list[AgentSpec], generate: Generate, stage: str, clock: Clock
) -> Events:
    calls = [generate(agent, propose_messages(agent, record.request)) for agent in members]
    done = await _all_before_deadline(record, stage, clock, calls)
    record.proposals = [
        Proposal(author=agent.id, content=c.text.strip(), usage=c.usage) for agent, c in zip(members, done)
    ]
    return [("proposal", {"author": p.author, "content": p.content}) for p in record.proposals]


async def _critique(
    record: DeliberationRecord, members: list[AgentSpec], generate: Generate, round_: int, stage: str, clock: Clock
) -> Events:
    n = len(members)
    targets = [record.proposals[(i + 1) % n] for i in range(n)]
    calls = [generate(agent, critique_messages(agent, record.request, t)) for agent, t in zip(members, targets)]
    done = await _all_before_deadline(record, stage, clock, calls)
    record.pending_critiques = [c.text.strip() for c in done]
    events: Events = []
    for agent, target, c, critique in zip(members, targets, done, record.pending_critiques):
        target.usage = target.usage.add(c.usage)
        events.append(("critique", {"round": round_, "critic": agent.id, "target": target.author, "critique": critique}))
    return events


async def _revise(
    record: DeliberationRecord, members: list[AgentSpec], generate: Generate, round_: int, stage: str, clock: Clock
) -> Events:
    n = len(members)
    targets = [record.proposals[(i + 1) % n] for i in range(n)]
    critiques = record.pending_critiques
    calls = [
        generate(agent, revise_messages(agent, record.request, t, critique))
        for agent, t, critique in zip(members, targets, critiques)
    ]
    done = await _all_before_deadline(record, stage, clock, calls)
    events: Events = []
    for agent, target, critique, c in zip(members, targets, critiques, done):
        text = c.text.strip()
        target.revisions.append(Revision(round=round_, critic=agent.id, critique=critique, content=text))
        # A blank answer is not a revision: the proposal keeps its previous content.
        target.content = text or target.content
        target.usage = target.usage.add(c.usage)
        events.append(("revision", {"round": round_, "author": agent.id, "target": target.author, "content": target.content}))
    record.pending_critiques = []
    return events


def _score(record: DeliberationRecord, council: CouncilSpec, clock: Clock) -> Events:
    requirements = record.request.constraints.requirements
    for p in record.proposals:
        p.checks, p.score = score_proposal(p.content, requirements, council.scoring)
    # record.proposals stays in seat order; the result holds its own ranked copies.
    ranked = [p.model_copy(deep=True) for p in rank_proposals(record.proposals)]
    usage = Usage()
    for p in ranked:
        usage = usage.add(p.usage)
    record.finished_at = clock()
    record.result = DeliberationResult(
        proposals=ranked,
        winner_id=ranked[0].author,
        duration_s=max(record.finished_at - (record.started_at or record.finished_at), 0.0),
        usage=usage,
    )
    record.status = "completed"
    return [
        ("score", {"author": p.author, "score": p.score, "rank": p.rank, "checks": [c.model_dump() for c in p.checks]})
        for p in ranked
    ]
