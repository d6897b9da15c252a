"""A council as an OpenAI-compatible model: `POST /v1/chat/completions`, `GET /v1/models`.

Each council is the model `council-<ROLE>`. The last user message is the task, preceded by the
conversation's earlier user and assistant turns that fit (newest kept first, see `with_earlier_turns`); the
system (or developer) messages are the rubric; the answer is the winning proposal and `usage` sums the tokens of
every agent of the deliberation. With `stream: true` the response is Server-Sent Events of
`chat.completion.chunk` objects, as OpenAI sends them (serve_app/chat_response.py builds the answers; this module
holds the request side: the shapes, the request -> deliberation mapping, OpenAI's error shape).

Council-specific request fields (the official client sends them with `extra_body`): `rounds`,
`num_agents`, `requirements`, `timeout_s`, `metadata`. Sampling fields (temperature, top_p, seed, stop,
...) are accepted and ignored: each agent has its own. Unknown fields are ignored, as OpenAI-compatible
servers do.

The deliberation is an ordinary one (the same limits, 429 and record): the completion id is
`chatcmpl-<deliberation id>` and the response's `council` field links the record.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.protocol import TASK_CHARS
from actors.models.councils import CouncilSpec
from actors.models.limits import CEILING_MAX_TOKENS, Limits
from actors.models.requests import DeliberationRequest

from . import validation
from .errors import ApiError, error_body, validation_message

MODEL_PREFIX = "council-"
OWNER = "councils-on-ray"
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


def model_list(councils: list[CouncilSpec]) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(c) for c in councils]}


def role_of(model: str) -> str:
    """The council a model name stands for ("council-DEV" -> "DEV"), or "" for any other name."""
    return model[len(MODEL_PREFIX):] if model.startswith(MODEL_PREFIX) else ""


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


def to_deliberation(body: ChatCompletionRequest, role: str, limits: Limits | None = None) -> DeliberationRequest:
    """The deliberation a chat request asks for, within the limits in force; errors name the chat request's
    fields (body.messages.<i>.content, body.model, ...). What depends on the council is checked when the
    service accepts it, as for any deliberation."""
    limits = limits or Limits()
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        raise ApiError(422, "body.messages: at least one message with role 'user' is needed (the last one is the task)")
    task_at = users[-1]
    task = with_earlier_turns(body.messages, task_at, limits.max_task_chars)
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
    validation.raise_for(validation.request_errors(request, limits, loc=()), rename)
    return request
