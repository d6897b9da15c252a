"""Server-Sent Events for GET /v1/deliberations/{id}/events, read from the deliberation's Valkey stream.

The stream `<prefix>delib:<id>:events` is the only source (followed by serve_app/follow.py), so any ingress
replica serves any client, and a reconnect resumes exactly after the stream entry named by Last-Event-ID: each
SSE `id:` is the entry id, `event:` its kind, `data:` its JSON. The response ends after the terminal event
(completed, failed, timeout).

The framing is sse-starlette's (`message` builds each ServerSentEvent, `response` the EventSourceResponse), with
"\n" line ends and our own `: heartbeat` comment after HEARTBEAT_S of silence (its periodic ping is off); the
OpenAI stream (serve_app/chat_response.py) is framed by the same two.

Bounded (docs/security.md): at most `limits.max_sse_connections` open streams per replica (one more is a
429 with Retry-After), and a stream on a record that is still unfinished past its deadline plus the grace
(`wait_grace_s`) ends with a `closed` event instead of waiting forever.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from sse_starlette import EventSourceResponse, ServerSentEvent

from actors.store import Store

from .follow import SLICE_MS, TERMINAL_KINDS, Closed, Gone, Heartbeat, StageEvent, follow

STREAM_ID_PATTERN = re.compile(r"\d{1,20}-\d{1,20}")  # fullmatch: no trailing newline
HEARTBEAT_S = 15.0  # a comment line after this much silence keeps proxies from closing the response
RETRY_MS = 2000  # the reconnect delay a browser's EventSource should use
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
SEP = "\n"  # the line end of every message (sse-starlette's default is "\r\n")


def valid_stream_id(value: str) -> bool:
    return bool(STREAM_ID_PATTERN.fullmatch(value))


class StreamSlots:
    """The open event streams of one ingress replica (its service owns one): at most a limit at a time."""

    def __init__(self) -> None:
        self.open = 0

    def try_open(self, limit: int) -> bool:
        """Take one of `limit` stream slots; False when all are taken (answer 429)."""
        if self.open >= limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open = max(0, self.open - 1)

    async def counted(self, messages: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
        """The messages of a stream whose slot (try_open) is released when it ends, however it ends."""
        try:
            async for item in messages:
                yield item
        finally:
            self.release()


def message(data: Any = None, *, event: str | None = None, id: str | None = None, comment: str | None = None,
            retry: int | None = None) -> ServerSentEvent:
    """One SSE message: `data` as compact JSON on one line (json.dumps never emits a raw newline), a str as is."""
    if data is not None and not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"))
    return ServerSentEvent(data, event=event, id=id, comment=comment, retry=retry, sep=SEP)


def format_event(kind: str, data: dict[str, Any], event_id: str | None = None) -> ServerSentEvent:
    return message(data, event=kind, id=event_id)


def comment(text: str) -> ServerSentEvent:
    return message(comment=text)


def response(messages: AsyncIterator[ServerSentEvent]) -> EventSourceResponse:
    """The text/event-stream response of `messages` (their heartbeats are theirs: no library ping)."""
    return EventSourceResponse(messages, headers=HEADERS, ping=0, sep=SEP)


async def event_stream(
    store: Store,
    delib_id: str,
    after: str = "0-0",
    *,
    disconnected: Callable[[], Awaitable[bool]] | None = None,
    slice_ms: int = SLICE_MS,
    heartbeat_s: float = HEARTBEAT_S,
    clock: Callable[[], float] = time.monotonic,
    deadline: float | None = None,
    wall: Callable[[], float] = time.time,
) -> AsyncIterator[ServerSentEvent]:
    """SSE messages of what serve_app/follow.py yields: every event after `after` (its `id:` the stream entry),
    live ones as they are added, up to the terminal one (synthesized without an `id:` when the stream lacks it);
    `gone` when the record expired, `closed` past `deadline` (the record's deadline plus the grace), and a
    heartbeat comment after `heartbeat_s` of silence."""
    yield message(retry=RETRY_MS)
    if after != "0-0":
        resumed_at = await store.get_event(delib_id, after)
        if resumed_at is not None and resumed_at[1] in TERMINAL_KINDS:
            return  # the client already has the end
    async for item in follow(store, delib_id, after, until=deadline, disconnected=disconnected, slice_ms=slice_ms,
                             heartbeat_s=heartbeat_s, clock=clock, wall=wall):
        if isinstance(item, StageEvent):
            yield format_event(item.kind, item.data, item.id)
        elif isinstance(item, Heartbeat):
            yield comment("heartbeat")
        elif isinstance(item, Gone):
            yield format_event("gone", {"error": f"deliberation {delib_id} expired"})
        elif isinstance(item, Closed):
            yield format_event("closed", {"reason": "the deliberation's deadline and grace have passed",
                                          "status": item.record.status if item.record else None})
