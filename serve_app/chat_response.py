"""A finished deliberation as OpenAI's answer: a `chat.completion`, or with `stream: true` the
`chat.completion.chunk` events (serve_app/openai_compat.py has the request side and the shapes).

The stream: first the assistant role, then one chunk per stage event of the deliberation, whose delta has no
content but a `council` field (the progress), then the winning answer in content chunks once it is chosen, a
chunk with `finish_reason: "stop"`, the usage chunk if `stream_options.include_usage`, and `data: [DONE]`. A
deliberation that fails or times out ends a stream with `data: {"error": {...}}`, which the official client
raises as an APIError.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi.responses import JSONResponse
from sse_starlette import ServerSentEvent

from actors.models.records import DeliberationRecord
from actors.store import Store

from . import sse
from .errors import error_body
from .openai_compat import openai_error

ANSWER_CHUNK_CHARS = 48  # the winning answer is streamed in pieces of about this size
HEARTBEAT_S = sse.HEARTBEAT_S
WAIT_GRACE_S = 30.0  # default time for the council to end a deliberation past its deadline
TERMINAL_KINDS = sse.TERMINAL_KINDS


def _usage(record: DeliberationRecord) -> dict[str, int]:
    usage = record.result.usage
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def _council_info(record: DeliberationRecord) -> dict[str, Any]:
    result = record.result
    return {"deliberation_id": record.id, "status_url": f"/v1/deliberations/{record.id}",
            "winner_id": result.winner_id, "score": result.proposals[0].score,
            "duration_s": round(result.duration_s, 3),
            "proposals": [{"author": p.author, "rank": p.rank, "score": p.score} for p in result.proposals]}


def _ended_badly(record: DeliberationRecord) -> tuple[int, str]:
    status = {"timeout": 504}.get(record.status, 503)
    return status, f"deliberation {record.id} ended {record.status}: {record.error or 'no result'}"


def completion(record: DeliberationRecord, model: str) -> JSONResponse:
    """The chat.completion of a finished deliberation: the winning proposal, or OpenAI's error if it has none."""
    if record.status != "completed" or record.result is None:
        status, message = _ended_badly(record)
        return openai_error(status, message, "server_error", record.status)
    winner = record.result.proposals[0]
    return JSONResponse({
        "id": f"chatcmpl-{record.id}", "object": "chat.completion", "created": int(record.created_at),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": winner.content},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(record), "system_fingerprint": None, "council": _council_info(record),
    })


# -- streaming ----------------------------------------------------------------------------------------
PROGRESS_FIELDS = ("stage", "round", "author", "critic", "target", "score", "rank")


def _progress(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A stage event without its texts: the progress a client shows while the council works."""
    return {"event": kind, **{k: data[k] for k in PROGRESS_FIELDS if k in data}}


async def stream(store: Store, record: DeliberationRecord, model: str, include_usage: bool,
                 disconnected: Callable[[], Awaitable[bool]], *, grace_s: float = WAIT_GRACE_S, slice_ms: int = 1000,
                 clock: Callable[[], float] = time.time) -> AsyncIterator[ServerSentEvent]:
    """The messages of a deliberation's chat stream; `grace_s`: as wait=true, the time past the deadline."""
    base = {"id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk", "created": int(record.created_at),
            "model": model, "system_fingerprint": None}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> ServerSentEvent:
        return sse.message({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                                 "logprobs": None}], **extra})

    def error(status: int, message: str, code: str) -> ServerSentEvent:
        body = error_body(status, message)
        body["error"].update({"type": "server_error", "code": code, "param": None})
        return sse.message(body)

    yield chunk({"role": "assistant", "content": ""})
    after, last_sent, finished_seen = "0-0", clock(), False
    while True:
        entries = await store.read_events(record.id, after, block_ms=slice_ms)
        ended = False
        for entry_id, kind, data in entries:
            after = entry_id
            if kind in TERMINAL_KINDS:
                ended = True
                break
            yield chunk({"council": _progress(kind, data)})
            last_sent = clock()
        if ended:
            break
        if entries:
            continue
        if await disconnected():
            return  # the deliberation goes on; its record keeps the result
        current = await store.get_record(record.id)
        if current is None:
            yield error(503, f"deliberation {record.id} vanished (expired)", "gone")
            return
        if current.finished:
            if finished_seen:  # finished, but its terminal event never came: the record is the truth
                break
            finished_seen = True
        elif clock() > record.deadline + grace_s:
            break
        if clock() - last_sent >= HEARTBEAT_S:
            yield sse.comment("heartbeat")  # OpenAI's client skips comments
            last_sent = clock()
    final = await store.get_record(record.id)
    if final is None or final.status != "completed" or final.result is None:
        status, message = _ended_badly(final or record)
        yield error(status, message, (final or record).status)
        return
    content = final.result.proposals[0].content
    for start in range(0, len(content), ANSWER_CHUNK_CHARS):
        yield chunk({"content": content[start:start + ANSWER_CHUNK_CHARS]})
    yield chunk({}, "stop", council=_council_info(final))
    if include_usage:
        yield sse.message({**base, "choices": [], "usage": _usage(final)})
    yield sse.message("[DONE]")
