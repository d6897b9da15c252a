"""The declarative part of a deploy: the config's engines and councils, applied to Valkey.

Every ingress replica runs this when it starts (serve_app/reconcile.py `Reconciler.reconcile`); it is
idempotent, so many replicas applying the same config at once agree.

Councils
- A council declared in `councils:` is created, or updated when its agents, rounds or scoring
  differ from the stored spec (one compare-and-set in Valkey: the version goes up once per real
  change, however many replicas apply it). Its actor is then told to `reload`; deliberations that
  are running keep the spec they started with.
- `default_councils` bootstrap an empty registry when the config declares no councils.
- Councils absent from the config (created through the API) stay, unless `prune_councils: true`:
  then every council not declared (not among the default roles, when none are declared) is
  deleted, and its running deliberations end as failed.
- A replica built from an older config than the last one applied (an old replica that restarts
  in the middle of a rollout) applies nothing: see Store.claim_config.

Engines: a changed spec rolls the engine over to a new actor, new before old
- `engine-<name>` serves an engine until its spec changes; a changed spec gets a new actor named
  `engine-<name>.<hash>` (a short hash of the spec), so every replica that applies the same config
  addresses the same new actor (get-or-create).
- The new actor is started and its `start()` awaited (the model is loaded) while the old one keeps
  serving. Then one Valkey transaction stores the new spec and points the engine's name at the new
  actor (`<prefix>engine:<name>:actor`); councils resolve that pointer when they (re)open a
  handle, and the ingress reloads them so they do at once.
- The old actor is drained (until its in-flight count is 0, bounded) and then killed. A generate
  still running on it when it dies is retried by the council's engine client on the new actor, so
  no deliberation fails because of a rollover.
- If the new engine cannot start, the pointer does not move: the old engine keeps serving and the
  replica's reconcile keeps retrying (and /readyz says why).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

from actors.engine_hosting import engine_actor_name, is_engine_actor, replica_actor_names
from actors.models.config import AppConfig
from actors.models.councils import EngineSpec, default_council
from actors.store import Store

log = logging.getLogger("councils.declarative")

ENGINE_DRAIN_S = 120.0  # at most this long for an old engine's in-flight calls to finish


def spec_hash(spec: EngineSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:8]


def rolled_actor_name(spec: EngineSpec) -> str:
    """The actor of an engine after a rollover to this spec (`engine-<name>.<spec hash>`)."""
    return engine_actor_name(spec.name, spec_hash(spec))


def actors_of_engine(name: str, actor_names: list[str]) -> list[str]:
    return [a for a in actor_names if is_engine_actor(a, name)]


@dataclass
class Applied:
    """What apply_config did."""

    stale: bool = False  # an older config than the one applied last: nothing was applied
    engines_added: list[str] = field(default_factory=list)
    engines_changed: list[EngineSpec] = field(default_factory=list)  # to roll over (roll_engine)
    councils: dict[str, str] = field(default_factory=dict)  # role -> created | updated | unchanged
    defaults_created: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)

    @property
    def councils_changed(self) -> list[str]:
        return sorted([r for r, o in self.councils.items() if o != "unchanged"] + self.defaults_created)


def configured_roles(config: AppConfig) -> set[str]:
    """The councils a config owns: the declared ones, or the default roles when none are declared."""
    return {c.role for c in config.councils} or set(config.default_councils.roles)


async def apply_config(store: Store, config: AppConfig, stamp: float | None = None) -> Applied:
    """Write the config's engines and councils to Valkey (engine rollovers are left to roll_engine)."""
    applied = Applied()
    if stamp is not None and not await store.claim_config(stamp):
        applied.stale = True
        return applied
    for spec in config.engines:
        stored = await store.get_engine(spec.name)
        if stored is None:
            await store.put_engine(spec)
            applied.engines_added.append(spec.name)
        elif stored != spec:
            applied.engines_changed.append(spec)
    for declared in config.councils:
        spec = declared.spec_for(declared.role)
        _, outcome = await store.upsert_council(spec, only_if_changed=True)
        applied.councils[declared.role] = outcome
    if not config.councils and not await store.list_councils():
        d = config.default_councils
        for role in d.roles:
            _, outcome = await store.upsert_council(
                default_council(role, d.engine, d.agents_per_council, d.rounds, d.max_tokens, d.drafts_per_agent),
                only_if_absent=True)
            if outcome == "created":
                applied.defaults_created.append(role)
    if config.prune_councils:
        keep = configured_roles(config)
        for spec in await store.list_councils():
            if spec.role not in keep and await store.delete_council(
                    spec.role, "council pruned: absent from the deployed config"):
                applied.pruned.append(spec.role)
    if applied.councils_changed or applied.pruned or applied.engines_added or applied.engines_changed:
        log.info("config applied: councils %s, defaults %s, pruned %s, engines added %s, engines to roll %s",
                 applied.councils, applied.defaults_created, applied.pruned, applied.engines_added,
                 [s.name for s in applied.engines_changed])
    return applied


async def roll_engine(store: Store, registry, spec: EngineSpec) -> str:
    """Bring the engine's new actor up, then point the engine's name at it. Returns its name."""
    actor_name = rolled_actor_name(spec)
    log.info("engine %s: spec changed; starting %s before retiring the old actor", spec.name, actor_name)
    replicas = registry.engine_replicas(spec, actor_name)
    await asyncio.gather(*(r.start.remote() for r in replicas))  # the model is loaded: only now may councils use it
    await store.switch_engine(spec, actor_name)
    log.info("engine %s now served by %s", spec.name, actor_name)
    return actor_name


async def stale_engine_actors(store: Store, registry) -> list[str]:
    """Engine actors that no engine's name points at any more (left by rollovers)."""
    live = registry.engine_actor_names()
    stale = []
    for spec in await store.list_engines():
        current = replica_actor_names(await store.engine_actor(spec.name), spec.replicas)
        stale += [a for a in actors_of_engine(spec.name, live) if a not in current]
    return stale


async def retire_engine_actor(registry, actor_name: str, drain_s: float = ENGINE_DRAIN_S,
                              poll_s: float = 0.5) -> bool:
    """Wait until the old actor has no call in flight (or drain_s passed), then kill it."""
    handle = registry.named(actor_name)
    if handle is None:
        return False
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        try:
            health = await asyncio.wait_for(handle.health.remote(), timeout=10)
        except Exception:  # dead or unreachable: nothing to drain
            break
        if not health.get("in_flight"):
            break
        await asyncio.sleep(poll_s)
    log.info("retiring engine actor %s", actor_name)
    try:
        registry.kill(handle)
    except Exception as exc:  # already gone
        log.info("engine actor %s: %s", actor_name, exc)
    return True
