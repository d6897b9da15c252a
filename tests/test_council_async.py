"""The council host in-process (no Ray) on a real Valkey: sweeper, terminal events, the councils:events
feed, retention and the orchestrate method. The engine is the fake generator."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.council import Council
from actors.orchestrate import NotOrchestrable
from actors.models.councils import default_council
from actors.models.records import DeliberationRecord
from actors.models.requests import Constraints, DeliberationRequest
from actors.store import Store
from tests.fakes import FakeGenerator

pytestmark = pytest.mark.valkey

FEED_FIELDS = {"id", "role", "status", "task_id", "winner_id", "score", "duration_s", "usage", "error", "time"}


@pytest.fixture
async def council(valkey_server, key_prefix, store):
    await store.put_council(default_council("DEV", "fake", n_agents=3, rounds=1, max_tokens=32))
    c = Council("DEV", valkey_server.url, key_prefix, record_ttl_s=60, sweep_interval_s=0.05)
    c.generator = FakeGenerator()
    yield c
    c.retired = True
    for task in [c.sweeper, *c.tasks.values()]:
        if task is not None:
            task.cancel()
    await asyncio.sleep(0)
    await c.store.close()


def request(task: str = "Reverse a list.", timeout_s: float = 30, **metadata) -> DeliberationRequest:
    return DeliberationRequest(role="DEV", task=task, constraints=Constraints(timeout_s=timeout_s, metadata=metadata))


async def wait_finished(store: Store, delib_id: str, timeout_s: float = 10) -> DeliberationRecord:
    """Until the record is finished and its terminal event and feed entry are out (in that order)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        record = await store.get_record(delib_id)
        if record is not None and record.finished and any(d["id"] == delib_id for _, d in await feed(store)):
            return record
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{delib_id} not finished")


async def feed(store: Store) -> list[tuple[str, dict]]:
    return [(kind, data) for _, kind, data in await store.feed()]


async def stage_kinds(store: Store, delib_id: str) -> list[str]:
    return [kind for _, kind, _ in await store.read_events(delib_id, count=1000)]


async def test_stuck_record_past_its_deadline_becomes_timeout(council, store):
    """Accepted, never handed to a council (its submit was lost), deadline passed: the sweeper ends it."""
    record = DeliberationRecord(request=request(timeout_s=1, task_id="T-7"), created_at=time.time() - 5)
    await store.create_record(record)
    await council.resume_unfinished()  # starts the sweeper, as the actor's constructor does
    done = await wait_finished(store, record.id)
    assert done.status == "timeout" and "deadline passed before the deliberation could run" in done.error
    assert await store.active_ids("DEV") == []
    assert 0 < await store.ttl_s("delib", record.id) <= 60
    assert await stage_kinds(store, record.id) == ["timeout"]
    assert 0 < await store.ttl_s("delib", record.id, "events") <= 60
    [(kind, data)] = await feed(store)
    assert kind == "deliberation.failed" and set(data) == FEED_FIELDS
    assert data["status"] == "timeout" and data["id"] == record.id and data["task_id"] == "T-7"
    assert data["winner_id"] is None and data["usage"]["total_tokens"] == 0
    assert council.generator.calls == []  # nothing ran for it


async def test_orphaned_record_within_its_deadline_is_taken_over_and_completes(council, store):
    record = DeliberationRecord(request=request(task_id="T-8"))
    await store.create_record(record)
    await council.resume_unfinished()
    done = await wait_finished(store, record.id)
    assert done.status == "completed"
    kinds = await stage_kinds(store, record.id)
    assert kinds[0] == "stage.started" and kinds[-1] == "completed" and kinds.count("completed") == 1
    assert kinds.count("proposal") == 3 and kinds.count("critique") == 3 and kinds.count("revision") == 3
    assert kinds.count("score") == 3
    [(kind, data)] = await feed(store)
    assert kind == "deliberation.completed" and set(data) == FEED_FIELDS
    assert data["task_id"] == "T-8" and data["winner_id"] == done.result.winner_id
    assert data["score"] == done.result.proposals[0].score and data["duration_s"] >= 0
    assert data["usage"]["total_tokens"] == done.result.usage.total_tokens > 0 and data["error"] is None


