"""The Valkey store against a real valkey-server."""

from __future__ import annotations

import asyncio

from actors.specs import DeliberationRecord, DeliberationRequest, EngineSpec, default_council


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
    assert await store.client.ttl(store.key("delib", rec.id)) == -1  # unfinished: never expires
    rec.status = "failed"
    rec.error = "boom"
    await store.save_record(rec)
    assert await store.active_ids("DEV") == []
    assert 0 < await store.client.ttl(store.key("delib", rec.id)) <= 60
    stats = await store.stats()
    assert stats["deliberations.DEV.failed"] == 1 and stats["accepted.DEV"] == 1


async def test_concurrent_creates_never_overshoot_the_active_limit(store):
    from actors.store import CouncilBusy

    records = [DeliberationRecord(request=DeliberationRequest(role="QA", task=f"t{i}")) for i in range(12)]
    outcomes = await asyncio.gather(*(store.create_record(r, max_active=3) for r in records), return_exceptions=True)
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    busy = [o for o in outcomes if isinstance(o, CouncilBusy)]
    assert len(created) == 3 and len(busy) == 9, outcomes
    assert all(b.active == 3 for b in busy)
    assert len(await store.active_ids("QA")) == 3
    # No half-written state: the refused records were never stored.
    stored = [r.id for r in records if await store.get_record(r.id) is not None]
    assert sorted(stored) == sorted(r.id for r, _ in created)
    # A retry of an accepted id is still idempotent at the limit, and a finished one frees a slot.
    first, _ = created[0]
    again, is_new = await store.create_record(DeliberationRecord(id=first.id, request=first.request), max_active=3)
    assert not is_new and again.id == first.id
    first.status = "completed"
    await store.save_record(first)
    refused = next(r for r in records if r.id not in stored)
    _, is_new = await store.create_record(refused, max_active=3)
    assert is_new and len(await store.active_ids("QA")) == 3


async def test_events_are_ordered_and_resumable(store):
    ids = [await store.add_event("abc", "proposal", {"n": i}) for i in range(5)]
    everything = await store.read_events("abc")
    assert [d["n"] for _, _, d in everything] == [0, 1, 2, 3, 4]
    rest = await store.read_events("abc", after=ids[2])
    assert [d["n"] for _, _, d in rest] == [3, 4]
    await store.publish("deliberation.completed", {"id": "abc"})
    feed = await store.client.xrange(store.key("events"))
    assert feed[-1][1]["kind"] == "deliberation.completed"


async def test_record_survives_valkey_restart_from_aof(tmp_path):
    """Kill -9 the server and start it again on the same data dir: the AOF brings everything back."""
    from actors.store import Store
    from serve_app.valkey_server import ValkeyProcess

    server = ValkeyProcess(tmp_path / "v").start()
    store = Store(server.url, "x:")
    try:
        await store.put_council(default_council("DEV", "e1"))
        await store.put_engine(EngineSpec(name="e1", model="m"))
        rec = DeliberationRecord(request=DeliberationRequest(role="DEV", task="t"))
        await store.create_record(rec)
        await asyncio.sleep(1.2)  # appendfsync everysec
        server.kill()
        server.start()
        assert (await store.get_council("DEV")).role == "DEV"
        assert (await store.get_engine("e1")).model == "m"
        assert (await store.get_record(rec.id)).id == rec.id
        assert await store.active_ids("DEV") == [rec.id]
    finally:
        await store.close()
        server.stop()
