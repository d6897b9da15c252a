"""Valkey: the source of truth for councils, engines, deliberation records and events.

Every write that touches more than one key goes through a MULTI/EXEC transaction or one Lua script,
so a crash never leaves half a council or a record without its index entry.

Deliberation records are fenced: a runner takes ownership of a record (`claim_record` bumps its owner
epoch, `<prefix>delib:<id>:owner`) and every later write of it is a compare-and-set on that epoch, so
of two runners of one deliberation (a zombie actor, a KubeRay switchover) only the newest writes; the
other gets StaleWriter and stops. A finished record is immutable, and finishing it (record, TTL,
active-set removal, terminal stage event, `councils:events` entry, stats, durations) is one script:
one completion event per deliberation, and a retried finish counts nothing twice.

Why one module of ~600 lines: every key name and every script that writes several keys at once live here, so
the whole Valkey layout (docs/operations.md, the key table) can be checked against one file; the Lua scripts
and the methods that call them must change together.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import valkey.asyncio as valkey
from valkey.backoff import ExponentialBackoff
from valkey.exceptions import ConnectionError, TimeoutError, WatchError
from valkey.asyncio.retry import Retry

from .engine_hosting import engine_actor_name, replica_actor_names
from .models.councils import CouncilSpec, EngineSpec
from .models.records import DeliberationRecord, Usage, stage_kind

EVENTS_MAXLEN = 10_000  # councils:events is a feed, not an archive
DELIB_EVENTS_MAXLEN = 2_000  # one deliberation's stage events
DURATIONS_KEPT = 1_000  # per-role samples kept for latency percentiles

# KEYS: the record, the council's active set, stats; ARGV: record JSON, record id, max active (0: no limit),
# the `accepted.<ROLE>` counter. 0: the id exists (a retry); 1: created (and counted);
# -(n + 1): not created, the council has n >= max active.
_CREATE_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local cap = tonumber(ARGV[3])
local active = redis.call('SCARD', KEYS[2])
if cap > 0 and active >= cap then return -(active + 1) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return 1
"""

# Is a stored record (JSON) finished? Shared by the scripts below.
_FINISHED_LUA = """
local function finished(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if not ok or type(rec) ~= 'table' then return false end
  local s = rec['status']
  return s == 'completed' or s == 'failed' or s == 'timeout'
end
"""

# KEYS: record, owner. Take ownership of an unfinished record: the new owner epoch, or
# -1: no such record (expired, never written); -2: finished (immutable, nothing to run).
_CLAIM_RECORD = _FINISHED_LUA + """
local raw = redis.call('GET', KEYS[1])
if not raw then return -1 end
if finished(raw) then return -2 end
return redis.call('INCR', KEYS[2])
"""

# KEYS: record, owner; ARGV: record JSON, epoch ('' : take ownership now).
# {1, epoch}: written; {-1, owner}: a newer owner holds it; {-2, owner}: gone; {-3, owner}: finished.
_CHECKPOINT_RECORD = _FINISHED_LUA + """
local owner = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] ~= '' and owner ~= tonumber(ARGV[2]) then return {-1, owner} end
local raw = redis.call('GET', KEYS[1])
if not raw then return {-2, owner} end
if finished(raw) then return {-3, owner} end
if ARGV[2] == '' then owner = redis.call('INCR', KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1])
return {1, owner}
"""

# KEYS: record, owner, active set, stage events, councils:events, stats, durations.
# ARGV: record JSON, epoch ('' : take ownership now), TTL, id, terminal kind, terminal data ('' : none),
#       feed kind, feed data ('' : none), duration ('' : none), durations kept, events maxlen, feed maxlen,
#       then stats field/increment pairs.
# {1, epoch}: finished now; {0, owner}: it was finished already (a retry: nothing written, nothing counted);
# {-1, owner}: a newer owner holds it; {-2, owner}: gone.
_FINISH_RECORD = _FINISHED_LUA + """
local owner = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] ~= '' and owner ~= tonumber(ARGV[2]) then return {-1, owner} end
local raw = redis.call('GET', KEYS[1])
if not raw then return {-2, owner} end
if finished(raw) then return {0, owner} end
if ARGV[2] == '' then owner = redis.call('INCR', KEYS[2]) end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('SREM', KEYS[3], ARGV[4])
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[11], '*', 'kind', ARGV[5], 'data', ARGV[6])
end
redis.call('EXPIRE', KEYS[4], ttl)
if ARGV[8] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], '*', 'kind', ARGV[7], 'data', ARGV[8])
end
for i = 13, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[6], ARGV[i], tonumber(ARGV[i + 1]))
end
if ARGV[9] ~= '' then
  redis.call('LPUSH', KEYS[7], ARGV[9])
  redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[10]) - 1)
end
return {1, owner}
"""


