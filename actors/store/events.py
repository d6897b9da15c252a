"""Event streams in Valkey: each deliberation's stage events (`<prefix>delib:<id>:events`, what SSE and the
waiters follow) and the terminal entries of the shared feed `<prefix>events` (written by records.py's finish)."""

from __future__ import annotations

import json
from typing import Any

from .base import StoreBase

EVENTS_MAXLEN = 10_000  # councils:events is a feed, not an archive
DELIB_EVENTS_MAXLEN = 2_000  # one deliberation's stage events

Event = tuple[str, str, dict[str, Any]]  # (stream id, kind, data)


class EventStreams(StoreBase):
    async def add_event(self, delib_id: str, kind: str, data: dict[str, Any]) -> str:
        """Append a stage event (the terminal one is written with the record's finish, records.py)."""
        return await self.client.xadd(self.key("delib", delib_id, "events"), {"kind": kind, "data": json.dumps(data)},
                                      maxlen=DELIB_EVENTS_MAXLEN, approximate=True)

    async def read_events(self, delib_id: str, after: str = "0-0", block_ms: int | None = None,
                          count: int = 100) -> list[Event]:
        """Stage events after the given stream id: [(id, kind, data)]."""
        key = self.key("delib", delib_id, "events")
        resp = await self.client.xread({key: after}, count=count, block=block_ms)
        out = []
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                out.append((entry_id, fields["kind"], json.loads(fields["data"])))
        return out

    async def get_event(self, delib_id: str, entry_id: str) -> Event | None:
        """One stage event by its stream id: (id, kind, data), or None."""
        key = self.key("delib", delib_id, "events")
        for found_id, fields in await self.client.xrange(key, min=entry_id, max=entry_id, count=1):
            return found_id, fields["kind"], json.loads(fields["data"])
        return None

    async def feed(self) -> list[Event]:
        """The shared feed `<prefix>events`, oldest first: (id, kind, data)."""
        return [(entry_id, f["kind"], json.loads(f["data"])) for entry_id, f in await self.client.xrange(self.key("events"))]
