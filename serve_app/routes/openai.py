"""/v1/models and /v1/chat/completions: each council is the model council-<ROLE> (serve_app/openai_compat.py maps
a chat request to a deliberation, serve_app/chat_response.py answers it, streamed or not)."""

from __future__ import annotations

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from .. import chat_response, sse
from ..records import accepted
from ..openai_compat import (ChatCompletion, ChatCompletionRequest, ModelList, model_list, model_not_found, role_of,
                             to_deliberation)
from .deps import AUTH, DELIBERATING, JSON_OBJECT, Service, errors

router = APIRouter(dependencies=AUTH)


@router.get("/v1/models", responses={200: {"model": ModelList}, **errors()})
async def list_models(service: Service) -> dict:
    return model_list(await service.list_councils())


@router.post("/v1/chat/completions",
             responses={200: {"model": ChatCompletion, "content": {"text/event-stream": {}},
                              "description": "a chat.completion, or with stream=true chat.completion.chunk events"},
                        202: {"description": "not streamed, and the wait hit user_config.max_wait_s or "
                                             "limits.max_waiters: the deliberation runs on; follow status_url",
                              "content": JSON_OBJECT},
                        **errors(*DELIBERATING)})
async def chat_completions(body: ChatCompletionRequest, request: Request, service: Service,
                           idempotency_key: str | None = Header(None, alias="Idempotency-Key")):
    role = role_of(body.model)
    if not role or await service.find_council(role) is None:
        return model_not_found(body.model)
    deliberation = to_deliberation(body, role, service.limits)
    if not body.stream:
        record = await service.accept(deliberation, idempotency_key)
        finished = await service.wait_bounded(record)
        if finished is None:  # too many waiters, or max_wait_s passed: 202 with the status URL (it runs on)
            return JSONResponse(accepted(record), status_code=202)
        return chat_response.completion(finished, body.model)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return sse.response(await service.chat_stream(deliberation, idempotency_key, body.model, include_usage,
                                                  request.is_disconnected))
