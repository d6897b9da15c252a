"""A council as an OpenAI-compatible model: `POST /v1/chat/completions`, `GET /v1/models`.

Each council is the model `council-<ROLE>`. The last user message is the task, preceded by the
conversation's earlier user and assistant turns that fit (newest kept first, see `with_earlier_turns`); the
system (or developer) messages are the rubric; the answer is the winning proposal and `usage` sums the tokens of
every agent of the deliberation. With `stream: true` the response is Server-Sent Events of
`chat.completion.chunk` objects, as OpenAI sends them: first the assistant role, then one chunk per
stage event of the deliberation, whose delta has no content but a `council` field (the progress), then
the winning answer in content chunks once it is chosen, a chunk with `finish_reason: "stop"`, the usage
chunk if `stream_options.include_usage`, and `data: [DONE]`. A deliberation that fails or times out
ends a stream with `data: {"error": {...}}`, which the official client raises as an APIError.

Council-specific request fields (the official client sends them with `extra_body`): `rounds`,
`num_agents`, `requirements`, `timeout_s`, `metadata`. Sampling fields (temperature, top_p, seed, stop,
...) are accepted and ignored: each agent has its own. Unknown fields are ignored, as OpenAI-compatible
servers do.

The deliberation is an ordinary one (the same limits, 429 and record): the completion id is
`chatcmpl-<deliberation id>` and the response's `council` field links the record.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Literal

from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.protocol import TASK_CHARS
from actors.specs import CEILING_MAX_TOKENS, CouncilSpec, DeliberationRecord, DeliberationRequest

from . import limits, sse
from .errors import ApiError, error_body, validation_message

if TYPE_CHECKING:
    from .app import Ingress

MODEL_PREFIX = "council-"
OWNER = "councils-on-ray"
ANSWER_CHUNK_CHARS = 48  # the winning answer is streamed in pieces of about this size
HEARTBEAT_S = 15.0
WAIT_GRACE_S = 30.0  # default time for the council to end a deliberation past its deadline
TERMINAL_KINDS = sse.TERMINAL_KINDS
RUBRIC_ROLES = ("system", "developer")


# -- request and response shapes ----------------------------------------------------------------------
class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Lenient):
    type: str = Field(max_length=64)
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=256)


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    model: str = Field(min_length=1, max_length=256, description="council-<ROLE>, as listed by GET /v1/models")
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=CEILING_MAX_TOKENS, description="per agent generation")
    max_completion_tokens: int | None = Field(None, ge=1, le=CEILING_MAX_TOKENS, description="same as max_tokens")
    n: int | None = Field(None, ge=1, le=1, description="only 1")
    # Accepted and ignored: each agent of the council has its own sampling settings.
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    # Council extensions (OpenAI clients: extra_body).
    rounds: int | None = Field(None, description="peer-review rounds (default: the council's)")
    num_agents: int | None = Field(None, description="agents taking part (default: all of the council)")
    requirements: list[str] | None = Field(None, description="requirements the checks look for")
    timeout_s: float | None = Field(None, description="deadline of the deliberation (default 300)")
    metadata: dict[str, Any] | None = Field(None, description="stored with the record; task_id goes to the events")


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str
    logprobs: None = None


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CouncilInfo(BaseModel):
    deliberation_id: str
    status_url: str
    winner_id: str
    score: float | None
    duration_s: float
    proposals: list[dict[str, Any]]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    system_fingerprint: str | None = None
    council: CouncilInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


# -- errors in OpenAI's shape (a superset of ours: error.message is in both) --------------------------
def openai_error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_body(status, message)
    body["error"].update({"type": type_, "code": code, "param": param})
    return JSONResponse(body, status_code=status, headers=headers)


def model_not_found(model: str) -> JSONResponse:
    return openai_error(404, f"The model {model!r} does not exist: councils are the models council-<ROLE> "
                             "(GET /v1/models lists them)", "invalid_request_error", "model_not_found", "model")


def model_card(spec: CouncilSpec) -> dict[str, Any]:
    return {"id": MODEL_PREFIX + spec.role, "object": "model", "created": int(spec.created_at), "owned_by": OWNER}


async def list_models(ingress: "Ingress") -> dict[str, Any]:
    councils = await ingress.store.list_councils()
    return {"object": "list", "data": [model_card(c) for c in councils]}


# -- request -> deliberation --------------------------------------------------------------------------
def _text(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for j, part in enumerate(message.content):
        if part.type != "text" or part.text is None:
            raise ApiError(422, f"body.messages.{index}.content.{j}: only text content is supported, not {part.type!r}")
        texts.append(part.text)
    return "\n".join(texts)


def with_earlier_turns(messages: list[ChatMessage], task_at: int, max_chars: int) -> str:
    """The task: the last user message, after the conversation's earlier user and assistant turns so a
    follow-up ("now add tests") is understood. The newest earlier turns that fit are kept, within
    max_chars and within the part of the task the agents' prompts show (protocol.TASK_CHARS), so the
    history never pushes the request itself out of the prompt; older turns are left out and the task
    says how many. A last message that is empty or too long on its own stays alone (it is the 422)."""
    task = _text(messages[task_at], task_at)
    turns = [f"{m.role}: {t}" for i, m in enumerate(messages[:task_at])
             if m.role in ("user", "assistant") and (t := _text(m, i).strip())]
    if not turns or not task.strip():
        return task
    tail = f"\n\nThe request now:\n{task}"
    budget = min(max_chars, TASK_CHARS) - len(tail) - 64  # 64: room for the heading
    kept: list[str] = []
    used = 0
    for turn in reversed(turns):
        if used + len(turn) > budget:
            break
        kept.insert(0, turn)
        used += len(turn) + 2  # + the blank line that joins it to the next
    if not kept:
        return task
    left_out = len(turns) - len(kept)
    head = "Conversation so far" + (f" ({left_out} earlier messages left out)" if left_out else "") + ":\n"
    return head + "\n\n".join(kept) + tail


def to_deliberation(body: ChatCompletionRequest, role: str) -> DeliberationRequest:
    """The deliberation a chat request asks for; errors name the chat request's fields."""
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        raise ApiError(422, "body.messages: at least one message with role 'user' is needed (the last one is the task)")
    task_at = users[-1]
    task = with_earlier_turns(body.messages, task_at, limits.current().max_task_chars)
    rubric_at = [i for i, m in enumerate(body.messages) if m.role in RUBRIC_ROLES]
    rubric = "\n\n".join(t for i in rubric_at if (t := _text(body.messages[i], i).strip()))
    constraints: dict[str, Any] = {"rubric": rubric}
    for name in ("requirements", "timeout_s", "metadata"):
        if getattr(body, name) is not None:
            constraints[name] = getattr(body, name)
    data = {"role": role, "task": task, "constraints": constraints, "rounds": body.rounds,
            "num_agents": body.num_agents, "max_tokens": body.max_completion_tokens or body.max_tokens}
    where = {("task",): ("body", "messages", task_at, "content"),
             ("constraints", "rubric"): ("body", "messages", rubric_at[0] if rubric_at else 0, "content"),
             ("role",): ("body", "model"),
             ("max_tokens",): ("body", "max_completion_tokens" if body.max_completion_tokens else "max_tokens")}

    def rename(errors: list[dict]) -> list[dict]:
        out = []
        for e in errors:
            loc = tuple(e.get("loc", ()))
            loc = loc[1:] if loc[:1] == ("body",) else loc
            for prefix, target in where.items():
                if loc[:len(prefix)] == prefix:
                    loc = (*target, *loc[len(prefix):])
                    break
            else:
                loc = ("body", *(loc[1:] if loc[:1] == ("constraints",) else loc))
            out.append({**e, "loc": list(loc)})
        return out

    try:
        request = DeliberationRequest.model_validate(data)
    except ValidationError as exc:
        errors = rename(exc.errors(include_url=False))
        raise ApiError(422, validation_message(errors), errors) from None
    errors = rename(limits.request_errors(request, loc=()))
    if errors:
        raise ApiError(422, validation_message(errors), errors)
    return request


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


