"""Council specs, engine specs and the deployed configuration's stamp and live settings, in Valkey.

A council is `<prefix>council:<ROLE>` (its spec) plus its role in `<prefix>councils`; both are written in one
transaction, and a watched compare-and-set keeps concurrent writers within the registry's caps."""

from __future__ import annotations

import json
import time
from typing import Any

from valkey.exceptions import WatchError

from ..engine_hosting import engine_actor_name, replica_actor_names
from ..models.councils import CouncilSpec, EngineSpec
from . import scripts
from .base import StoreBase
from .errors import RegistryFull


def same_council(a: CouncilSpec, b: CouncilSpec) -> bool:
    """Same agents, rounds, drafts and scoring (role, version and times aside)."""
    fields = {"agents", "rounds", "drafts_per_agent", "scoring"}
    return a.model_dump(include=fields) == b.model_dump(include=fields)


class CouncilSpecs(StoreBase):
    # -- councils -----------------------------------------------------------------------------
    async def get_council(self, role: str) -> CouncilSpec | None:
        raw = await self.client.get(self.key("council", role))
        return CouncilSpec.model_validate_json(raw) if raw else None

    async def list_councils(self) -> list[CouncilSpec]:
        roles = sorted(await self.client.smembers(self.key("councils")))
        if not roles:
            return []
        raws = await self.client.mget([self.key("council", r) for r in roles])
        return [CouncilSpec.model_validate_json(r) for r in raws if r]

    async def put_council(self, spec: CouncilSpec, *, only_if_absent: bool = False) -> tuple[CouncilSpec, bool]:
        """Create or replace a council. Replacing keeps created_at and bumps the version.

        Returns (stored spec, created). With only_if_absent an existing council is returned unchanged.
        """
        stored, outcome = await self.upsert_council(spec, only_if_absent=only_if_absent)
        return stored, outcome == "created"

    async def upsert_council(self, spec: CouncilSpec, *, only_if_absent: bool = False,
                             only_if_changed: bool = False) -> tuple[CouncilSpec, str]:
        """put_council with its outcome: "created", "updated" or "unchanged". With only_if_changed a
        council whose agents, rounds, drafts and scoring already equal the spec's keeps its version (one
        atomic compare-and-set, so replicas applying the same config at once bump it at most once)."""
        key = self.key("council", spec.role)
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    old = CouncilSpec.model_validate_json(raw) if raw else None
                    if old and (only_if_absent or (only_if_changed and same_council(old, spec))):
                        await pipe.reset()
                        return old, "unchanged"
                    stored = await self._write_council(pipe, spec, old)
                    return stored, "updated" if raw else "created"
                except WatchError:
                    continue

    async def _write_council(self, pipe, spec: CouncilSpec, old: CouncilSpec | None) -> CouncilSpec:
        """The write of a watched council upsert: version 1 when new, else version + 1 with created_at kept."""
        now = time.time()
        if old is None:
            stored = spec.model_copy(update={"version": 1, "created_at": now, "updated_at": now})
        else:
            stored = spec.model_copy(update={"version": old.version + 1, "created_at": old.created_at, "updated_at": now})
        pipe.multi()
        pipe.set(self.key("council", spec.role), stored.model_dump_json())
        pipe.sadd(self.key("councils"), spec.role)
        await pipe.execute()
        return stored

    async def put_council_capped(self, spec: CouncilSpec, max_councils: int,
                                 max_agents_total: int) -> tuple[CouncilSpec, bool]:
        """put_council for API writes, within max_councils and max_agents_total: the registry and every
        council are watched, so concurrent writes never overshoot either (RegistryFull: nothing written)."""
        key = self.key("council", spec.role)
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self.key("councils"), key)
                    roles = sorted(await pipe.smembers(self.key("councils")))
                    keys = [self.key("council", r) for r in roles]
                    if keys:
                        await pipe.watch(*keys)
                    raws = dict(zip(roles, await pipe.mget(keys))) if keys else {}
                    raw = raws.get(spec.role) or await pipe.get(key)
                    if raw is None and len(roles) >= max_councils:
                        raise RegistryFull("max_councils", len(roles) + 1, max_councils)
                    agents = len(spec.agents) + sum(len(CouncilSpec.model_validate_json(r).agents)
                                                    for role, r in raws.items() if r and role != spec.role)
                    if agents > max_agents_total:
                        raise RegistryFull("max_agents_total", agents, max_agents_total)
                    stored = await self._write_council(pipe, spec, CouncilSpec.model_validate_json(raw) if raw else None)
                    return stored, raw is None
                except WatchError:
                    continue
                except RegistryFull:
                    await pipe.reset()
                    raise

    async def delete_council(self, role: str, reason: str = "council deleted") -> bool:
        """Delete a council and everything of it: the spec goes first (a council actor that finds no spec
        retires itself, so nothing can bring one back), then every unfinished deliberation ends `failed`
        with `reason`, then its active set, durations and stats fields go. False if there was no spec."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.key("council", role))
            pipe.srem(self.key("councils"), role)
            deleted, _ = await pipe.execute()
        await self.purge_council(role, reason)
        return bool(deleted)

    async def purge_council(self, role: str, reason: str = "council deleted") -> list[str]:
        """End every unfinished deliberation of a deleted council as `failed` with `reason` (taken over from
        any runner), then remove its active set, durations and stats fields: the ids failed. Nothing is
        removed if the council exists again (re-created meanwhile)."""
        failed: list[str] = []
        while True:
            for delib_id in await self.active_ids(role):
                if await self.fail_unfinished(role, delib_id, reason):
                    failed.append(delib_id)
            keys = [self.key("council", role), self.active_key(role), self.key("durations", role), self.key("stats")]
            # -2: a deliberation was accepted meanwhile (its POST passed the check before the delete): fail it too.
            if int(await self.client.eval(scripts.PURGE_COUNCIL, len(keys), *keys, role)) != -2:
                return failed

    # -- engines ------------------------------------------------------------------------------
    async def get_engine(self, name: str) -> EngineSpec | None:
        raw = await self.client.get(self.key("engine", name))
        return EngineSpec.model_validate_json(raw) if raw else None

    async def list_engines(self) -> list[EngineSpec]:
        names = sorted(await self.client.smembers(self.key("engines")))
        if not names:
            return []
        raws = await self.client.mget([self.key("engine", n) for n in names])
        return [EngineSpec.model_validate_json(r) for r in raws if r]

    async def put_engine(self, spec: EngineSpec) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key("engine", spec.name), spec.model_dump_json())
            pipe.sadd(self.key("engines"), spec.name)
            await pipe.execute()

    async def engine_actor(self, name: str) -> str:
        """The name of the actor that serves engine `name` now: `engine-<name>` until a changed spec
        rolled it over to a new actor (serve_app/declarative.py), then that actor's name."""
        return await self.client.get(self.key("engine", name, "actor")) or engine_actor_name(name)

    async def engine_replicas(self, name: str) -> list[str]:
        """The actors serving engine `name` now, replica 0 first (EngineSpec.replicas; one unless configured)."""
        spec = await self.get_engine(name)
        return replica_actor_names(await self.engine_actor(name), spec.replicas if spec else 1)

    async def switch_engine(self, spec: EngineSpec, actor_name: str) -> None:
        """Point engine `spec.name` at a new actor and store its spec, in one transaction."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.key("engine", spec.name), spec.model_dump_json())
            pipe.set(self.key("engine", spec.name, "actor"), actor_name)
            pipe.sadd(self.key("engines"), spec.name)
            await pipe.execute()

    # -- deployed configuration ---------------------------------------------------------------
    async def claim_config(self, stamp: float) -> bool:
        """May a replica built at `stamp` apply its config's declarative part? Yes unless a newer
        deploy already applied its own: an old replica restarting mid-rollout must not roll back."""
        key = self.key("config", "applied")
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    current = await pipe.get(key)
                    if current is not None and float(current) > stamp:
                        await pipe.reset()
                        return False
                    pipe.multi()
                    pipe.set(key, repr(float(stamp)))
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    async def applied_stamp(self) -> float | None:
        raw = await self.client.get(self.key("config", "applied"))
        return float(raw) if raw is not None else None

    async def put_settings(self, settings: dict[str, Any]) -> None:
        """Live settings the councils read (record_ttl_s), also after they restart."""
        await self.client.set(self.key("settings"), json.dumps(settings))

    async def get_settings(self) -> str | None:
        """The live settings as stored (JSON), or None: the council parses them (Council._apply_settings)."""
        return await self.client.get(self.key("settings"))

    def restore_state(self, role: str) -> tuple[CouncilSpec | None, list[str], str | None]:
        """What a council actor's constructor reads (synchronously): its spec, its unfinished deliberations and
        the live settings (JSON)."""
        sync = self.sync_client()
        try:
            raw, unfinished = sync.get(self.key("council", role)), sync.smembers(self.active_key(role))
            settings = sync.get(self.key("settings"))
        finally:
            sync.close()
        return (CouncilSpec.model_validate_json(raw) if raw else None), sorted(unfinished), settings

    async def council_count(self) -> int:
        """How many councils exist (the councils_active_councils gauge)."""
        return int(await self.client.scard(self.key("councils")))
