"""The Valkey store against a real valkey-server."""

from __future__ import annotations

import asyncio

from actors.models.councils import EngineSpec, default_council
from actors.models.records import DeliberationRecord
import pytest

from actors.models.requests import DeliberationRequest
from tests.valkey_raw import raw

pytestmark = pytest.mark.valkey


async def test_council_roundtrip_and_versioning(store):
    spec = default_council("DEV", "e1")
    stored, created = await store.put_council(spec)
    assert created and stored.version == 1
    again, created = await store.put_council(default_council("DEV", "e1", n_agents=2))
    assert not created
    assert again.version == 2
    assert again.created_at == stored.created_at
    assert again.updated_at >= stored.updated_at
    loaded = await store.get_council("DEV")
    assert loaded == again and len(loaded.agents) == 2
    assert [c.role for c in await store.list_councils()] == ["DEV"]


async def test_shared_secret_is_generated_once_and_shared(store):
    """The idempotency HMAC's fallback key (issue 23): the first replica to ask generates it, every other gets it."""
    got = await asyncio.gather(*(store.shared_secret("idempotency") for _ in range(5)))
    assert len(set(got)) == 1 and len(got[0]) == 64
    assert await store.ttl_s("secret", "idempotency") == -1  # no TTL: ids stay stable
    assert await store.shared_secret("other") != got[0]


async def test_only_if_absent_keeps_existing(store):
    first, _ = await store.put_council(default_council("QA", "e1", n_agents=2))
    kept, created = await store.put_council(default_council("QA", "e1", n_agents=5), only_if_absent=True)
    assert not created and kept == first


async def test_concurrent_puts_bump_versions_without_loss(store):
    await asyncio.gather(*(store.put_council(default_council("DATA", "e1")) for _ in range(10)))
    assert (await store.get_council("DATA")).version == 10


async def test_delete_council_removes_key_and_index(store):
    await store.put_council(default_council("OPS", "e1"))
    assert await store.delete_council("OPS")
    assert await store.get_council("OPS") is None
    assert await store.list_councils() == []
    assert not await store.delete_council("OPS")


async def test_engines(store):
    await store.put_engine(EngineSpec(name="e1", model="m"))
    await store.put_engine(EngineSpec(name="e2", model="m", backend="openai", base_url="http://x/v1"))
    assert [e.name for e in await store.list_engines()] == ["e1", "e2"]
    assert (await store.get_engine("e2")).backend == "openai"
    assert await store.get_engine("nope") is None


async def test_record_lifecycle_active_index_and_ttl(store):
    rec = DeliberationRecord(request=DeliberationRequest(role="DEV", task="do it"))
    created, is_new = await store.create_record(rec)
    assert is_new and await store.active_ids("DEV") == [rec.id]
    # A retried create is idempotent: same record, no second accept.
    again, is_new = await store.create_record(DeliberationRecord(id=rec.id, request=rec.request))
    assert not is_new and again.created_at == rec.created_at
    rec.status = "in_progress"
    rec.stages_done = ["propose"]
    await store.save_record(rec)
    assert (await store.get_record(rec.id)).stages_done == ["propose"]
    assert await store.ttl_s("delib", rec.id) == -1  # unfinished: never expires
    assert await store.fail_record(rec, None, "boom")
    assert (await store.get_record(rec.id)).status == "failed"
    assert await store.active_ids("DEV") == []
    assert 0 < await store.ttl_s("delib", rec.id) <= 60
    stats = await store.stats()
    assert stats["deliberations.DEV.failed"] == 1 and stats["accepted.DEV"] == 1


async def test_events_are_ordered_and_resumable(store):
    ids = [await store.add_event("abc", "proposal", {"n": i}) for i in range(5)]
    everything = await store.read_events("abc")
    assert [d["n"] for _, _, d in everything] == [0, 1, 2, 3, 4]
    rest = await store.read_events("abc", after=ids[2])
    assert [d["n"] for _, _, d in rest] == [3, 4]
    # Stage events are per deliberation; the shared feed only gets terminal entries (the finish writes them).
    assert await store.feed() == []


async def test_record_survives_valkey_restart_from_aof(tmp_path):
    """Kill -9 the server and start it again on the same data dir: the AOF brings everything back."""
    from actors.store import Store
    from councils_local.valkey_server import ValkeyProcess

    server = ValkeyProcess(tmp_path / "v").start()
    store = Store(server.url, "x:")
    try:
        await store.put_council(default_council("DEV", "e1"))
        await store.put_engine(EngineSpec(name="e1", model="m"))
        rec = DeliberationRecord(request=DeliberationRequest(role="DEV", task="t"))
        await store.create_record(rec)
        server.kill()  # at once: appendfsync always, an acknowledged write is on disk
        server.start()
        assert (await store.get_council("DEV")).role == "DEV"
        assert (await store.get_engine("e1")).model == "m"
        assert (await store.get_record(rec.id)).id == rec.id
        assert await store.active_ids("DEV") == [rec.id]
    finally:
        await store.close()
        server.stop()