# KEYS: council spec, active set, durations, stats; ARGV: role. Remove a deleted council's keys and its stats
# fields (`<kind>.<ROLE>[.<x>]`): the number of fields removed; -1: the council exists (again);
# -2: it still has unfinished deliberations (fail those first).
_PURGE_COUNCIL = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('SCARD', KEYS[2]) > 0 then return -2 end
redis.call('DEL', KEYS[2], KEYS[3])
local removed = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
  local _, _, role = string.find(field, '^[^.]+%.([^.]+)')
  if role == ARGV[1] then
    redis.call('HDEL', KEYS[4], field)
    removed = removed + 1
  end
end
return removed
"""


def feed_entry(record: DeliberationRecord) -> dict[str, Any]:
    """The payload of deliberation.completed / deliberation.failed on <prefix>events."""
    result = record.result
    if result is not None:
        winner, score, duration, usage = result.winner_id, result.proposals[0].score, result.duration_s, result.usage
    else:  # unfinished work: no winner; the time and tokens it used until it ended
        winner, score = None, None
        finished = record.finished_at or time.time()
        duration = max(finished - (record.started_at or record.created_at), 0.0)
        usage = Usage()
        for p in record.proposals:
            usage = usage.add(p.usage)
    return {
        "id": record.id, "role": record.request.role, "status": record.status,
        "task_id": record.request.constraints.metadata.get("task_id"),
        "winner_id": winner, "score": score, "duration_s": round(duration, 3),
        "usage": {**usage.model_dump(), "total_tokens": usage.total_tokens},
        "error": record.error, "time": time.time(),
    }


class StaleWriter(Exception):
    """A write of a deliberation record by a runner that no longer owns it: a newer runner took it over,
    or it is finished (immutable) or gone. The runner must stop; the record is someone else's now."""

    def __init__(self, delib_id: str, epoch: int | None, owner: int, reason: str):
        super().__init__(f"deliberation {delib_id}: write as owner {epoch} refused: {reason} (owner is {owner})")
        self.delib_id, self.epoch, self.owner, self.reason = delib_id, epoch, owner, reason


_REFUSED = {-1: "a newer runner owns it", -2: "the record is gone", -3: "the record is finished"}


class CouncilBusy(Exception):
    """The council has its maximum of unfinished (pending or running) deliberations."""

    def __init__(self, role: str, active: int):
        super().__init__(f"council {role} has {active} deliberations pending or running")
        self.role, self.active = role, active


# The global cap on unfinished deliberations, run before _CREATE_RECORD in the same script (so the count and
# the write stay one atomic step). Its arguments come last: KEYS[#KEYS] the set of councils, ARGV[#ARGV - 1]
# the cap (0: none), ARGV[#ARGV] the active sets' key prefix. Over the cap: -(GLOBAL_BUSY + n), n the total.
GLOBAL_BUSY = 1_000_000_001
_GLOBAL_CAP = """
local total_cap = tonumber(ARGV[#ARGV - 1])
if total_cap > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  local total = 0
  for _, role in ipairs(redis.call('SMEMBERS', KEYS[#KEYS])) do
    total = total + redis.call('SCARD', ARGV[#ARGV] .. role)
  end
  if total >= total_cap then return -(""" + str(GLOBAL_BUSY) + """ + total) end
end
"""


class ServiceBusy(Exception):
    """All councils together have the global maximum of unfinished deliberations (limits.max_active_total)."""

    def __init__(self, active: int):
        super().__init__(f"{active} deliberations pending or running in all councils")
        self.active = active