async def chat_completions(ingress: "Ingress", body: ChatCompletionRequest,
                           disconnected: Callable[[], Awaitable[bool]], idempotency_key: str | None = None):
    role = body.model[len(MODEL_PREFIX):] if body.model.startswith(MODEL_PREFIX) else ""
    if not role or not limits.role_ok(role) or await ingress.store.get_council(role) is None:
        return model_not_found(body.model)
    request = to_deliberation(body, role)
    if body.stream:  # a stream slot first (limits.max_sse_connections): a refused stream starts nothing
        ingress._open_stream_slot()
        try:
            record = await ingress._accept(request, idempotency_key)
        except BaseException:
            sse.release()
            raise
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(sse.counted(stream(ingress, record, body.model, include_usage, disconnected)),
                                 media_type="text/event-stream", headers=sse.HEADERS)
    record = await ingress._accept(request, idempotency_key)
    record = await ingress._wait_finished(record)
    if record.status != "completed" or record.result is None:
        status, message = _ended_badly(record)
        return openai_error(status, message, "server_error", record.status)
    winner = record.result.proposals[0]
    return JSONResponse({
        "id": f"chatcmpl-{record.id}", "object": "chat.completion", "created": int(record.created_at),
        "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": winner.content},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(record), "system_fingerprint": None, "council": _council_info(record),
    })


# -- streaming ----------------------------------------------------------------------------------------
PROGRESS_FIELDS = ("stage", "round", "author", "critic", "target", "score", "rank")


def _progress(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A stage event without its texts: the progress a client shows while the council works."""
    return {"event": kind, **{k: data[k] for k in PROGRESS_FIELDS if k in data}}


async def stream(ingress: "Ingress", record: DeliberationRecord, model: str, include_usage: bool,
                 disconnected: Callable[[], Awaitable[bool]], *, slice_ms: int = 1000,
                 clock: Callable[[], float] = time.time) -> AsyncIterator[str]:
    store = ingress.store
    base = {"id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk", "created": int(record.created_at),
            "model": model, "system_fingerprint": None}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    def error(status: int, message: str, code: str) -> str:
        body = error_body(status, message)
        body["error"].update({"type": "server_error", "code": code, "param": None})
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    after, last_sent, finished_seen = "0-0", clock(), False
    # As wait=true: the live setting (user_config wait_grace_s) when the ingress has one.
    grace_s = getattr(getattr(ingress, "settings", None), "wait_grace_s", WAIT_GRACE_S)
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
            yield ": heartbeat\n\n"  # an SSE comment: OpenAI's client skips it
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
        body = {**base, "choices": [], "usage": _usage(final)}
        yield f"data: {json.dumps(body, separators=(',', ':'))}\n\n"
    yield "data: [DONE]\n\n"