# -- fenced writes and atomic completion (issue 16) ---------------------------------------------------
def _record(role: str = "DEV", task: str = "Reverse a list.") -> DeliberationRecord:
    return DeliberationRecord(request=DeliberationRequest(role=role, task=task))


async def _feed(store, delib_id: str) -> list[str]:
    return [kind for _, kind, data in await store.feed() if data["id"] == delib_id]


async def _terminal_events(store, delib_id: str) -> list[str]:
    return [k for _, k, _ in await store.read_events(delib_id, count=10_000)
            if k in ("completed", "failed", "timeout")]


async def test_a_stale_owner_gets_an_error_and_a_finished_record_is_immutable(store):
    import pytest

    from actors.store import StaleWriter

    rec = _record()
    await store.create_record(rec)
    first = await store.claim_record(rec.id)
    second = await store.claim_record(rec.id)  # a second runner takes the deliberation over
    assert second > first
    rec.status, rec.stages_done = "in_progress", ["propose"]
    with pytest.raises(StaleWriter, match="a newer runner owns it"):
        await store.save_record(rec, first)
    assert (await store.get_record(rec.id)).stages_done == []  # nothing of the stale write landed
    await store.save_record(rec, second)
    with pytest.raises(StaleWriter):  # a stale runner cannot finish it either
        await store.fail_record(rec.model_copy(), first, "boom")
    assert await store.fail_record(rec.model_copy(), second, "boom")
    with pytest.raises(ValueError, match="finish_record or fail_record"):  # a checkpoint never ends a record
        await store.save_record(rec.model_copy(update={"status": "failed"}), second)
    # A late in_progress checkpoint after the finish, by the owner itself or a one-off writer: refused.
    late = rec.model_copy(update={"stages_done": ["propose", "critique-1"]})
    for epoch in (second, None):
        with pytest.raises(StaleWriter, match="the record is finished"):
            await store.save_record(late, epoch)
    stored = await store.get_record(rec.id)
    assert stored.status == "failed" and stored.stages_done == ["propose"]
    assert 0 < await store.ttl_s("delib", rec.id) <= 60
    assert await store.active_ids("DEV") == []
    assert await store.claim_record(rec.id) is None  # nothing left to run


async def test_a_retried_finish_writes_one_event_and_counts_once(store):
    from actors.models.records import DeliberationResult, Proposal, StageTiming, Usage

    rec = _record()
    await store.create_record(rec)
    epoch = await store.claim_record(rec.id)
    rec.timings = [StageTiming(stage="propose", seconds=0.75), StageTiming(stage="critique-1", seconds=0.25),
                   StageTiming(stage="critique-2", seconds=0.5)]
    rec.result = DeliberationResult(proposals=[Proposal(author="a1", content="x", score=0.5, rank=1)],
                                    winner_id="a1", duration_s=1.25,
                                    usage=Usage(prompt_tokens=10, completion_tokens=4))
    outcomes = [await store.finish_record(rec.model_copy(), epoch) for _ in range(3)]
    assert outcomes == [True, False, False]
    assert await _feed(store, rec.id) == ["deliberation.completed"]
    assert await _terminal_events(store, rec.id) == ["completed"]
    # The store derived the status, the terminal event and the feed entry from the record and its result.
    stored = await store.get_record(rec.id)
    assert stored.status == "completed" and stored.finished_at is not None
    (_, _, terminal), = [e for e in await store.read_events(rec.id) if e[1] == "completed"]
    assert terminal == {"status": "completed", "winner_id": "a1", "score": 0.5}
    (_, _, entry), = [e for e in await store.feed() if e[2]["id"] == rec.id]
    assert entry["status"] == "completed" and entry["winner_id"] == "a1" and entry["usage"]["total_tokens"] == 14
    stats = await store.stats()
    assert stats["deliberations.DEV.completed"] == 1 and stats["accepted.DEV"] == 1
    assert stats["tokens.DEV.prompt"] == 10 and stats["tokens.DEV.completion"] == 4
    assert await store.durations("DEV") == [1.25]
    assert await store.duration_samples("DEV") == [
        {"s": 1.25, "stages": [["propose", 0.75], ["critique", 0.25], ["critique", 0.5]]}]
    await raw(store).rpush(store.key("durations", "DEV"), "2.5")  # a sample written before stage timings
    assert await store.durations("DEV") == [1.25, 2.5]
    assert 0 < await store.ttl_s("delib", rec.id, "events") <= 60


