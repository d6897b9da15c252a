"""The deliberation protocol, in-process on fakes: no Ray, no Valkey, no model."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.protocol import (
    PROPOSAL_CHARS,
    DeliberationTimeout,
    critique_messages,
    deliberate,
    stage_names,
    stage_seed,
)
from actors.scoring import score_proposal
from actors.specs import (
    Constraints,
    DeliberationRecord,
    DeliberationRequest,
    Proposal,
    Usage,
    default_council,
)
from tests.fakes import FakeGenerator, MemorySink

REQUIREMENTS = ["Retry failed HTTP requests", "Configurable timeout values"]


def make_council(n: int = 3, rounds: int = 1):
    return default_council("DEV", "fake", n_agents=n, rounds=rounds, max_tokens=128)


def make_record(**request) -> DeliberationRecord:
    constraints = request.pop("constraints", None) or Constraints(
        rubric="Correct, simple, tested.", requirements=REQUIREMENTS
    )
    return DeliberationRecord(
        request=DeliberationRequest(role="DEV", task="Write an HTTP client wrapper.", constraints=constraints, **request)
    )


def without_times(record: DeliberationRecord) -> dict:
    data = record.model_dump()
    for key in ("created_at", "updated_at", "started_at", "finished_at", "id"):
        data.pop(key)
    data["result"].pop("duration_s")
    return data


def test_stage_names():
    assert stage_names(0) == ["propose", "score"]
    assert stage_names(2) == ["propose", "critique-1", "revise-1", "critique-2", "revise-2", "score"]


async def test_full_deliberation():
    council, gen, sink = make_council(3, rounds=2), FakeGenerator(), MemorySink()
    record = await deliberate(make_record(), council, gen, sink)

    assert record.status == "completed"
    assert record.stages_done == stage_names(2)
    assert record.started_at <= record.finished_at
    assert record.pending_critiques == []
    assert len(gen.calls) == 3 * (1 + 2 * 2)

    result = record.result
    assert sorted(p.author for p in result.proposals) == [a.id for a in council.agents]
    assert [p.rank for p in result.proposals] == [1, 2, 3]
    assert result.winner_id == result.proposals[0].author
    scores = [p.score for p in result.proposals]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1  # the fake makes scores differ
    for p in result.proposals:
        assert [r.round for r in p.revisions] == [1, 2]
        assert p.content == p.revisions[-1].content
        checks, score = score_proposal(p.content, REQUIREMENTS, council.scoring)
        assert (p.checks, p.score) == (checks, score)

    # Usage: every completion counted once, attributed to the proposal it was made for.
    total = Usage()
    for c in gen.completions:
        total = total.add(c.usage)
    assert result.usage == total
    assert sum(p.usage.total_tokens for p in result.proposals) == total.total_tokens


async def test_stage_events_and_checkpoints_in_order():
    sink = MemorySink()
    await deliberate(make_record(), make_council(2, rounds=1), FakeGenerator(), sink)
    per_stage = ["stage.started", "{item}", "{item}", "checkpoint", "stage.completed"]
    expected = ["checkpoint"]
    for stage, item in [("propose", "proposal"), ("critique-1", "critique"), ("revise-1", "revision"), ("score", "score")]:
        expected += [k.format(item=item) for k in per_stage]
    assert sink.log == expected
    assert [d["stage"] for d in sink.of_kind("stage.completed")] == stage_names(1)
    # Every checkpoint after the first marks one more stage done.
    assert [c.stages_done for c in sink.checkpoints] == [stage_names(1)[:i] for i in range(5)]
    assert sink.checkpoints[0].status == "in_progress" and sink.checkpoints[-1].status == "completed"
    assert sink.checkpoints[-1].result is not None

    scores = sink.of_kind("score")
    assert [s["rank"] for s in scores] == [1, 2]
    assert {c["name"] for c in scores[0]["checks"]} >= {"code_blocks_parse", "requirements_addressed"}


async def test_ring_critique_and_revision():
    council, gen, sink = make_council(4, rounds=1), FakeGenerator(), MemorySink()
    ids = [a.id for a in council.agents]
    record = await deliberate(make_record(), council, gen, sink)

    proposals = {p["author"]: p["content"] for p in sink.of_kind("proposal")}
    critiques = sink.of_kind("critique")
    revisions = sink.of_kind("revision")
    assert [(c["critic"], c["target"]) for c in critiques] == [(ids[i], ids[(i + 1) % 4]) for i in range(4)]
    assert [(r["author"], r["target"]) for r in revisions] == [(ids[i], ids[(i + 1) % 4]) for i in range(4)]

    # Agent i's critique call runs under its own persona and shows proposal (i+1) mod N.
    critique_calls = gen.calls[4:8]
    for i, call in enumerate(critique_calls):
        system, user = call["messages"][0]["content"], call["messages"][1]["content"]
        assert system.startswith(council.agents[i].persona)
        assert proposals[ids[(i + 1) % 4]][:200] in user
        assert "Retry failed HTTP requests" in user and "Correct, simple, tested." in user

    # The reviser revises with its own critique, and the revision is kept on the target proposal.
    for p in record.proposals:
        (rev,) = p.revisions
        critic = ids[(ids.index(p.author) - 1) % 4]
        assert rev.critic == critic
        assert rev.critique == next(c["critique"] for c in critiques if c["critic"] == critic)
        revise_call = gen.calls[8 + ids.index(critic)]
        assert rev.critique in revise_call["messages"][1]["content"]


async def test_each_stage_is_one_concurrent_batch():
    council, gen = make_council(5, rounds=1), FakeGenerator(delay=0.01)
    await deliberate(make_record(), council, gen, MemorySink())
    assert gen.max_in_flight == 5  # all of a stage at once, never two stages overlapping
    assert len(gen.calls) == 15


async def test_agent_settings_and_per_stage_seeds():
    council, gen = make_council(3, rounds=1), FakeGenerator()
    council.agents[2].seed = None
    await deliberate(make_record(), council, gen, MemorySink())
    for stage_index in range(3):
        for i, agent in enumerate(council.agents):
            call = gen.calls[stage_index * 3 + i]
            assert call["engine"] == "fake" and call["temperature"] == agent.temperature
            assert call["max_tokens"] == 128
            assert call["seed"] == stage_seed(agent.seed, stage_index)
    assert gen.calls[0]["seed"] == council.agents[0].seed  # proposals use the agent's own seed
    assert len({c["seed"] for c in gen.calls[:2] + gen.calls[3:5]}) == 4
    assert gen.calls[2]["seed"] is None and gen.calls[5]["seed"] is None


async def test_request_overrides_rounds_agents_and_tokens():
    gen, sink = FakeGenerator(), MemorySink()
    record = await deliberate(make_record(rounds=0, num_agents=2, max_tokens=64), make_council(4, rounds=3), gen, sink)
    assert record.stages_done == ["propose", "score"]  # rounds=0: straight to score
    assert len(gen.calls) == 2 and {c["max_tokens"] for c in gen.calls} == {64}
    assert all(p.revisions == [] for p in record.result.proposals)
    assert not sink.of_kind("critique") and not sink.of_kind("revision")


async def test_num_agents_is_clamped_and_rounds_pinned():
    record = await deliberate(make_record(num_agents=9), make_council(3, rounds=1), FakeGenerator(), MemorySink())
    assert len(record.result.proposals) == 3
    assert record.request.rounds == 1  # the council's rounds, pinned for resumes


async def test_resume_after_propose_does_not_propose_again():
    council = make_council(3, rounds=1)
    first_sink = MemorySink()
    full = await deliberate(make_record(), council, FakeGenerator(), first_sink)

    # A council that restarts after "propose" loads this checkpoint and carries on.
    saved = first_sink.last_checkpoint_after("propose")
    saved_contents = [p.content for p in saved.proposals]
    gen, sink = FakeGenerator(), MemorySink()
    resumed = await deliberate(saved, council, gen, sink)

    assert len(gen.calls) == 6  # 3 critiques + 3 revisions, no proposals
    assert not any("Write your proposal" in c["messages"][1]["content"] for c in gen.calls)
    assert not sink.of_kind("proposal")
    assert [p.author for p in resumed.proposals] == [a.id for a in council.agents]
    for content, call in zip(saved_contents[1:] + saved_contents[:1], gen.calls[:3]):
        assert content[:200] in call["messages"][1]["content"]  # critiques read the saved proposals
    # The fake is deterministic, so the resumed run ends exactly where the uninterrupted one did.
    assert without_times(resumed) == without_times(full)


async def test_resume_between_critique_and_revise_uses_pending_critiques():
    council = make_council(3, rounds=1)
    first_sink = MemorySink()
    full = await deliberate(make_record(), council, FakeGenerator(), first_sink)
    saved = first_sink.last_checkpoint_after("critique-1")
    assert len(saved.pending_critiques) == 3

    gen = FakeGenerator()
    resumed = await deliberate(saved.model_copy(deep=True), council, gen, MemorySink())
    assert len(gen.calls) == 3  # only the revisions
    for i, call in enumerate(gen.calls):
        assert saved.pending_critiques[i] in call["messages"][1]["content"]
    assert without_times(resumed) == without_times(full)


async def test_generator_failure_propagates_and_last_checkpoint_resumes():
    council = make_council(3, rounds=1)
    gen, sink = FakeGenerator(fail_on=5, block_on=6), MemorySink()  # the second critique fails, the third hangs
    record = make_record()
    with pytest.raises(RuntimeError, match="call 5"):
        await deliberate(record, council, gen, sink)
    await asyncio.sleep(0)
    assert gen.cancelled == 1 and gen.in_flight == 0  # the hanging critique was cancelled, not left running
    last = sink.checkpoints[-1]
    assert last.stages_done == ["propose"] and last.pending_critiques == []

    gen2 = FakeGenerator()
    resumed = await deliberate(last.model_copy(deep=True), council, gen2, MemorySink())
    assert resumed.status == "completed" and len(gen2.calls) == 6


async def test_failed_checkpoint_leaves_a_consistent_record():
    council = make_council(2, rounds=1)
    record = make_record()
    gen = FakeGenerator()
    with pytest.raises(ConnectionError):
        await deliberate(record, council, gen, MemorySink(fail_on_checkpoint=3))  # after critique-1
    assert record.stages_done == ["propose", "critique-1"] and len(record.pending_critiques) == 2
    # Retrying with the same in-memory record does not redo or double-apply any stage.
    await deliberate(record, council, gen, MemorySink())
    assert len(gen.calls) == 6 and record.status == "completed"
    assert all(len(p.revisions) == 1 for p in record.proposals)


async def test_finished_record_is_returned_untouched():
    gen, sink = FakeGenerator(), MemorySink()
    record = await deliberate(make_record(), make_council(2, rounds=0), gen, sink)
    calls, events = len(gen.calls), len(sink.events)
    assert await deliberate(record, make_council(2, rounds=0), gen, sink) is record
    assert (len(gen.calls), len(sink.events)) == (calls, events)


async def test_deadline_passed_before_a_stage():
    record = make_record()
    gen = FakeGenerator()
    with pytest.raises(DeliberationTimeout, match="before propose"):
        await deliberate(record, make_council(2), gen, MemorySink(), clock=lambda: record.deadline + 1)
    assert gen.calls == []


async def test_deadline_passed_during_a_stage():
    record = make_record(constraints=Constraints(requirements=REQUIREMENTS, timeout_s=0.3))
    gen, sink = FakeGenerator(block_on=2), MemorySink()  # one proposal never comes back
    started = time.monotonic()
    with pytest.raises(DeliberationTimeout, match="during propose"):
        await deliberate(record, make_council(3), gen, sink)
    assert time.monotonic() - started < 2
    await asyncio.sleep(0)
    assert gen.in_flight == 0  # the stuck call was cancelled
    assert record.stages_done == [] and record.proposals == []


def test_prompts_bound_long_proposals():
    council = make_council(1)
    request = make_record().request
    target = Proposal(author="agent-dev-002", content="x" * 50_000)
    user = critique_messages(council.agents[0], request, target)[1]["content"]
    assert len(user) < PROPOSAL_CHARS + 1000
    assert "…[truncated]" in user


async def test_single_agent_reviews_itself():
    council = make_council(1, rounds=1)
    record = await deliberate(make_record(), council, FakeGenerator(), MemorySink())
    (p,) = record.result.proposals
    assert p.revisions[0].critic == p.author and p.rank == 1 and record.result.winner_id == p.author
