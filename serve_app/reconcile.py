"""What an ingress replica does in the background: the start-up reconcile, pushing live settings to the councils,
and the councils_active_councils metric.

The reconcile makes the cluster match Valkey and the deployed config: the config's engines and councils are
written to Valkey (declarative.py), every council in Valkey gets its actor (get-or-create), every engine its
actor, changed engines roll over. It retries until it succeeds; the replica answers /healthz at once and /readyz
when it is done (CouncilService.restored / engines_ready).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from actors import metrics

from . import declarative, redact
from .service import CouncilService

log = logging.getLogger("councils.ingress")


async def retrying(step: Callable[[], Awaitable[None]], what: str, on_error: Callable[[str], None] | None = None,
                   first_delay_s: float = 0.5, max_delay_s: float = 10.0) -> None:
    """Run `step` until it succeeds, backing off between attempts (0.5 s doubling to 10 s)."""
    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception()
        error = redact.scrub(f"{type(exc).__name__}: {exc}")
        if on_error is not None:
            on_error(error)
        log.warning("%s failed (%s); retrying in %.1fs", what, error, state.upcoming_sleep)

    await AsyncRetrying(retry=retry_if_exception_type(Exception),
                        wait=wait_exponential(multiplier=first_delay_s, max=max_delay_s), before_sleep=failed)(step)


class Reconciler:
    def __init__(self, service: CouncilService):
        self.service = service
        self.background: set[asyncio.Task] = set()
        self.reconcile_task: asyncio.Task | None = None

    def start(self) -> None:
        self.reconcile_task = self.spawn(self.reconcile())
        self.spawn(self.report_councils_forever())

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_event_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    # -- live settings ------------------------------------------------------------------------------
    def push_settings_soon(self) -> None:
        self.spawn(retrying(self.push_settings, "pushing settings to councils"))

    async def push_settings(self) -> None:
        """Councils read the retention from Valkey (also after a restart); tell the running ones."""
        store, registry = self.service.store, self.service.registry
        newest = await store.applied_stamp()
        deployed_at = self.service.deployed_at
        if deployed_at is not None and newest is not None and newest > deployed_at:
            return  # a replica of an older deploy: the newer one's settings stand
        await store.put_settings({"record_ttl_s": store.record_ttl_s})
        handles = [h for c in await store.list_councils() if (h := registry.existing_council(c.role))]
        await asyncio.gather(*(h.configure.remote() for h in handles), return_exceptions=True)

    async def report_councils_forever(self, interval_s: float = 10.0) -> None:
        """councils_active_councils: every replica reports the registry's size (they agree)."""
        store = self.service.store
        while True:
            try:
                metrics.set_active_councils(await store.council_count())
            except Exception as exc:  # Valkey away for a moment
                log.debug("active councils metric: %s", exc)
            await asyncio.sleep(interval_s)

    # -- start-up reconcile -------------------------------------------------------------------------
    async def reconcile(self) -> None:
        def failed(error: str) -> None:
            self.service.reconcile_error = error

        await retrying(self.reconcile_once, "reconcile", on_error=failed)
        self.service.reconcile_error = None

    async def reconcile_once(self) -> None:
        service = self.service
        store, registry = service.store, service.registry
        await store.ping()
        await self.push_settings()
        # The config's engines and councils are declarative: written to Valkey first (declarative.py).
        applied = await declarative.apply_config(store, service.config, service.deployed_at)
        for role in applied.pruned:
            await registry.remove_council(role, "council pruned: absent from the deployed config")
        # Every council in Valkey gets its actor (get-or-create); one whose spec changed reloads it.
        councils = await store.list_councils()
        changed = set(applied.councils_changed)
        await asyncio.gather(*(registry.council_calls(c.role).reload() for c in councils if c.role in changed))
        await asyncio.gather(*(registry.council_calls(c.role).info() for c in councils))
        metrics.set_active_councils(len(councils))
        service.restored = True
        # Every engine gets its actor under its current name and is started; a changed spec rolls over.
        engines = await store.list_engines()
        rolling = {s.name for s in applied.engines_changed}
        log.info("restored %d councils and %d engines%s", len(councils), len(engines),
                 f"; rolling over engines {sorted(rolling)}" if rolling else "")
        await asyncio.gather(
            *(self._start_engine(spec) for spec in engines if spec.name not in rolling),
            *(declarative.roll_engine(store, registry, spec) for spec in applied.engines_changed),
        )
        if rolling:  # councils open handles to the new actors now, then the old ones drain and go
            await asyncio.gather(*(registry.council_calls(c.role).reload() for c in councils))
        if not applied.stale:
            self.spawn(self._retire_stale_engines())
        service.engines_ready = True

    async def _start_engine(self, spec) -> None:
        registry = self.service.registry
        replicas = registry.engine_replicas(spec, await self.service.store.engine_actor(spec.name))
        await asyncio.gather(*(replica.start.remote() for replica in replicas))

    async def _retire_stale_engines(self) -> None:
        try:
            stale = await declarative.stale_engine_actors(self.service.store, self.service.registry)
            await asyncio.gather(*(declarative.retire_engine_actor(self.service.registry, a) for a in stale))
        except Exception:
            log.exception("retiring old engine actors")
