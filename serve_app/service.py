"""The service behind every route: councils (read, write, delete) and deliberations (accept, wait, stream,
orchestrate), over the Valkey store and the council actors. No HTTP in here but ApiError; the routes
(serve_app/routes/) are thin and the Serve ingress (serve_app/app.py) builds one service per replica.

Everything it knows is in Valkey; everything it runs is in the council and engine actors. A record is written
before a deliberation is acknowledged, so nothing accepted is lost; waits and streams follow the record and its
events in Valkey, not the actor call, so a council restart breaks neither.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from sse_starlette import ServerSentEvent

from actors import verifiers
from actors.orchestrate import OrchestrateRequest
from actors.models.base import AGENT_ID_PATTERN
from actors.models.config import AppConfig, RuntimeSettings
from actors.models.councils import AgentSpec, CouncilSpec, CouncilUpsert
from actors.models.limits import Limits
from actors.models.records import DeliberationRecord
from actors.models.requests import DeliberationRequest
from actors.store import Store

from . import chat_response, redact, sse, validation
from .errors import ApiError
from .follow import Followed, Gone, follow
from .records import check_delib_id, idempotent_id, progress, status_code
from .registry import ActorRegistry
from .stats import percentiles, role_summary, stage_percentiles
from .valkey_guard import ValkeyGuard

log = logging.getLogger("councils.ingress")

def _serve_app_name() -> str:
    try:
        from ray import serve

        return serve.get_replica_context().app_name
    except Exception:
        return "councils"


class CouncilService:
    def __init__(self, config: AppConfig, store: Store, registry: ActorRegistry, *, http_host: str | None = None,
                 deployed_at: float | None = None, app_name: Callable[[], str] = _serve_app_name,
                 idempotency_secret: bytes | None = None):
        self.config = config
        self.store = store
        self.registry = registry
        self.http_host = http_host  # Serve's bind address: /readyz details for local callers of an open API
        self.deployed_at = deployed_at  # when the builder ran: orders deploys (declarative.py)
        self.app_name = app_name
        self.settings = RuntimeSettings()  # live settings (user_config)
        self.limits: Limits = config.limits
        # Which isolation the sandbox gives on this node (the verifiers' own checks say it per run too).
        self.sandbox = {**verifiers.sandbox_isolation(),
                        "allow_unisolated_sandbox": config.verification.allow_unisolated_sandbox}
        self.valkey = ValkeyGuard(store)
        self.streams = sse.StreamSlots()  # this replica's open event streams (limits.max_sse_connections)
        self.waiters = sse.StreamSlots()  # this replica's requests waiting for a deliberation (limits.max_waiters)
        # The key of the Idempotency-Key HMAC (records.idempotent_id): from the replica's secret file, else the one
        # the service keeps in Valkey (generated once, shared by every replica), read on first use.
        self._idempotency_secret = idempotency_secret
        self.started_at = time.time()
        # Set by the start-up reconcile (serve_app/reconcile.py).
        self.restored = False
        self.engines_ready = False
        self.reconcile_error: str | None = None

    def apply_settings(self, settings: RuntimeSettings) -> None:
        """Live settings (user_config): retention, timeouts, and the limits in force."""
        self.settings = settings
        ttl = settings.record_ttl_s or self.config.record_ttl_s
        self.store.record_ttl_s = ttl
        self.registry.record_ttl_s = ttl
        self.limits = settings.limits or self.config.limits

    @property
    def ready(self) -> bool:
        return self.restored and self.engines_ready

    # -- councils ---------------------------------------------------------------------------------
    async def list_councils(self) -> list[CouncilSpec]:
        return await self.store.list_councils()

    async def find_council(self, role: str) -> CouncilSpec | None:
        """The council, or None for a role that is invalid or unknown (no error: the caller answers)."""
        return await self.store.get_council(role) if validation.role_ok(role, self.limits) else None

    async def council(self, role: str) -> CouncilSpec:
        spec = await self.store.get_council(validation.check_role(role, self.limits))
        if spec is None:
            raise ApiError(404, f"council {role!r} not found")
        return spec

    def writable(self, role: str) -> None:
        """A council declared in the deployed config (`councils:`) belongs to it: an API write would be put
        back at the next replica start, so it is refused (409), naming the config."""
        if any(c.role == role for c in self.config.councils):
            raise ApiError(409, f"council {role} is owned by the deployed config (args.councils of Serve application "
                                f"{self.app_name()!r}); change it there and `serve deploy` again")

    async def put_council(self, role: str, body: CouncilUpsert) -> tuple[CouncilSpec, bool]:
        spec = validation.resolve_council(role, body, self.limits, writable=self.writable)
        await self._check_engines(body.agents)
        return await self._store_and_apply(spec)

    async def delete_council(self, role: str) -> None:
        await self.council(role)
        self.writable(role)
        # Valkey first: it is the truth, and a council deleted there is never restored again.
        await self.store.delete_council(role)
        await self.registry.remove_council(role)

    async def add_agent(self, role: str, agent: AgentSpec) -> CouncilSpec:
        spec = await self.council(role)
        self.writable(role)
        spec = validation.resolve_new_agent(spec, agent, self.limits)
        await self._check_engines([agent])
        return (await self._store_and_apply(spec))[0]

    async def remove_agent(self, role: str, agent_id: str) -> CouncilSpec:
        spec = await self.council(role)
        self.writable(role)
        if not re.fullmatch(AGENT_ID_PATTERN, agent_id) or all(a.id != agent_id for a in spec.agents):
            raise ApiError(404, f"agent {agent_id!r} not in council {role}")
        if len(spec.agents) == 1:
            raise ApiError(409, f"agent {agent_id!r} is the last agent of council {role}; delete the council instead")
        spec = spec.model_copy(update={"agents": [a for a in spec.agents if a.id != agent_id]})
        return (await self._store_and_apply(spec))[0]

    async def _check_engines(self, agents: list[AgentSpec]) -> None:
        known = {e.name for e in await self.store.list_engines()}
        unknown = sorted({a.engine for a in agents} - known)
        if unknown:
            raise ApiError(422, f"unknown engine(s) {unknown}; known engines: {sorted(known)}")

    async def _store_and_apply(self, spec: CouncilSpec) -> tuple[CouncilSpec, bool]:
        # Within max_councils and max_agents_total, checked and written atomically: a refused write leaves
        # nothing behind and creates no actor.
        await self.valkey.check_room()
        stored, created = await self.store.put_council_capped(spec, self.limits.max_councils,
                                                              self.limits.max_agents_total)
        await self.registry.council_calls(stored.role).reload()
        return stored, created

    # -- deliberations ----------------------------------------------------------------------------
    async def accept(self, request: DeliberationRequest, idempotency_key: str | None = None) -> DeliberationRecord:
        """Resolve the request against its council and the live settings (validation.resolve_request), store
        its record (durable before acknowledged) and hand it to the council. With an Idempotency-Key, a retry
        returns the deliberation the first request started."""
        council = await self.find_council(request.role)
        request = validation.resolve_request(request, council, self.settings, self.limits)
        record = DeliberationRecord(request=request, council_version=council.version)
        await self.valkey.check_room()
        if idempotency_key is not None:
            record.id = idempotent_id(request.role, idempotency_key, await self.idempotency_secret())
        # Durable before acknowledged: once this returns, a restarted council will find the record.
        # Beyond max_active_per_council or max_active_total, counted and written atomically (no race for the last
        # slot), CouncilBusy or ServiceBusy rise: 429 (serve_app/actor_errors.py).
        record, created = await self.store.create_record(record, max_active=self.limits.max_active_per_council,
                                                         max_active_total=self.limits.max_active_total)
        if not created:  # the same Idempotency-Key again
            if record.request != request:  # not naming the record: it may be another client's
                raise ApiError(409, "Idempotency-Key already used with a different request; use a new key for a "
                                    "new request")
            if record.finished:
                return record
        try:
            # Bounded: a council that is restarting must not hold the acknowledgement hostage.
            await asyncio.wait_for(self.registry.council_calls(request.role).submit(record.id), timeout=10)
        except Exception as exc:  # the council picks it up from Valkey (restart or sweep)
            log.warning("submit of %s to council %s deferred: %s", record.id, request.role, exc)
        return record

    async def idempotency_secret(self) -> bytes:
        if self._idempotency_secret is None:
            self._idempotency_secret = (await self.store.shared_secret("idempotency")).encode()
        return self._idempotency_secret

    async def wait_bounded(self, record: DeliberationRecord) -> DeliberationRecord | None:
        """The finished record for a waiter (?wait=true, a non-streamed chat completion), or None, and the caller
        answers 202 with the status URL: when this replica already has limits.max_waiters waiters, or when the
        deliberation has not ended within settings.max_wait_s. Either way the deliberation runs on."""
        if not self.waiters.try_open(self.limits.max_waiters):
            log.info("deliberation %s: %d waiters already (limits.max_waiters); answering 202", record.id,
                     self.waiters.open)
            return None
        try:
            current = await self.wait(record, max_wait_s=self.settings.max_wait_s)
        finally:
            self.waiters.release()
        return current if current.finished else None

    def take_waiter_slot(self) -> None:
        """One of limits.max_waiters, or 429 (orchestrate, which must wait: release with waiters.release())."""
        limit = self.limits.max_waiters
        if not self.waiters.try_open(limit):
            raise ApiError(429, f"this replica has its maximum of {limit} requests waiting for a deliberation "
                                "(limits.max_waiters); retry later", headers={"Retry-After": "10"})

    def follow(self, record: DeliberationRecord, after: str = "0-0", *, max_wait_s: float | None = None,
               disconnected: Callable[[], Awaitable[bool]] | None = None,
               heartbeat_s: float = math.inf) -> AsyncIterator[Followed]:
        """The deliberation's events after `after` until it ends (serve_app/follow.py), in Valkey, not the actor
        call, so a council restart breaks no follower; bounded by its deadline plus settings.wait_grace_s (past
        the deadline the council marks it timeout: leave it that time), or by `max_wait_s` when sooner."""
        until = record.deadline + self.settings.wait_grace_s
        if max_wait_s is not None:
            until = min(until, time.time() + max_wait_s)
        return follow(self.store, record.id, after, until=until, disconnected=disconnected, heartbeat_s=heartbeat_s)

    async def wait(self, record: DeliberationRecord, max_wait_s: float | None = None) -> DeliberationRecord:
        """The record once it ended, or as it stands when the follow bound passed (`follow`)."""
        async for item in self.follow(record, max_wait_s=max_wait_s):
            if isinstance(item, Gone):
                raise ApiError(404, f"deliberation {record.id} vanished")
        current = await self.store.get_record(record.id)
        return current or record

    async def record(self, delib_id: str) -> DeliberationRecord:
        record = await self.store.get_record(check_delib_id(delib_id))
        if record is None:
            raise ApiError(404, f"deliberation {delib_id!r} not found (unknown, or expired after its TTL)")
        return record

    async def record_view(self, delib_id: str) -> dict[str, Any]:
        """GET /v1/deliberations/{id}: the record, its progress, its events URL and any orchestration."""
        record = await self.record(delib_id)
        body = record.model_dump(mode="json")
        body["progress"] = progress(record)
        body["events_url"] = f"/v1/deliberations/{record.id}/events"
        orchestration = await self.store.get_orchestration(record.id)
        if orchestration is not None:
            body["orchestration"] = orchestration
        return body

    def open_stream_slot(self) -> None:
        """One of limits.max_sse_connections open streams of this replica, or 429 (streams.counted releases it)."""
        limit = self.limits.max_sse_connections
        if not self.streams.try_open(limit):
            raise ApiError(429, f"this replica has its maximum of {limit} open event streams "
                                "(limits.max_sse_connections); retry later", headers={"Retry-After": "5"})

    async def events(self, delib_id: str, after: str,
                     disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[ServerSentEvent]:
        """The SSE messages of a deliberation's events after `after`, holding a stream slot until it ends."""
        record = await self.record(delib_id)
        if not sse.valid_stream_id(after):
            raise ApiError(422, f"Last-Event-ID {after!r} is not an event id (<ms>-<seq>, as sent in `id:`)")
        self.open_stream_slot()
        return self.streams.counted(sse.event_stream(self.store, delib_id, after, disconnected=disconnected,
                                                     deadline=record.deadline + self.settings.wait_grace_s))

    async def chat_stream(self, request: DeliberationRequest, idempotency_key: str | None, model: str,
                          include_usage: bool, disconnected: Callable[[], Awaitable[bool]]
                          ) -> AsyncIterator[ServerSentEvent]:
        """A streamed chat completion: a stream slot first (limits.max_sse_connections: a refused stream starts
        nothing), the deliberation accepted, then its chunks (chat_response.stream over `follow`)."""
        self.open_stream_slot()
        try:
            record = await self.accept(request, idempotency_key)
        except BaseException:
            self.streams.release()
            raise
        followed = self.follow(record, disconnected=disconnected, heartbeat_s=sse.HEARTBEAT_S)
        chunks = chat_response.stream(record, followed, lambda: self.store.get_record(record.id), model,
                                      include_usage)
        return self.streams.counted(chunks)

    async def orchestrate(self, body: OrchestrateRequest) -> dict[str, Any]:
        """Deliberate (waiting for the result), then let an architect choose among the top_k candidates."""
        request = DeliberationRequest.model_validate(body.model_dump(exclude={"top_k"}))
        self.take_waiter_slot()  # a waiter too (limits.max_waiters): over the cap nothing is started
        try:
            record = await self.wait(await self.accept(request))
        finally:
            self.waiters.release()
        if record.status != "completed":
            raise ApiError(status_code(record), f"deliberation {record.id} ended {record.status}: {record.error}",
                           {"id": record.id, "status": record.status})
        # NotOrchestrable (expired or deleted since it completed) rises: 404 or 409 (serve_app/actor_errors.py).
        outcome = await self.registry.council_calls(request.role).orchestrate(record.id, body.top_k)
        return {
            "id": record.id,
            "role": record.request.role,
            "status_url": f"/v1/deliberations/{record.id}",
            "chosen": {k: outcome["chosen"][k] for k in ("number", "author", "content", "score", "rank")},
            "reason": outcome["reason"],
            "decided_by": outcome["decided_by"],
            "architect": outcome["architect"],
            "top_k": outcome["top_k"],
            "candidates": outcome["candidates"],
            "winner_id": record.result.winner_id if record.result else None,
        }

    # -- health and status ------------------------------------------------------------------------
    async def readiness(self, details: bool) -> dict[str, Any]:
        try:
            valkey_ok = await asyncio.wait_for(self.store.ping(), 2)
        except Exception:
            valkey_ok = False
        body = {"ready": valkey_ok and self.ready, "valkey": valkey_ok, "councils_restored": self.restored,
                "engines_ready": self.engines_ready}
        if details:  # error text may name internal hosts; Valkey's settings
            body["error"] = self.reconcile_error
            body["sandbox"] = self.sandbox
            if valkey_ok:
                body["valkey_persistence"] = await self.valkey.persistence()
        return body

    async def engine_replicas(self, name: str) -> list[dict[str, Any]]:
        """Each replica's actor of an engine with its load (calls in flight) and node, or why it did not answer."""
        async def one(actor: str) -> dict[str, Any]:
            try:
                # A lookup by name asks the GCS, which blocks while the head restarts: not on the event loop.
                handle = await asyncio.wait_for(asyncio.to_thread(self.registry.named, actor), timeout=2)
                if handle is None:
                    return {"actor": actor, "alive": False, "error": "no such actor"}
                health = await asyncio.wait_for(handle.health.remote(), timeout=2)
            except Exception as exc:  # dead, restarting or busy past the timeout
                # The exception's text (a remote traceback, a node's address) goes to the log, not to the caller.
                log.info("engine replica %s did not answer: %s", actor, redact.scrub(str(exc))[:500])
                return {"actor": actor, "alive": False, "error": type(exc).__name__}
            return {"actor": actor, "alive": True, "in_flight": health.get("in_flight", 0),
                    "node_id": health.get("node_id"), "pid": health.get("pid")}

        return list(await asyncio.gather(*(one(a) for a in await self.store.engine_replicas(name))))

    async def status(self) -> dict[str, Any]:
        councils = await self.store.list_councils()
        engines = await self.store.list_engines()
        counters = await self.store.stats()
        latency, stage_latency, by_role = {}, {}, {}
        for c in councils:
            samples = await self.store.duration_samples(c.role)
            latency[c.role] = percentiles([sample["s"] for sample in samples])
            stage_latency[c.role] = stage_percentiles(samples)
            by_role[c.role] = role_summary(c.role, counters, await self.store.active_count(c.role), latency[c.role])
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "ready": self.ready,
            "councils": [{"role": c.role, "agents": len(c.agents), "agent_ids": [a.id for a in c.agents],
                          "engines": sorted({a.engine for a in c.agents}), "rounds": c.rounds,
                          "version": c.version} for c in councils],
            "engines": [e.name for e in engines],
            "sandbox": self.sandbox,
            "engine_replicas": {e.name: await self.engine_replicas(e.name) for e in engines},
            "by_role": by_role,
            "counters": counters,
            "latency_s": latency,
            "stage_latency_s": stage_latency,
            "settings": {**self.settings.model_dump(mode="json"), "record_ttl_s": self.store.record_ttl_s},
        }
