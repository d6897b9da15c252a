"""/v1/status: councils, engines, per-council counters, tokens and latency percentiles, the live settings."""

from __future__ import annotations

from fastapi import APIRouter

from .deps import AUTH, Service, errors

router = APIRouter(dependencies=AUTH)


@router.get("/v1/status", responses=errors())
async def status(service: Service) -> dict:
    return await service.status()
