"""The SSE event stream (serve_app/sse.py) against a real Valkey, in-process: the messages it yields, their wire
format as an SSE client (httpx-sse) reads it, a stream on a stuck record ending at its deadline, and the per-replica
stream slots released however a stream ends."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from httpx_sse import EventSource

from actors.models.records import DeliberationRecord
from actors.models.requests import DeliberationRequest
from serve_app.sse import StreamSlots, event_stream, format_event, valid_stream_id
from tests.valkey_raw import raw

pytestmark = pytest.mark.valkey


def parse_wire(wire: bytes) -> list:
    """What an SSE client (httpx-sse) reads from these bytes: its ServerSentEvents (comments skipped)."""
    return list(EventSource(httpx.Response(200, headers={"content-type": "text/event-stream"}, content=wire)).iter_sse())


def as_dict(message) -> dict | None:
    """A message the stream yielded: {"id", "event", "data"} (no "id" when it has none) or {"comment": ...};
    None for the `retry:` message."""
    if message.comment is not None:
        return {"comment": message.comment}
    if message.event is None:
        return None
    return {**({"id": message.id} if message.id is not None else {}), "event": message.event,
            "data": json.loads(message.data)}


async def collect(stream, limit: int = 1000) -> list[dict]:
    messages = []
    async for message in stream:
        messages.append(message)
        if len(messages) >= limit:
            break
    return [d for d in map(as_dict, messages) if d is not None]


async def new_record(store, **update) -> DeliberationRecord:
    record = DeliberationRecord(request=DeliberationRequest(role="DEV", task="t"), **update)
    await store.create_record(record)
    return record


def test_format_event_is_one_block_with_one_data_line():
    wire = format_event("proposal", {"content": "line 1\nline 2"}, "1-2").encode()
    assert wire == b'id: 1-2\nevent: proposal\ndata: {"content":"line 1\\nline 2"}\n\n'
    [event] = parse_wire(wire)
    assert (event.id, event.event, event.json()) == ("1-2", "proposal", {"content": "line 1\nline 2"})
    assert valid_stream_id("1700000000000-0") and not valid_stream_id("abc") and not valid_stream_id("1-2\nx")


async def test_history_then_close_and_exact_resume(store):
    record = await new_record(store)
    kinds = ["stage.started", "proposal", "proposal", "stage.completed", "completed"]
    ids = [await store.add_event(record.id, k, {"n": i}) for i, k in enumerate(kinds)]
    everything = await collect(event_stream(store, record.id, slice_ms=50))
    assert [e["event"] for e in everything] == kinds and [e["id"] for e in everything] == ids
    for cut in range(len(ids)):
        rest = await collect(event_stream(store, record.id, ids[cut], slice_ms=50))
        assert [e["id"] for e in rest] == ids[cut + 1:]  # exactly after, no gap, no duplicate


async def test_live_events_arrive_in_order_and_stream_ends_at_the_terminal_one(store):
    record = await new_record(store)

    async def council():
        for i in range(3):
            await asyncio.sleep(0.05)
            await store.add_event(record.id, "proposal", {"n": i})
        await store.add_event(record.id, "timeout", {"status": "timeout"})
        await store.add_event(record.id, "late", {})  # never sent: the stream closed at the terminal event

    writer = asyncio.create_task(council())
    events = await asyncio.wait_for(collect(event_stream(store, record.id, slice_ms=30)), 10)
    await writer
    assert [(e["event"], e["data"].get("n")) for e in events] == [
        ("proposal", 0), ("proposal", 1), ("proposal", 2), ("timeout", None)]


async def test_finished_record_without_terminal_event_gets_a_synthesized_one(store):
    record = await new_record(store)
    last = await store.add_event(record.id, "stage.completed", {"stage": "score"})
    await store.fail_record(record, None, "boom")
    (terminal, _, _), = [e for e in await store.read_events(record.id) if e[1] == "failed"]
    await raw(store).xdel(store.key("delib", record.id, "events"), terminal)  # lost: trimmed, or an old record
    events = await asyncio.wait_for(collect(event_stream(store, record.id, slice_ms=30)), 10)
    assert [e.get("id") for e in events] == [last, None]  # the synthesized one has no resume id
    assert events[-1]["event"] == "failed" and events[-1]["data"]["synthesized"] and events[-1]["data"]["error"] == "boom"


async def test_heartbeat_on_silence_and_disconnect_ends_the_stream(store):
    record = await new_record(store)
    polls = 0

    async def disconnected() -> bool:
        nonlocal polls
        polls += 1
        return polls > 6

    events = await asyncio.wait_for(
        collect(event_stream(store, record.id, slice_ms=20, heartbeat_s=0.05, disconnected=disconnected)), 10)
    assert events and all(e == {"comment": "heartbeat"} for e in events)


async def test_expired_record_ends_the_stream(store):
    record = await new_record(store)
    await store.add_event(record.id, "proposal", {})
    await raw(store).delete(store.key("delib", record.id))
    events = await asyncio.wait_for(collect(event_stream(store, record.id, slice_ms=20)), 10)
    assert [e["event"] for e in events] == ["proposal", "gone"]


# -- a stream's deadline, the connection slots ------------------------------------------------------------
async def test_an_sse_stream_on_a_stuck_record_ends_at_its_deadline(store):
    record = DeliberationRecord(request=DeliberationRequest(role="DEV", task="t", constraints={"timeout_s": 1}),
                                status="in_progress", created_at=time.time() - 100)
    await store.create_record(record)
    await store.add_event(record.id, "stage.started", {"stage": "propose"})
    started = time.time()
    events = await asyncio.wait_for(collect(event_stream(store, record.id, slice_ms=50,
                                                             deadline=record.deadline + 30)), 10)
    assert time.time() - started < 5
    assert [e["event"] for e in events] == ["closed"] and events[-1]["data"]["status"] == "in_progress"
    # Before the deadline it streams what there is (and would wait for more).
    live = event_stream(store, record.id, slice_ms=50, deadline=time.time() + 60)
    assert "stage.started" in [(await live.__anext__()).event for _ in range(2)]
    await live.aclose()


async def test_sse_slots_per_replica_are_released_however_a_stream_ends():
    slots = StreamSlots()
    assert slots.open == 0
    assert slots.try_open(2) and slots.try_open(2) and not slots.try_open(2)

    async def chunks():
        yield "a"
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        async for _ in slots.counted(chunks()):
            pass
    assert slots.open == 1 and slots.try_open(2)
    slots.release()
    slots.release()
    assert slots.open == 0