class RegistryFull(Exception):
    """A council write would exceed max_councils or max_agents_total (nothing was written)."""

    def __init__(self, limit: str, value: int, cap: int):
        super().__init__(f"limits.{limit}: {value} would exceed {cap}")
        self.limit, self.value, self.cap = limit, value, cap


# What the client raises once its retries are spent and Valkey is still away (a restart, a network cut).
UNREACHABLE = (ConnectionError, TimeoutError)


def same_council(a: CouncilSpec, b: CouncilSpec) -> bool:
    """Same agents, rounds, drafts and scoring (role, version and times aside)."""
    fields = {"agents", "rounds", "drafts_per_agent", "scoring"}
    return a.model_dump(include=fields) == b.model_dump(include=fields)


class Store:
    def __init__(self, url: str, prefix: str = "councils:", record_ttl_s: int = 3600):
        self.url = url
        self.prefix = prefix
        self.record_ttl_s = record_ttl_s
        # Reconnect and retry through a Valkey restart instead of failing the first call after it.
        self.client = valkey.from_url(
            url,
            decode_responses=True,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=8),
            retry_on_error=list(UNREACHABLE),
        )

    # -- keys ---------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def shared_secret(self, name: str) -> str:
        """A random secret every replica shares (<prefix>secret:<name>): generated by the first to ask (SET NX),
        kept without TTL. The ingress's fallback when no secret file is configured (serve_app/records.py)."""
        key = self.key("secret", name)
        await self.client.set(key, secrets.token_hex(32), nx=True)
        return await self.client.get(key)

    async def close(self) -> None:
        await self.client.aclose()

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

    async def active_total(self) -> int:
        """Unfinished deliberations of all councils together (what limits.max_active_total bounds)."""
        roles = await self.client.smembers(self.key("councils"))
        if not roles:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for role in roles:
                pipe.scard(self._active_key(role))
            return sum(int(n) for n in await pipe.execute())

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
                if await self.fail_record(role, delib_id, reason):
                    failed.append(delib_id)
            keys = [self.key("council", role), self._active_key(role), self.key("durations", role), self.key("stats")]
            # -2: a deliberation was accepted meanwhile (its POST passed the check before the delete): fail it too.
            if int(await self.client.eval(_PURGE_COUNCIL, len(keys), *keys, role)) != -2:
                return failed

    async def fail_record(self, role: str, delib_id: str, reason: str) -> bool:
        """End an unfinished record of council `role` as failed, taking it over from whichever runner has it
        (that one's next write is refused), with its terminal event and feed entry. False if it was finished
        or gone (then it only leaves the active set)."""
        record = await self.get_record(delib_id)
        if record is None or record.finished:
            await self.drop_active(role, delib_id)
            return False
        record.status, record.error, record.finished_at = "failed", reason, time.time()
        try:
            return await self.finish_record(record, None, terminal=("failed", {"status": "failed", "error": reason}),
                                            feed=("deliberation.failed", feed_entry(record)))
        except StaleWriter:  # gone meanwhile
            return False

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

    # -- deliberation records -----------------------------------------------------------------
    def _active_key(self, role: str) -> str:
        # Unfinished deliberations of one council: what a restarted council picks up.
        return self.key("active", role)

    async def create_record(self, record: DeliberationRecord, max_active: int | None = None,
                            max_active_total: int | None = None) -> tuple[DeliberationRecord, bool]:
        """Write a new record as accepted, once: a retried create with the same id returns the first.
        With `max_active`, raise CouncilBusy instead when the council already has that many unfinished
        deliberations; the count and the write are one atomic step, so concurrent creates never
        overshoot the limit."""
        key = self.key("delib", record.id)
        active = self._active_key(record.request.role)
        # With max_active_total (all councils together: ServiceBusy beyond it), _GLOBAL_CAP runs first.
        outcome = await self.client.eval(_GLOBAL_CAP + _CREATE_RECORD, 4, key, active, self.key("stats"), self.key("councils"), record.model_dump_json(),
                                         record.id, max_active or 0, f"accepted.{record.request.role}",
                                         max_active_total or 0, self.key("active", ""))
        if int(outcome) <= -GLOBAL_BUSY:
            raise ServiceBusy(-int(outcome) - GLOBAL_BUSY)
        if int(outcome) == 0:  # a retry of an id that exists already
            existing = await self.get_record(record.id)
            assert existing is not None
            return existing, False
        if int(outcome) < 0:
            raise CouncilBusy(record.request.role, -int(outcome) - 1)
        return record, True

    async def get_record(self, delib_id: str) -> DeliberationRecord | None:
        raw = await self.client.get(self.key("delib", delib_id))
        return DeliberationRecord.model_validate_json(raw) if raw else None

    def _owner_key(self, delib_id: str) -> str:
        return self.key("delib", delib_id, "owner")

    async def claim_record(self, delib_id: str) -> int | None:
        """Take ownership of an unfinished record: its new owner epoch, which every later write of this
        runner passes. None when there is nothing to run (no such record, or it is finished)."""
        epoch = int(await self.client.eval(_CLAIM_RECORD, 2, self.key("delib", delib_id), self._owner_key(delib_id)))
        return epoch if epoch > 0 else None

    async def record_owner(self, delib_id: str) -> int:
        return int(await self.client.get(self._owner_key(delib_id)) or 0)

    async def hold_lease(self, delib_id: str, epoch: int, ttl_s: float) -> None:
        """Say "owner `epoch` is alive and running this record" for ttl_s (renewed while it runs)."""
        await self.client.set(self.key("delib", delib_id, "lease"), epoch, px=max(int(ttl_s * 1000), 1))

    async def lease_holder(self, delib_id: str) -> int | None:
        raw = await self.client.get(self.key("delib", delib_id, "lease"))
        return int(raw) if raw is not None else None

    async def save_record(self, record: DeliberationRecord, epoch: int | None = None) -> None:
        """Checkpoint an unfinished record as owner `epoch` (None: take ownership now, for a one-off writer).
        Raises StaleWriter if a newer runner owns it or it is finished or gone. A finished record goes
        through finish_record (without stage or feed events)."""
        if record.finished:
            await self.finish_record(record, epoch)
            return
        record.updated_at = time.time()
        code, owner = await self.client.eval(_CHECKPOINT_RECORD, 2, self.key("delib", record.id),
                                              self._owner_key(record.id), record.model_dump_json(),
                                              "" if epoch is None else str(epoch))
        if int(code) < 0:
            raise StaleWriter(record.id, epoch, int(owner), _REFUSED[int(code)])

    async def finish_record(self, record: DeliberationRecord, epoch: int | None = None, *,
                            terminal: tuple[str, dict[str, Any]] | None = None,
                            feed: tuple[str, dict[str, Any]] | None = None) -> bool:
        """Finish a record as owner `epoch` (None: take ownership now), in one atomic script: the record
        with its TTL, out of the active set, the `terminal` stage event, the `feed` entry on councils:events,
        the stats counters and the duration sample. True if this call finished it; False if it was
        finished already (a retried call: nothing is written or counted again). Raises StaleWriter if a
        newer runner owns it or it is gone."""
        assert record.finished, record.status
        record.updated_at = time.time()
        role = record.request.role
        counters = {f"deliberations.{role}.{record.status}": 1}
        duration = ""
        if record.result is not None:
            usage = record.result.usage
            counters[f"tokens.{role}.prompt"] = usage.prompt_tokens
            counters[f"tokens.{role}.completion"] = usage.completion_tokens
            # One sample per completed deliberation: its duration and each stage's (stage kinds: critique-2 is a
            # critique), for the latency percentiles of /v1/status.
            duration = json.dumps({"s": round(record.result.duration_s, 3),
                                   "stages": [[stage_kind(t.stage), round(t.seconds, 3)] for t in record.timings]},
                                  separators=(",", ":"))
        keys = [self.key("delib", record.id), self._owner_key(record.id), self._active_key(role),
                self.key("delib", record.id, "events"), self.key("events"), self.key("stats"),
                self.key("durations", role)]
        args = [record.model_dump_json(), "" if epoch is None else str(epoch), self.record_ttl_s, record.id,
                terminal[0] if terminal else "", json.dumps(terminal[1]) if terminal else "",
                feed[0] if feed else "", json.dumps(feed[1]) if feed else "",
                duration, DURATIONS_KEPT, DELIB_EVENTS_MAXLEN, EVENTS_MAXLEN]
        for field, by in counters.items():
            args += [field, by]
        code, owner = await self.client.eval(_FINISH_RECORD, len(keys), *keys, *args)
        if int(code) < 0:
            raise StaleWriter(record.id, epoch, int(owner), _REFUSED[int(code)])
        return int(code) == 1

    async def active_ids(self, role: str) -> list[str]:
        return sorted(await self.client.smembers(self._active_key(role)))

    async def drop_active(self, role: str, delib_id: str) -> None:
        """Forget an index entry whose record is finished or gone (expired, or never written)."""
        await self.client.srem(self._active_key(role), delib_id)

    # -- events -------------------------------------------------------------------------------
    async def add_event(self, delib_id: str, kind: str, data: dict[str, Any], *, final: bool = False) -> str:
        """Append a stage event. `final` (the terminal event) also gives the stream the record's TTL:
        a deliberation that failed before its first event creates the stream here, after
        save_record set the TTL on a stream that did not exist yet."""
        key = self.key("delib", delib_id, "events")
        fields = {"kind": kind, "data": json.dumps(data)}
        if not final:
            return await self.client.xadd(key, fields, maxlen=DELIB_EVENTS_MAXLEN, approximate=True)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(key, fields, maxlen=DELIB_EVENTS_MAXLEN, approximate=True)
            pipe.expire(key, self.record_ttl_s)
            entry_id, _ = await pipe.execute()
        return entry_id

    async def read_events(self, delib_id: str, after: str = "0-0", block_ms: int | None = None, count: int = 100):
        """Stage events after the given stream id: [(id, kind, data)]."""
        key = self.key("delib", delib_id, "events")
        resp = await self.client.xread({key: after}, count=count, block=block_ms)
        out = []
        for _stream, entries in resp or []:
            for entry_id, fields in entries:
                out.append((entry_id, fields["kind"], json.loads(fields["data"])))
        return out

    async def get_event(self, delib_id: str, entry_id: str):
        """One stage event by its stream id: (id, kind, data), or None."""
        key = self.key("delib", delib_id, "events")
        for found_id, fields in await self.client.xrange(key, min=entry_id, max=entry_id, count=1):
            return found_id, fields["kind"], json.loads(fields["data"])
        return None

    async def publish(self, kind: str, data: dict[str, Any]) -> str:
        """An event for other services on the shared stream councils:events."""
        return await self.client.xadd(
            self.key("events"),
            {"kind": kind, "data": json.dumps(data)},
            maxlen=EVENTS_MAXLEN,
            approximate=True,
        )

    # -- orchestration outcomes ---------------------------------------------------------------
    async def put_orchestration(self, delib_id: str, outcome: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store the outcome of /v1/orchestrate for a finished deliberation, once (it expires with
        the record's TTL). A second put returns the first outcome: retried calls agree."""
        key = self.key("delib", delib_id, "orchestration")
        if await self.client.set(key, json.dumps(outcome), nx=True, ex=self.record_ttl_s):
            return outcome, True
        existing = await self.get_orchestration(delib_id)
        return (existing if existing is not None else outcome), False

    async def get_orchestration(self, delib_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.key("delib", delib_id, "orchestration"))
        return json.loads(raw) if raw else None

    # -- statistics ---------------------------------------------------------------------------
    async def bump(self, field: str, by: int = 1) -> None:
        await self.client.hincrby(self.key("stats"), field, by)

    async def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in (await self.client.hgetall(self.key("stats"))).items()}

    async def active_count(self, role: str) -> int:
        """Unfinished (pending or in progress) deliberations of a council."""
        return int(await self.client.scard(self._active_key(role)))

    async def duration_samples(self, role: str) -> list[dict[str, Any]]:
        """The last DURATIONS_KEPT completed deliberations of a council: {"s": seconds, "stages": [[kind, s]]}
        (a bare number is a sample written before stage timings were kept)."""
        samples = []
        for raw in await self.client.lrange(self.key("durations", role), 0, -1):
            value = json.loads(raw)
            samples.append(value if isinstance(value, dict) else {"s": float(value), "stages": []})
        return samples

    async def durations(self, role: str) -> list[float]:
        return [sample["s"] for sample in await self.duration_samples(role)]
