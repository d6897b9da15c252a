"""The caps kept in Valkey, against a real valkey-server: the per-council and the global active caps, checked in
the Lua script that stores the record, and the council caps, checked in the transaction that writes the council.
Bursts never overshoot them and a refused write leaves nothing behind (docs/security.md, Limits)."""

from __future__ import annotations

import asyncio

import pytest

from actors.models.councils import default_council
from actors.models.records import DeliberationRecord
from actors.models.requests import DeliberationRequest

pytestmark = pytest.mark.valkey


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
    await store.fail_record(first, None, "done with it")
    refused = next(r for r in records if r.id not in stored)
    _, is_new = await store.create_record(refused, max_active=3)
    assert is_new and len(await store.active_ids("QA")) == 3


async def test_global_active_cap_holds_under_a_burst_of_50(store):
    from actors.store import CouncilBusy, ServiceBusy

    roles = ["DEV", "QA", "DATA", "OPS", "SEC"]
    for role in roles:
        await store.put_council(default_council(role, "fake"))
    records = [DeliberationRecord(request=DeliberationRequest(role=roles[i % 5], task=f"t{i}")) for i in range(50)]
    outcomes = await asyncio.gather(*(store.create_record(r, max_active=4, max_active_total=7) for r in records),
                                    return_exceptions=True)
    created = [o for o in outcomes if isinstance(o, tuple)]
    assert len(created) == 7 and all(is_new for _, is_new in created)
    assert all(isinstance(o, (ServiceBusy, CouncilBusy)) for o in outcomes if not isinstance(o, tuple))
    assert sum(isinstance(o, ServiceBusy) for o in outcomes) >= 50 - 7 - 5
    assert sum([await store.active_count(role) for role in roles]) == 7
    refused = [r for r, o in zip(records, outcomes) if not isinstance(o, tuple)]
    assert [await store.get_record(r.id) for r in refused] == [None] * len(refused)  # nothing half-written
    # A retry of an accepted id is not refused by the cap.
    first = created[0][0]
    again, is_new = await store.create_record(DeliberationRecord(id=first.id, request=first.request),
                                              max_active=4, max_active_total=7)
    assert not is_new and again.id == first.id


async def test_council_caps_are_atomic(store):
    from actors.store import RegistryFull

    outcomes = await asyncio.gather(*(store.put_council_capped(default_council(f"C{i}", "fake", 2), 4, 100)
                                      for i in range(12)), return_exceptions=True)
    assert sum(isinstance(o, tuple) for o in outcomes) == 4
    assert all(isinstance(o, RegistryFull) and o.limit == "max_councils" for o in outcomes if not isinstance(o, tuple))
    assert len(await store.list_councils()) == 4
    existing = (await store.list_councils())[0]
    stored, created = await store.put_council_capped(existing, 4, 100)  # replacing one is not a new council
    assert not created and stored.version == 2
    with pytest.raises(RegistryFull) as exc:  # 3 others x 2 agents + 5 > 10
        await store.put_council_capped(default_council(existing.role, "fake", 5), 4, 10)
    assert exc.value.limit == "max_agents_total"
    assert (await store.get_council(existing.role)).agents == existing.agents
