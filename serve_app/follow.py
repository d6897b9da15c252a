"""Following one deliberation until it ends: the one loop behind ?wait=true, the SSE stream and the streamed chat
completion (serve_app/service.py `follow`; sse.py and chat_response.py only format what it yields).

The deliberation's Valkey stream `<prefix>delib:<id>:events` is the source, read in XREAD BLOCK slices so a
client that went away is noticed between them. It yields every stage event after `after` as a `StageEvent`,
and ends after the terminal one (completed, failed, timeout). Between slices, when nothing arrived:
- the client went away (`disconnected`): it just ends;
- the record expired or was deleted: `Gone`, then it ends;
- the record is finished but its stream holds no terminal event (trimmed, or written by an older version): one
  more slice is waited for it, then a terminal `StageEvent` without an id is synthesized from the record;
- past `until` (wall clock: the record's deadline plus `wait_grace_s`, or a waiter's own bound): `Closed`, then
  it ends: nothing follows a stuck record forever;
- after `heartbeat_s` of silence: a `Heartbeat`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from actors.models.records import FINISHED, DeliberationRecord
from actors.store import Store

TERMINAL_KINDS = FINISHED  # a deliberation's last stage event is named by its final status
SLICE_MS = 1000  # one XREAD BLOCK; also how soon a disconnect is noticed


@dataclass(frozen=True)
class StageEvent:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # the stream entry id (a resume point); None when synthesized from the record

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL_KINDS


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Gone:
    delib_id: str


@dataclass(frozen=True)
class Closed:
    record: DeliberationRecord | None  # as it stood when `until` passed


Followed = StageEvent | Heartbeat | Gone | Closed


def synthesized_end(record: DeliberationRecord) -> StageEvent:
    """The terminal event of a finished record whose stream lacks one."""
    data: dict[str, Any] = {"status": record.status, "error": record.error, "synthesized": True}
    if record.result is not None:
        data["winner_id"] = record.result.winner_id
    return StageEvent(record.status, data)


async def follow(store: Store, delib_id: str, after: str = "0-0", *, until: float | None = None,
                 disconnected: Callable[[], Awaitable[bool]] | None = None, slice_ms: int = SLICE_MS,
                 heartbeat_s: float = math.inf, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> AsyncIterator[Followed]:
    """A deliberation's events after `after` until it ends (see the module's docstring)."""
    last_sent = clock()
    finished_seen = False
    while True:
        if until is not None and wall() >= until:
            yield Closed(await store.get_record(delib_id))
            return
        block_ms = slice_ms if until is None else max(1, min(slice_ms, int((until - wall()) * 1000)))
        entries = await store.read_events(delib_id, after, block_ms=block_ms)
        for entry_id, kind, data in entries:
            event = StageEvent(kind, data, entry_id)
            yield event
            after, last_sent = entry_id, clock()
            if event.terminal:
                return
        if entries:
            continue  # more may be queued: read again before anything else
        if disconnected is not None and await disconnected():
            return
        record = await store.get_record(delib_id)
        if record is None:
            yield Gone(delib_id)
            return
        if record.finished:
            if finished_seen:
                yield synthesized_end(record)
                return
            finished_seen = True
        if clock() - last_sent >= heartbeat_s:
            yield Heartbeat()
            last_sent = clock()
