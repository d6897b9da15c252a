"""/v1/deliberations/{id}/events: Server-Sent Events from the deliberation's Valkey stream (serve_app/sse.py),
resumable with Last-Event-ID; at most limits.max_sse_connections open per replica (429 beyond)."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from .. import sse
from .deps import AUTH, Service, errors

router = APIRouter(dependencies=AUTH)


@router.get("/v1/deliberations/{delib_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: id = stream entry id, event = kind, "
                                            "data = JSON; ends after completed / failed / timeout"},
                       **errors(404, 422, 429)})
async def deliberation_events(
    delib_id: str,
    request: Request,
    service: Service,
    last_event_id: str | None = Query(None, description="resume after this event id (as Last-Event-ID)"),
    last_event_id_header: str | None = Header(None, alias="Last-Event-ID"),
) -> EventSourceResponse:
    # The header is what a reconnecting EventSource sends; the query parameter is for clients that cannot.
    after = last_event_id_header or last_event_id or "0-0"
    return sse.response(await service.events(delib_id, after, request.is_disconnected))
