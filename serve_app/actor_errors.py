"""What the store and the council actors raise, answered as HTTP: the one place a typed exception of theirs becomes
a status. serve_app/api.py installs `HANDLERS`; the service lets these exceptions rise and never translates them.

- CouncilBusy (the council's max_active_per_council): 429, Retry-After about one median deliberation of it.
- ServiceBusy (limits.max_active_total, all councils together): 429, Retry-After 10 s.
- RegistryFull (max_councils or max_agents_total): 422, nothing written.
- NotOrchestrable (the deliberation expired, was deleted, or is not completed): 404 or 409.

An exception raised in an actor arrives wrapped by Ray (`cause` unwraps it): its remote traceback is never sent.
"""

from __future__ import annotations

import math
from typing import Any, Awaitable, Callable

from ray.exceptions import RayTaskError

from actors.models.limits import Limits
from actors.orchestrate import NotOrchestrable
from actors.store import CouncilBusy, RegistryFull, ServiceBusy, Store

from .errors import ApiError


async def council_busy(exc: CouncilBusy, store: Store, limits: Limits) -> ApiError:
    """`Store.create_record(..., max_active=...)` counts and writes in one atomic step: no race for the last slot."""
    return ApiError(429, f"council {exc.role} is busy: {exc.active} deliberations pending or running "
                         f"(limit {limits.max_active_per_council}); retry later",
                    headers={"Retry-After": str(await retry_after_s(store, exc.role))})


async def service_busy(exc: ServiceBusy, store: Store, limits: Limits) -> ApiError:
    return ApiError(429, f"the service is busy: {exc.active} deliberations pending or running in all councils "
                         f"(limit {limits.max_active_total}); retry later", headers={"Retry-After": "10"})


async def registry_full(exc: RegistryFull, store: Store, limits: Limits) -> ApiError:
    what = {"max_councils": "councils", "max_agents_total": "agents in all councils"}[exc.limit]
    return ApiError(422, f"limits.{exc.limit}: this write would make {exc.value} {what}, over the limit of "
                         f"{exc.cap}; delete some first or raise the limit in the config")


async def not_orchestrable(exc: NotOrchestrable, store: Store, limits: Limits) -> ApiError:
    return ApiError(404 if exc.status is None else 409, str(exc))


def cause(exc: Exception) -> Exception:
    """The actor's own exception. Ray re-raises it as a subclass of RayTaskError and of its class, whose text is the
    remote traceback (hosts, paths): a caller is told the cause's message only."""
    return exc.cause if isinstance(exc, RayTaskError) else exc


async def retry_after_s(store: Store, role: str) -> int:
    """About one median deliberation of the council (1..60 s; 5 s when it has no history)."""
    samples = sorted(await store.durations(role))
    if not samples:
        return 5
    return max(1, min(60, math.ceil(samples[len(samples) // 2])))


HANDLERS: dict[type[Exception], Callable[[Any, Store, Limits], Awaitable[ApiError]]] = {
    CouncilBusy: council_busy,
    ServiceBusy: service_busy,
    RegistryFull: registry_full,
    NotOrchestrable: not_orchestrable,
}