class _InProcessCouncil:
    """A council actor's class hosted in-process on the fake generator (as in test_council_async.py)."""

    def __init__(self, url: str, prefix: str, **generator):
        from actors.council import Council
        from tests.fakes import FakeGenerator

        self.council = Council("DEV", url, prefix, record_ttl_s=60, sweep_interval_s=0.05)
        self.council.generator = FakeGenerator(**generator)

    async def close(self) -> None:
        c = self.council
        c.retired = True
        for task in [c.sweeper, *c.tasks.values()]:
            if task is not None:
                task.cancel()
        await asyncio.sleep(0.05)
        await c.store.close()


async def test_two_runners_of_one_deliberation_finish_it_once(valkey_server, key_prefix, store):
    """A zombie council (slowed) and a second one (a switchover) run the same id: the record ends finished
    with its TTL, one completion event, counters incremented once, and the stale runner stops."""
    await store.put_council(default_council("DEV", "fake", n_agents=3, rounds=1, max_tokens=32))
    slow = _InProcessCouncil(valkey_server.url, key_prefix, delay=0.3)
    fast = _InProcessCouncil(valkey_server.url, key_prefix)
    rec = _record()
    await store.create_record(rec)
    try:
        await slow.council.submit(rec.id)
        slow_task = slow.council.tasks[rec.id]
        while (await store.get_record(rec.id)).status != "in_progress":
            await asyncio.sleep(0.01)
        done = await fast.council.deliberate(rec.id)
        assert done["status"] == "completed"
        await asyncio.wait_for(asyncio.shield(slow_task), 10)  # the slowed runner stops at its next write
        assert slow_task.exception() is None
        assert len(slow.council.generator.calls) < len(fast.council.generator.calls)
        final = await store.get_record(rec.id)
        assert final.status == "completed"
        assert final.model_dump(mode="json") == done
        assert 0 < await store.ttl_s("delib", rec.id) <= 60
        assert await store.active_ids("DEV") == []
        assert await _feed(store, rec.id) == ["deliberation.completed"]
        assert await _terminal_events(store, rec.id) == ["completed"]
        stats = await store.stats()
        assert stats["deliberations.DEV.completed"] == 1 and stats["accepted.DEV"] == 1
        assert stats["tokens.DEV.completion"] == final.result.usage.completion_tokens
        assert len(await store.durations("DEV")) == 1
    finally:
        await slow.close()
        await fast.close()


async def test_a_crash_between_result_and_completion_still_publishes_once(valkey_server, key_prefix, store):
    """The runner dies right after checkpointing the result (before the completion event): the restarted
    council finds the record unfinished, finishes it, and publishes exactly one completion event."""
    await store.put_council(default_council("DEV", "fake", n_agents=3, rounds=1, max_tokens=32))
    crashing = _InProcessCouncil(valkey_server.url, key_prefix)
    sink_event = crashing.council.sink.event

    async def crash_after_score(record, kind, data):
        await sink_event(record, kind, data)
        if kind == "stage.completed" and data.get("stage") == "score":
            raise asyncio.CancelledError  # the process is gone: nothing after this runs

    crashing.council.sink.event = crash_after_score
    rec = _record()
    await store.create_record(rec)
    restarted = None
    try:
        await crashing.council.submit(rec.id)
        task = crashing.council.tasks[rec.id]
        await asyncio.gather(task, return_exceptions=True)
        await crashing.close()
        restarted = _InProcessCouncil(valkey_server.url, key_prefix)  # its constructor reads the active set
        await restarted.council.resume_unfinished()
        for _ in range(500):
            if await _feed(store, rec.id):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a few sweeps more
        final = await store.get_record(rec.id)
        assert final.status == "completed" and final.result is not None
        assert await _feed(store, rec.id) == ["deliberation.completed"]
        assert await _terminal_events(store, rec.id) == ["completed"]
        assert (await store.stats())["deliberations.DEV.completed"] == 1
        assert restarted.council.generator.calls == []  # nothing ran again: the result was durable
        assert 0 < await store.ttl_s("delib", rec.id) <= 60
    finally:
        if restarted is not None:
            await restarted.close()


