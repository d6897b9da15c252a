"""/v1/deliberations: start one (202, or the finished record with ?wait=true), read one; /v1/orchestrate."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from actors.orchestrate import OrchestrateRequest
from actors.models.requests import DeliberationRequest

from ..records import accepted, status_code
from .deps import AUTH, DELIBERATING, JSON_OBJECT, Service, errors

router = APIRouter(dependencies=AUTH)


@router.post("/v1/deliberations",
             responses={202: {"description": "Accepted: follow status_url or events_url (without wait=true; with it, "
                                             "when the wait hit user_config.max_wait_s or limits.max_waiters)",
                              "content": JSON_OBJECT}, **errors(*DELIBERATING)})
async def create_deliberation(request: DeliberationRequest, service: Service, wait: bool = Query(False),
                              idempotency_key: str | None = Header(None, alias="Idempotency-Key")) -> JSONResponse:
    record = await service.accept(request, idempotency_key)
    if not wait:
        return JSONResponse(accepted(record), status_code=202)
    finished = await service.wait_bounded(record)
    if finished is None:  # too many waiters, or max_wait_s passed: it runs on, the caller follows status_url
        return JSONResponse(accepted(record), status_code=202)
    return JSONResponse(finished.model_dump(mode="json"), status_code=status_code(finished))


@router.get("/v1/deliberations/{delib_id}", responses=errors(404, 422))
async def get_deliberation(delib_id: str, service: Service) -> dict:
    return await service.record_view(delib_id)


@router.post("/v1/orchestrate", responses=errors(*DELIBERATING))
async def orchestrate(body: OrchestrateRequest, service: Service) -> JSONResponse:
    """Deliberate (waiting for the result), then let an architect choose among the top_k candidates."""
    return JSONResponse(await service.orchestrate(body))
