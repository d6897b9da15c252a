"""A finished deliberation as OpenAI's answer: a `chat.completion`, or with `stream: true` the
`chat.completion.chunk` events (serve_app/openai_compat.py has the request side and the shapes).

The stream: first the assistant role, then one chunk per stage event of the deliberation, whose delta has no
content but a `council` field (the progress), then the winning answer in content chunks once it is chosen, a
chunk with `finish_reason: "stop"`, the usage chunk if `stream_options.include_usage`, and `data: [DONE]`. A
deliberation that fails or times out ends a stream with `data: {"error": {...}}`, which the official client
raises as an APIError.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi.responses import JSONResponse
from sse_starlette import ServerSentEvent

from actors.models.records import DeliberationRecord

from . import sse
from .errors import error_body
from .follow import Closed, Followed, Gone, Heartbeat, StageEvent
from .openai_compat import openai_error
from .records import status_code

ANSWER_CHUNK_CHARS = 48  # the winning answer is streamed in pieces of about this size


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


def _ended_badly(record: DeliberationRecord) -> str:
    return f"deliberation {record.id} ended {record.status}: {record.error or 'no result'}"


def completion(record: DeliberationRecord, model: str) -> JSONResponse:
    """The chat.completion of a finished deliberation: the winning proposal, or OpenAI's error if it has none."""
    if record.status != "completed" or record.result is None:
        return openai_error(status_code(record), _ended_badly(record), "server_error", record.status)
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


async def stream(record: DeliberationRecord, followed: AsyncIterator[Followed], final: Callable[[], Awaitable[
                 DeliberationRecord | None]], model: str, include_usage: bool) -> AsyncIterator[ServerSentEvent]:
    """The messages of a deliberation's chat stream, from what the service's `follow` yields (`followed`, which
    ends at the terminal event, past the deadline and grace, or when the client went away) and the record as it
    ended (`final`)."""
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
    ended = False
    async for item in followed:
        if isinstance(item, StageEvent):
            if item.terminal:
                ended = True
                break
            yield chunk({"council": _progress(item.kind, item.data)})
        elif isinstance(item, Heartbeat):
            yield sse.comment("heartbeat")  # OpenAI's client skips comments
        elif isinstance(item, Gone):
            yield error(503, f"deliberation {record.id} vanished (expired)", "gone")
            return
        elif isinstance(item, Closed):
            ended = True  # past the deadline and grace: the record says how it stands
    if not ended:
        return  # the client went away; the deliberation goes on and its record keeps the result
    done = await final()
    if done is None or done.status != "completed" or done.result is None:
        done = done or record
        yield error(status_code(done), _ended_badly(done), done.status)
        return
    content = done.result.proposals[0].content
    for start in range(0, len(content), ANSWER_CHUNK_CHARS):
        yield chunk({"content": content[start:start + ANSWER_CHUNK_CHARS]})
    yield chunk({}, "stop", council=_council_info(done))
    if include_usage:
        yield sse.message({**base, "choices": [], "usage": _usage(done)})
    yield sse.message("[DONE]")