async def test_deleting_a_council_fails_its_deliberations_and_removes_its_keys(valkey_server, key_prefix, store):
    await store.put_council(default_council("DEV", "fake", n_agents=3, rounds=1, max_tokens=32))
    await store.put_council(default_council("QA", "fake"))
    runner = _InProcessCouncil(valkey_server.url, key_prefix, delay=0.3)
    done, running, pending, other = _record(), _record(), _record(), _record(role="QA")
    for rec in (done, other):
        await store.create_record(rec)
    try:
        assert (await runner.council.deliberate(done.id))["status"] == "completed"
        for rec in (running, pending):  # after it: the council's sweeper would run them meanwhile
            await store.create_record(rec)
        await runner.council.submit(running.id)
        task = runner.council.tasks[running.id]
        while (await store.get_record(running.id)).status != "in_progress":
            await asyncio.sleep(0.01)
        assert await store.delete_council("DEV")
        for rec in (running, pending):
            stored = await store.get_record(rec.id)
            assert stored.status == "failed" and stored.error == "council deleted"
            assert await _feed(store, rec.id) == ["deliberation.failed"]
            assert await _terminal_events(store, rec.id) == ["failed"]
            assert 0 < await store.ttl_s("delib", rec.id) <= 60
        await asyncio.wait_for(asyncio.shield(task), 10)  # its runner stopped at its next write
        assert (await store.get_record(running.id)).status == "failed"
        assert not await store.present(("active", "DEV"), ("durations", "DEV"), ("council", "DEV"))
        assert {k for k in await store.stats() if ".DEV" in k} == set()
        assert (await store.stats())["accepted.QA"] == 1 and await store.active_ids("QA") == [other.id]
    finally:
        await runner.close()


async def test_a_council_actor_created_after_its_delete_retires_itself(valkey_server, key_prefix, store):
    """A POST on another replica passed the existence check before the delete: its record lands after it,
    and its get-or-create makes a council actor for the deleted role. That actor fails the record and retires."""
    await store.put_council(default_council("DEV", "fake", n_agents=3, rounds=1, max_tokens=32))
    assert await store.delete_council("DEV")
    late = _record()
    await store.create_record(late)
    zombie = _InProcessCouncil(valkey_server.url, key_prefix)
    try:
        assert await zombie.council.submit(late.id) == "finished"
        assert zombie.council.retired and zombie.council.sweeper is None
        stored = await store.get_record(late.id)
        assert stored.status == "failed" and stored.error == "council DEV was deleted"
        assert await _feed(store, late.id) == ["deliberation.failed"]
        assert zombie.council.generator.calls == []
        assert not await store.present(("active", "DEV"))
        assert {k for k in await store.stats() if ".DEV" in k} == set()
    finally:
        await zombie.close()


async def test_valkey_sigkilled_mid_deliberation_keeps_every_acknowledged_write_and_it_completes(tmp_path):
    """SIGKILL of Valkey while a council runs a deliberation, restart from the AOF on the same port: every
    write acknowledged before the kill is there (no sleep: appendfsync always), and the council (its client
    reconnects and retries) completes the deliberation with one completion event."""
    from actors.store import Store
    from councils_local.valkey_server import ValkeyProcess

    server = ValkeyProcess(tmp_path / "v").start()
    store = Store(server.url, "x:", record_ttl_s=60)
    council = _InProcessCouncil(server.url, "x:", delay=0.3)
    try:
        await store.put_council(default_council("DEV", "fake", n_agents=3, rounds=1, max_tokens=32))
        rec = _record()
        await store.create_record(rec)
        await council.council.submit(rec.id)
        while "propose" not in (await store.get_record(rec.id)).stages_done:
            await asyncio.sleep(0.02)
        probes = [await store.add_event("probe", "probe", {"n": n}) for n in range(20)]
        events = await store.read_events(rec.id, count=10_000)
        checkpoint = await store.get_record(rec.id)
        server.kill()
        server.start()
        assert [entry_id for entry_id, _, _ in await store.read_events("probe", count=100)] == probes
        assert (await store.read_events(rec.id, count=10_000))[:len(events)] == events
        assert set(checkpoint.stages_done) <= set((await store.get_record(rec.id)).stages_done)
        for _ in range(1500):
            done = await store.get_record(rec.id)
            if done.finished:
                break
            await asyncio.sleep(0.02)
        assert done.status == "completed", done.error
        for _ in range(100):  # the record and its completion event are one write
            if await _feed(store, rec.id):
                break
            await asyncio.sleep(0.02)
        assert await _feed(store, rec.id) == ["deliberation.completed"]
    finally:
        await council.close()
        await store.close()
        server.stop()
