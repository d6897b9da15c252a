"""/v1/councils: list, read, create or replace (PUT accepts what GET returns), delete; add and remove agents.
Writes need the admin scope (serve_app/auth.py); a council the deployed config declares answers them 409."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from actors.models.councils import AgentSpec, CouncilUpsert

from .deps import ADMIN_WRITE, AUTH, JSON_OBJECT, Service, errors

router = APIRouter(prefix="/v1/councils", dependencies=AUTH)


@router.get("", responses=errors())
async def list_councils(service: Service) -> dict:
    councils = await service.list_councils()
    return {"councils": [c.model_dump(mode="json") for c in councils], "count": len(councils)}


@router.get("/{role}", responses=errors(404, 422))
async def get_council(role: str, service: Service) -> dict:
    return (await service.council(role)).model_dump(mode="json")


@router.put("/{role}", responses={201: {"description": "Created (200: replaced)", "content": JSON_OBJECT},
                                  **errors(*ADMIN_WRITE)})
async def put_council(role: str, body: CouncilUpsert, service: Service) -> JSONResponse:
    stored, created = await service.put_council(role, body)
    return JSONResponse(stored.model_dump(mode="json"), status_code=201 if created else 200)


@router.delete("/{role}", responses=errors(*ADMIN_WRITE))
async def delete_council(role: str, service: Service) -> dict:
    await service.delete_council(role)
    return {"deleted": role}


@router.post("/{role}/agents", status_code=201, responses=errors(*ADMIN_WRITE))
async def add_agent(role: str, agent: AgentSpec, service: Service) -> dict:
    return (await service.add_agent(role, agent)).model_dump(mode="json")


@router.delete("/{role}/agents/{agent_id}", responses=errors(*ADMIN_WRITE))
async def remove_agent(role: str, agent_id: str, service: Service) -> dict:
    return (await service.remove_agent(role, agent_id)).model_dump(mode="json")
