"""The HTTP ingress: a stateless Ray Serve deployment with a FastAPI app.

Everything it knows is in Valkey; everything it runs is in the council and engine actors. Any
number of replicas may run, and a rollout replaces them without touching a council.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from typing import Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import ResponseError as ValkeyResponseError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from actors.specs import (
    AGENT_ID_PATTERN,
    AgentSpec,
    AppConfig,
    CouncilSpec,
    CouncilUpsert,
    DeliberationRecord,
    DeliberationRequest,
    RuntimeSettings,
)
from actors import metrics, topology, verifiers
from actors.orchestrate import OrchestrateRequest
from actors.protocol import stage_names
from actors.store import CouncilBusy, RegistryFull, ServiceBusy, Store

from . import declarative, sse
from .errors import ApiError, error_body, validation_message
from . import auth, limits, openai_compat, openapi_doc, redact, security
from .openai_compat import ChatCompletionRequest
from .registry import ActorRegistry
from .runtime import effective_request
from .stats import percentiles, role_summary

log = logging.getLogger("councils.ingress")

DELIB_ID_PATTERN = r"^[0-9a-f]{32}$"
VALKEY_FULL_AT = 0.9  # share of Valkey's maxmemory above which API writes get 503 (the rest is the GCS's)

api = FastAPI(
    title="Councils on Ray",
    version="0.1.0",
    description="Durable LLM deliberation councils as detached Ray actors, persisted in Valkey.",
)


@api.exception_handler(ApiError)
async def _api_error(_request: Request, exc: ApiError):
    return JSONResponse(error_body(exc.status, exc.message, exc.detail), status_code=exc.status,
                        headers=exc.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(_request: Request, exc: RequestValidationError):
    return JSONResponse(error_body(422, validation_message(exc.errors()), exc.errors()), status_code=422)


@api.exception_handler(ValidationError)
async def _model_error(_request: Request, exc: ValidationError):
    return JSONResponse(error_body(422, validation_message(exc.errors()), exc.errors(include_url=False)),
                        status_code=422)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_request: Request, exc: StarletteHTTPException):
    return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)


@api.exception_handler(ValkeyConnectionError)
@api.exception_handler(ValkeyTimeoutError)
async def _valkey_down(_request: Request, exc: Exception):
    return JSONResponse(error_body(503, f"Valkey unavailable: {type(exc).__name__}"), status_code=503,
                        headers={"Retry-After": "5"})


@api.exception_handler(ValkeyResponseError)
async def _valkey_refused(_request: Request, exc: Exception):
    """Valkey at maxmemory (noeviction) refuses writes: 503 with Retry-After. The write that was refused was one
    command, script or transaction, so nothing of it was stored (docs/security.md)."""
    text = str(exc)
    if "OOM" in text or "maxmemory" in text or "EXECABORT" in text:
        return JSONResponse(error_body(503, "Valkey is full (maxmemory reached): nothing was written; retry later"),
                            status_code=503, headers={"Retry-After": "30"})
    log.error("Valkey refused a command: %s", redact.scrub(text))
    return JSONResponse(error_body(503, f"Valkey error: {type(exc).__name__}"), status_code=503,
                        headers={"Retry-After": "5"})


@api.middleware("http")
async def _limit_body(request: Request, call_next):
    try:
        return await call_next(request)
    except Exception as exc:  # last resort: a clear JSON error, logged, never a bare 500 page
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(503, f"service error: {type(exc).__name__}: {redact.scrub(str(exc))}"),
                            status_code=503)


# Outermost last: the token is checked before anything else, then the body is bounded (limits.py)
# before any route reads it. The OpenAPI document describes the errors and the token (openapi_doc.py).
api.add_middleware(limits.BodyLimitMiddleware)
api.add_middleware(auth.BearerAuthMiddleware)
openapi_doc.install(api)


def check_role(role: str) -> str:
    return limits.check_role(role)  # ROLE_PATTERN and the configured limits.role_pattern


def _progress(record: DeliberationRecord) -> dict[str, Any]:
    # Stages skipped by early stop will never run: they leave the total.
    total = len(stage_names(record.request.rounds or 0)) - len(record.stages_skipped)
    return {"stages_done": len(record.stages_done), "stages_total": total,
            "last_stage": record.stages_done[-1] if record.stages_done else None}


def _status_code(record: DeliberationRecord) -> int:
    return {"completed": 200, "timeout": 504}.get(record.status, 503)


def idempotent_id(role: str, key: str | None) -> str | None:
    """The deliberation id an `Idempotency-Key` header stands for (per council), or None without one:
    a client that retries a POST with the same key gets the same deliberation, not a second one."""
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
        raise ApiError(422, "header Idempotency-Key: 1 to 255 printable ASCII characters")
    return hashlib.sha256(f"{role}\n{key}".encode()).hexdigest()[:32]


def check_delib_id(delib_id: str) -> str:
    if not re.fullmatch(DELIB_ID_PATTERN, delib_id):  # fullmatch: `$` alone also matches before a "\n"
        raise ApiError(404, f"deliberation {delib_id!r} not found")
    return delib_id

# Module helpers sit above the deployment: Serve serializes the class when it is decorated.


# On a worker node (actors/topology.py): a head crash leaves the replica, and its node's proxy, serving.
@serve.deployment(max_ongoing_requests=256,
                  ray_actor_options={"num_cpus": 0, "resources": topology.demand(topology.WORKER)})
@serve.ingress(api)
class Ingress:
    def __init__(self, config: AppConfig | dict, deployed_at: float | None = None):
        self.config = AppConfig.model_validate(config)
        # When the builder ran (serve deploy of changed args): orders configs, see declarative.py.
        self.deployed_at = deployed_at
        self.settings = RuntimeSettings()  # user_config; see reconfigure
        self.background: set[asyncio.Task] = set()
        url = self.config.valkey_url or os.environ.get("COUNCILS_VALKEY_URL")
        if not url:
            raise ValueError("no Valkey: set valkey_url in the config args or COUNCILS_VALKEY_URL")
        redact.register_url(url)  # its password never shows in an error or a log line of ours
        limits.configure(self.config.limits)
        # COUNCILS_API_TOKEN(_FILE), COUNCILS_ADMIN_TOKEN(_FILE); an unreadable token file stops the replica here
        auth_on = auth.configure(public_docs=self.config.public_docs)
        # An open API on a network interface only on purpose (docs/security.md): else the deploy fails, saying why.
        self.http_host = security.serve_http_host()
        security.check_exposure(self.http_host, auth_on, self.config.allow_unauthenticated)
        verifiers.check_installed()  # a verifier whose package is missing stops the replica, naming it
        self.store = Store(url, self.config.key_prefix, self.config.record_ttl_s)
        self.registry = ActorRegistry(url, self.config.key_prefix, self.config.record_ttl_s,
                                      self.config.council_max_concurrency,
                                      self.config.verification.model_dump())
        self.started_at = time.time()
        self.restored = False
        self.engines_ready = False
        self.reconcile_error: str | None = None
        # Reconcile in the background: the replica answers /healthz at once, /readyz when done.
        self.reconcile_task = asyncio.get_event_loop().create_task(self.reconcile())
        self._spawn(self._report_councils_forever())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_event_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    # -- live settings (user_config) ----------------------------------------------------------
    async def reconfigure(self, user_config: dict | None) -> None:
        """Serve calls this with the deployment's user_config at start and whenever only it changed:
        the replica keeps running. An invalid user_config raises, naming the field (deploy fails)."""
        settings = RuntimeSettings.model_validate(user_config or {})
        self.settings = settings
        ttl = settings.record_ttl_s or self.config.record_ttl_s
        self.store.record_ttl_s = ttl
        self.registry.record_ttl_s = ttl
        limits.configure(settings.limits or self.config.limits)
        log.info("settings applied: %s", settings.model_dump())
        self._spawn(self._push_settings_retrying())

    async def _push_settings(self) -> None:
        """Councils read the retention from Valkey (also after a restart); tell the running ones."""
        newest = await self.store.applied_stamp()
        if self.deployed_at is not None and newest is not None and newest > self.deployed_at:
            return  # a replica of an older deploy: the newer one's settings stand
        await self.store.put_settings({"record_ttl_s": self.store.record_ttl_s})
        handles = [h for c in await self.store.list_councils() if (h := self.registry.existing_council(c.role))]
        await asyncio.gather(*(h.configure.remote() for h in handles), return_exceptions=True)

    async def _push_settings_retrying(self) -> None:
        delay = 0.5
        while True:
            try:
                return await self._push_settings()
            except Exception as exc:
                log.warning("pushing settings to councils failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _report_councils_forever(self, interval_s: float = 10.0) -> None:
        """councils_active_councils: every replica reports the registry's size (they agree)."""
        while True:
            try:
                metrics.set_active_councils(int(await self.store.client.scard(self.store.key("councils"))))
            except Exception as exc:  # Valkey away for a moment
                log.debug("active councils metric: %s", exc)
            await asyncio.sleep(interval_s)

    # -- start-up reconcile -------------------------------------------------------------------
    async def reconcile(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._reconcile_once()
                self.reconcile_error = None
                return
            except Exception as exc:
                self.reconcile_error = redact.scrub(f"{type(exc).__name__}: {exc}")
                log.warning("reconcile failed (%s); retrying in %.1fs", self.reconcile_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _reconcile_once(self) -> None:
        await self.store.ping()
        await self._push_settings()
        # The config's engines and councils are declarative: written to Valkey first (declarative.py).
        applied = await declarative.apply_config(self.store, self.config, self.deployed_at)
        for role in applied.pruned:
            await self.registry.remove_council(role, "council pruned: absent from the deployed config")
        # Every council in Valkey gets its actor (get-or-create); one whose spec changed reloads it.
        councils = await self.store.list_councils()
        changed = set(applied.councils_changed)
        await asyncio.gather(*(self.registry.council(c.role).reload.remote() for c in councils if c.role in changed))
        await asyncio.gather(*(self.registry.council(c.role).info.remote() for c in councils))
        metrics.set_active_councils(len(councils))
        self.restored = True
        # Every engine gets its actor under its current name and is started; a changed spec rolls over.
        engines = await self.store.list_engines()
        rolling = {s.name for s in applied.engines_changed}
        log.info("restored %d councils and %d engines%s", len(councils), len(engines),
                 f"; rolling over engines {sorted(rolling)}" if rolling else "")
        await asyncio.gather(
            *(self._start_engine(spec) for spec in engines if spec.name not in rolling),
            *(declarative.roll_engine(self.store, self.registry, spec) for spec in applied.engines_changed),
        )
        if rolling:  # councils open handles to the new actors now, then the old ones drain and go
            await asyncio.gather(*(self.registry.council(c.role).reload.remote() for c in councils))
        if not applied.stale:
            self._spawn(self._retire_stale_engines())
        self.engines_ready = True

    async def _start_engine(self, spec) -> None:
        await self.registry.engine(spec, await self.store.engine_actor(spec.name)).start.remote()

    async def _retire_stale_engines(self) -> None:
        try:
            stale = await declarative.stale_engine_actors(self.store, self.registry)
            await asyncio.gather(*(declarative.retire_engine_actor(self.registry, a) for a in stale))
        except Exception:
            log.exception("retiring old engine actors")

    # -- health -------------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self, request: Request) -> JSONResponse:
        try:
            valkey_ok = await asyncio.wait_for(self.store.ping(), 2)
        except Exception:
            valkey_ok = False
        ready = valkey_ok and self.restored and self.engines_ready
        body = {"ready": ready, "valkey": valkey_ok, "councils_restored": self.restored,
                "engines_ready": self.engines_ready}
        # Details (error text may name internal hosts; Valkey's settings) only for callers with a token,
        # or on an API with no token that is bound to loopback (only local callers reach it).
        scope = auth.caller_scope(request)
        if scope in (auth.ADMIN, auth.READ) or (scope == auth.OPEN and security.is_loopback(self.http_host)):
            body["error"] = self.reconcile_error
            if valkey_ok:
                body["valkey_persistence"] = await self._valkey_persistence()
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _check_valkey_room(self) -> None:
        """503 + Retry-After before a write when Valkey is nearly full (used_memory over VALKEY_FULL_AT of
        maxmemory): the rest stays for Ray's GCS, which shares this Valkey and must never hit maxmemory itself.
        INFO is read at most once a second per replica."""
        now = time.time()
        cached = getattr(self, "_memory", None)
        if cached is None or now - cached[0] > 1.0:
            try:
                info = await self.store.client.info("memory")
                used, cap = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
            except Exception:  # INFO refused (a managed Valkey): the OOM handler is the backstop
                used, cap = 0, 0
            cached = self._memory = (now, used, cap)
        _, used, cap = cached
        if cap and used >= VALKEY_FULL_AT * cap:
            raise ApiError(503, f"Valkey is nearly full ({used} of maxmemory {cap} bytes): new deliberations and "
                                "council writes are refused until records expire or the operator raises maxmemory",
                           headers={"Retry-After": "30"})

    async def _valkey_persistence(self) -> dict[str, Any]:
        """appendonly / appendfsync / maxmemory(-policy) of the Valkey, with warnings (cached 30 s)."""
        cached = getattr(self, "_persistence", None)
        if cached and time.time() - cached[0] < 30:
            return cached[1]
        try:
            info = await asyncio.wait_for(self.store.client.config_get("append*"), 2)
            info.update(await asyncio.wait_for(self.store.client.config_get("maxmemory*"), 2))
            settings = {k: info.get(k) for k in ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy")}
        except Exception as exc:  # CONFIG may be disabled on a managed Valkey
            settings = {"unknown": f"CONFIG GET refused: {type(exc).__name__}"}
        warnings = []
        if settings.get("appendonly") not in (None, "yes"):
            warnings.append("appendonly is not yes: an acknowledged deliberation may be lost in a crash")
        if settings.get("appendfsync") not in (None, "always"):
            warnings.append(f"appendfsync is {settings.get('appendfsync')!r}, not 'always': writes acknowledged "
                            "in the last second may be lost in a crash")
        if settings.get("maxmemory-policy") not in (None, "noeviction"):
            warnings.append(f"maxmemory-policy is {settings.get('maxmemory-policy')!r}, not 'noeviction': "
                            "Valkey may evict councils and records")
        result = {**settings, "warnings": warnings}
        self._persistence = (time.time(), result)
        return result

    # -- councils -----------------------------------------------------------------------------
    @api.get("/v1/councils")
    async def list_councils(self) -> dict:
        councils = await self.store.list_councils()
        return {"councils": [c.model_dump(mode="json") for c in councils], "count": len(councils)}

    async def _council_or_404(self, role: str) -> CouncilSpec:
        spec = await self.store.get_council(check_role(role))
        if spec is None:
            raise ApiError(404, f"council {role!r} not found")
        return spec

    @api.get("/v1/councils/{role}")
    async def get_council(self, role: str) -> dict:
        return (await self._council_or_404(role)).model_dump(mode="json")

    async def _check_engines(self, agents: list[AgentSpec]) -> None:
        known = {e.name for e in await self.store.list_engines()}
        unknown = sorted({a.engine for a in agents} - known)
        if unknown:
            raise ApiError(422, f"unknown engine(s) {unknown}; known engines: {sorted(known)}")

    async def _store_and_apply(self, spec: CouncilSpec) -> tuple[CouncilSpec, bool]:
        # Within max_councils and max_agents_total, checked and written atomically: a refused write leaves
        # nothing behind and creates no actor.
        lim = limits.current()
        await self._check_valkey_room()
        try:
            stored, created = await self.store.put_council_capped(spec, lim.max_councils, lim.max_agents_total)
        except RegistryFull as exc:
            raise limits.registry_full_error(exc) from None
        await self.registry.council(stored.role).reload.remote()
        return stored, created

    def _not_config_owned(self, role: str) -> None:
        """A council declared in the deployed config (`councils:`) belongs to it: an API write would be put
        back at the next replica start, so it is refused (409), naming the config."""
        if any(c.role == role for c in self.config.councils):
            try:
                app_name = serve.get_replica_context().app_name
            except Exception:
                app_name = "councils"
            raise ApiError(409, f"council {role} is owned by the deployed config (args.councils of Serve application "
                                f"{app_name!r}); change it there and `serve deploy` again")

    @api.put("/v1/councils/{role}")
    async def put_council(self, role: str, body: CouncilUpsert) -> JSONResponse:
        check_role(role)
        try:
            spec = body.spec_for(role)  # a GET body round-trips: read-only fields ignored, role must match
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        self._not_config_owned(role)
        limits.raise_for(limits.council_errors(body.agents, body.rounds))
        await self._check_engines(body.agents)
        stored, created = await self._store_and_apply(spec)
        return JSONResponse(stored.model_dump(mode="json"), status_code=201 if created else 200)

    @api.delete("/v1/councils/{role}")
    async def delete_council(self, role: str) -> dict:
        await self._council_or_404(role)
        self._not_config_owned(role)
        # Valkey first: it is the truth, and a council deleted there is never restored again.
        await self.store.delete_council(role)
        await self.registry.remove_council(role)
        return {"deleted": role}

    @api.post("/v1/councils/{role}/agents", status_code=201)
    async def add_agent(self, role: str, agent: AgentSpec) -> dict:
        spec = await self._council_or_404(role)
        self._not_config_owned(role)
        if any(a.id == agent.id for a in spec.agents):
            raise ApiError(409, f"agent {agent.id!r} already in council {role}")
        if len(spec.agents) >= limits.current().max_agents:
            raise ApiError(422, f"council {role} already has the maximum of {limits.current().max_agents} agents")
        limits.raise_for(limits.agents_errors([agent], loc=("body",)))
        await self._check_engines([agent])
        stored, _ = await self._store_and_apply(spec.model_copy(update={"agents": [*spec.agents, agent]}))
        return stored.model_dump(mode="json")

    @api.delete("/v1/councils/{role}/agents/{agent_id}")
    async def remove_agent(self, role: str, agent_id: str) -> dict:
        spec = await self._council_or_404(role)
        self._not_config_owned(role)
        if not re.fullmatch(AGENT_ID_PATTERN, agent_id) or all(a.id != agent_id for a in spec.agents):
            raise ApiError(404, f"agent {agent_id!r} not in council {role}")
        if len(spec.agents) == 1:
            raise ApiError(409, f"agent {agent_id!r} is the last agent of council {role}; delete the council instead")
        stored, _ = await self._store_and_apply(
            spec.model_copy(update={"agents": [a for a in spec.agents if a.id != agent_id]})
        )
        return stored.model_dump(mode="json")

    # -- deliberations ------------------------------------------------------------------------
    @api.post("/v1/deliberations")
    async def create_deliberation(self, request: DeliberationRequest, wait: bool = Query(False),
                                  idempotency_key: str | None = Header(None, alias="Idempotency-Key")) -> JSONResponse:
        record = await self._accept(request, idempotency_key)
        if not wait:
            return JSONResponse(self._accepted(record), status_code=202)
        record = await self._wait_finished(record)
        return JSONResponse(record.model_dump(mode="json"), status_code=_status_code(record))

    async def _accept(self, request: DeliberationRequest, idempotency_key: str | None = None) -> DeliberationRecord:
        """Validate against the council, store the record (durable before acknowledged), hand it to the council.
        With an Idempotency-Key, a retry returns the deliberation the first request started."""
        limits.raise_for(limits.request_errors(request))
        spec = await self._council_or_404(request.role)
        if request.num_agents is not None and request.num_agents > len(spec.agents):
            raise ApiError(422, f"num_agents={request.num_agents} but council {request.role} has "
                                f"{len(spec.agents)} agents")
        request = effective_request(request, self.settings)  # live default and maximum timeout
        # Fix the effective shape now, so the record alone says what was asked (and its progress).
        request = request.model_copy(update={
            "rounds": spec.rounds if request.rounds is None else request.rounds,
            "num_agents": request.num_agents or len(spec.agents),
        })
        record = DeliberationRecord(request=request, council_version=spec.version)
        await self._check_valkey_room()
        if (delib_id := idempotent_id(request.role, idempotency_key)) is not None:
            record.id = delib_id
        # Durable before acknowledged: once this returns, a restarted council will find the record.
        # 429 beyond max_active_per_council, counted and written atomically (no race for the last slot).
        try:
            record, created = await self.store.create_record(record, max_active=limits.current().max_active_per_council,
                                                             max_active_total=limits.current().max_active_total)
        except CouncilBusy as exc:
            raise await limits.busy_error(self.store, request.role, exc.active) from None
        except ServiceBusy as exc:  # all councils together (limits.max_active_total)
            raise limits.service_busy_error(exc.active) from None
        if not created:  # the same Idempotency-Key again
            if record.request != request:
                raise ApiError(409, f"Idempotency-Key already used for deliberation {record.id}, with a different "
                                    "request; use a new key for a new request")
            if record.finished:
                return record
        try:
            # Bounded: a council that is restarting must not hold the acknowledgement hostage.
            await asyncio.wait_for(self.registry.council(request.role).submit.remote(record.id), timeout=10)
        except Exception as exc:  # the council picks it up from Valkey (restart or sweep)
            log.warning("submit of %s to council %s deferred: %s", record.id, request.role, exc)
        return record

    def _accepted(self, record: DeliberationRecord) -> dict:
        return {"id": record.id, "status": record.status, "status_url": f"/v1/deliberations/{record.id}",
                "events_url": f"/v1/deliberations/{record.id}/events"}

    async def _wait_finished(self, record: DeliberationRecord) -> DeliberationRecord:
        """Follow the record in Valkey (not the actor call), so a council restart does not break the wait."""
        last_event = "0-0"
        grace_s = self.settings.wait_grace_s  # past the deadline the council marks it timeout; leave it time
        while time.time() < record.deadline + grace_s:
            current = await self.store.get_record(record.id)
            if current is None:
                raise ApiError(404, f"deliberation {record.id} vanished")
            if current.finished:
                return current
            events = await self.store.read_events(record.id, last_event, block_ms=1000)
            if events:
                last_event = events[-1][0]
        current = await self.store.get_record(record.id)
        return current or record

    async def _record_or_404(self, delib_id: str) -> DeliberationRecord:
        record = await self.store.get_record(check_delib_id(delib_id))
        if record is None:
            raise ApiError(404, f"deliberation {delib_id!r} not found (unknown, or expired after its TTL)")
        return record

    @api.get("/v1/deliberations/{delib_id}")
    async def get_deliberation(self, delib_id: str) -> dict:
        record = await self._record_or_404(delib_id)
        body = record.model_dump(mode="json")
        body["progress"] = _progress(record)
        body["events_url"] = f"/v1/deliberations/{record.id}/events"
        orchestration = await self.store.get_orchestration(record.id)
        if orchestration is not None:
            body["orchestration"] = orchestration
        return body

    @api.get("/v1/deliberations/{delib_id}/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "Server-Sent Events: id = stream entry id, event = kind, "
                                             "data = JSON; ends after completed / failed / timeout"}})
    async def deliberation_events(
        self,
        delib_id: str,
        request: Request,
        last_event_id: str | None = Query(None, description="resume after this event id (as Last-Event-ID)"),
        last_event_id_header: str | None = Header(None, alias="Last-Event-ID"),
    ) -> StreamingResponse:
        record = await self._record_or_404(delib_id)
        # The header is what a reconnecting EventSource sends; the query parameter is for clients that cannot.
        after = last_event_id_header or last_event_id or "0-0"
        if not sse.valid_stream_id(after):
            raise ApiError(422, f"Last-Event-ID {after!r} is not an event id (<ms>-<seq>, as sent in `id:`)")
        self._open_stream_slot()
        return StreamingResponse(
            sse.counted(sse.event_stream(self.store, delib_id, after, disconnected=request.is_disconnected,
                                         deadline=record.deadline + self.settings.wait_grace_s)),
            media_type="text/event-stream", headers=sse.HEADERS,
        )

    def _open_stream_slot(self) -> None:
        """One of limits.max_sse_connections open streams of this replica, or 429 (sse.counted releases it)."""
        limit = limits.current().max_sse_connections
        if not sse.try_open(limit):
            raise ApiError(429, f"this replica has its maximum of {limit} open event streams "
                                "(limits.max_sse_connections); retry later", headers={"Retry-After": "5"})

    # -- orchestration ------------------------------------------------------------------------
    @api.post("/v1/orchestrate")
    async def orchestrate(self, body: OrchestrateRequest) -> JSONResponse:
        """Deliberate (waiting for the result), then let an architect choose among the top_k candidates."""
        request = DeliberationRequest.model_validate(body.model_dump(exclude={"top_k"}))
        record = await self._wait_finished(await self._accept(request))
        if record.status != "completed":
            return JSONResponse(
                error_body(_status_code(record), f"deliberation {record.id} ended {record.status}: {record.error}",
                           {"id": record.id, "status": record.status}),
                status_code=_status_code(record),
            )
        outcome = await self.registry.council(request.role).orchestrate.remote(record.id, body.top_k)
        if "error" in outcome:
            raise ApiError(outcome.get("status", 503), outcome["error"])
        return JSONResponse({
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
        })

    # -- OpenAI-compatible: a council is the model council-<ROLE> (openai_compat.py) -------------
    @api.get("/v1/models", responses={200: {"model": openai_compat.ModelList}})
    async def list_models(self) -> dict:
        return await openai_compat.list_models(self)

    @api.post("/v1/chat/completions",
              responses={200: {"model": openai_compat.ChatCompletion,
                               "content": {"text/event-stream": {}},
                               "description": "a chat.completion, or with stream=true chat.completion.chunk events"}})
    async def chat_completions(self, body: ChatCompletionRequest, request: Request,
                               idempotency_key: str | None = Header(None, alias="Idempotency-Key")):
        return await openai_compat.chat_completions(self, body, request.is_disconnected, idempotency_key)

    # -- status -------------------------------------------------------------------------------
    @api.get("/v1/status")
    async def status(self) -> dict:
        councils = await self.store.list_councils()
        counters = await self.store.stats()
        latency, by_role = {}, {}
        for c in councils:
            latency[c.role] = percentiles(await self.store.durations(c.role))
            by_role[c.role] = role_summary(c.role, counters, await self.store.active_count(c.role), latency[c.role])
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "ready": self.restored and self.engines_ready,
            "councils": [{"role": c.role, "agents": len(c.agents), "agent_ids": [a.id for a in c.agents],
                          "engines": sorted({a.engine for a in c.agents}), "rounds": c.rounds,
                          "version": c.version} for c in councils],
            "engines": [e.name for e in await self.store.list_engines()],
            "by_role": by_role,
            "counters": counters,
            "latency_s": latency,
            "settings": {**self.settings.model_dump(mode="json"), "record_ttl_s": self.store.record_ttl_s},
        }