async def test_sweeper_leaves_a_running_deliberation_to_its_own_deadline(council, store):
    council.generator = FakeGenerator(block_on=1)  # the first generation never answers
    record = DeliberationRecord(request=request(timeout_s=1))
    await store.create_record(record)
    await council.submit(record.id)
    await asyncio.sleep(0.3)
    assert record.id in council.tasks and await council.sweep() == []  # running: not touched
    done = await wait_finished(store, record.id)
    assert done.status == "timeout" and "timed out after 1s" in done.error
    await asyncio.sleep(0.3)  # a few more sweeps
    assert (await stage_kinds(store, record.id)).count("timeout") == 1
    assert [k for k, _ in await feed(store)] == ["deliberation.failed"]


async def test_finished_record_and_its_events_expire_after_the_ttl(valkey_server, key_prefix):
    store = Store(valkey_server.url, key_prefix, record_ttl_s=1)
    try:
        record = DeliberationRecord(request=request())
        await store.create_record(record)
        await store.add_event(record.id, "stage.started", {"stage": "propose"})
        await store.fail_record(record, None, "boom")  # the terminal event gives the stream the record's TTL
        await store.put_orchestration(record.id, {"choice": 1})
        assert await store.get_record(record.id) is not None
        await asyncio.sleep(2.1)
        assert await store.get_record(record.id) is None
        assert await store.read_events(record.id) == []
        assert await store.get_orchestration(record.id) is None
        # An unfinished record never expires.
        pending = DeliberationRecord(request=request())
        await store.create_record(pending)
        assert await store.ttl_s("delib", pending.id) == -1
    finally:
        await store.close()


async def test_orchestrate_method_is_idempotent(council, store):
    record = DeliberationRecord(request=request())
    await store.create_record(record)
    done = await council.deliberate(record.id)
    assert done["status"] == "completed"
    first = await council.orchestrate(record.id, 3)
    assert first["decided_by"] == "architect" and first["choice"] == 3
    council.generator = FakeGenerator(responder=lambda m, s: "garbage")
    assert await council.orchestrate(record.id, 2) == first  # retried: the stored outcome, no second ask
    assert (await store.stats())["orchestrations.DEV.architect"] == 1
    assert await store.get_orchestration(record.id) == first
    with pytest.raises(NotOrchestrable, match="not found") as unknown:
        await council.orchestrate("0" * 32, 3)
    assert unknown.value.status is None
    pending = DeliberationRecord(request=request())
    await store.create_record(pending)
    with pytest.raises(NotOrchestrable, match="is pending, not completed") as refused:
        await council.orchestrate(pending.id, 3)
    assert refused.value.status == "pending"


async def test_valkey_away_longer_than_the_retries_leaves_the_deliberation_to_the_sweeper(council, store):
    """A checkpoint that fails because Valkey is unreachable (a restart under load outlasts the client's
    retries) must not end the deliberation as failed: the record stays active with its last checkpoint and
    the sweeper resumes it once its lease lapses. Seen on a fresh-clone CI run of test_chaos."""
    from valkey.exceptions import ConnectionError as ValkeyConnectionError

    save = council.store.save_record
    outages = []

    async def save_while_valkey_is_away_once(record, epoch=None):
        if not outages:
            outages.append(record.stages_done[:])
            raise ValkeyConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return await save(record, epoch)

    council.store.save_record = save_while_valkey_is_away_once
    record = DeliberationRecord(request=request(task_id="T-9"))
    await store.create_record(record)
    await council.resume_unfinished()
    await council.submit(record.id)
    done = await wait_finished(store, record.id, timeout_s=20)
    assert outages, "no checkpoint was written"
    assert done.status == "completed" and done.error is None
    assert [k for k, _ in await feed(store)] == ["deliberation.completed"]
    assert await store.active_ids("DEV") == []
