"""Deliberation records in Valkey: created once (within the caps), claimed and checkpointed by one owner at a
time, and ended in one place.

Records are fenced: a runner takes ownership of a record (`claim_record` bumps its owner epoch,
`<prefix>delib:<id>:owner`) and every later write of it is a compare-and-set on that epoch, so of two runners of
one deliberation (a zombie actor, a KubeRay switchover) only the newest writes; the other gets StaleWriter and
stops. A finished record is immutable. A record ends only through `finish_record` (it has its result: completed)
or `fail_record` (failed or timeout), which derive the terminal status, stage event and feed entry themselves and
write them with the TTL, the active-set removal, stats and durations in one script: one completion event per
deliberation, and a retried finish counts nothing twice.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..models.records import DeliberationRecord, FailStatus, Usage, stage_kind
from . import scripts
from .base import StoreBase
from .errors import REFUSED, CouncilBusy, ServiceBusy, StaleWriter
from .events import DELIB_EVENTS_MAXLEN, EVENTS_MAXLEN

DURATIONS_KEPT = 1_000  # per-role samples kept for latency percentiles


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



class Records(StoreBase):
    async def create_record(self, record: DeliberationRecord, max_active: int | None = None,
                            max_active_total: int | None = None) -> tuple[DeliberationRecord, bool]:
        """Write a new record as accepted, once: a retried create with the same id returns the first.
        With `max_active`, raise CouncilBusy instead when the council already has that many unfinished
        deliberations; the count and the write are one atomic step, so concurrent creates never
        overshoot the limit."""
        key = self.key("delib", record.id)
        active = self.active_key(record.request.role)
        # With max_active_total (all councils together: ServiceBusy beyond it), _GLOBAL_CAP runs first.
        outcome = await self.client.eval(scripts.GLOBAL_CAP + scripts.CREATE_RECORD, 4, key, active, self.key("stats"), self.key("councils"), record.model_dump_json(),
                                         record.id, max_active or 0, f"accepted.{record.request.role}",
                                         max_active_total or 0, self.key("active", ""))
        if int(outcome) <= -scripts.GLOBAL_BUSY:
            raise ServiceBusy(-int(outcome) - scripts.GLOBAL_BUSY)
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
        epoch = int(await self.client.eval(scripts.CLAIM_RECORD, 2, self.key("delib", delib_id), self._owner_key(delib_id)))
        return epoch if epoch > 0 else None

    async def hold_lease(self, delib_id: str, epoch: int, ttl_s: float) -> None:
        """Say "owner `epoch` is alive and running this record" for ttl_s (renewed while it runs)."""
        await self.client.set(self.key("delib", delib_id, "lease"), epoch, px=max(int(ttl_s * 1000), 1))

    async def lease_holder(self, delib_id: str) -> int | None:
        raw = await self.client.get(self.key("delib", delib_id, "lease"))
        return int(raw) if raw is not None else None

    async def save_record(self, record: DeliberationRecord, epoch: int | None = None) -> None:
        """Checkpoint an unfinished record as owner `epoch` (None: take ownership now, for a one-off writer).
        Raises StaleWriter if a newer runner owns it or it is finished or gone. A record ends only through
        finish_record or fail_record."""
        if record.finished:
            raise ValueError(f"deliberation {record.id} is {record.status}: finish_record or fail_record end a record")
        record.updated_at = time.time()
        code, owner = await self.client.eval(scripts.CHECKPOINT_RECORD, 2, self.key("delib", record.id),
                                              self._owner_key(record.id), record.model_dump_json(),
                                              "" if epoch is None else str(epoch))
        if int(code) < 0:
            raise StaleWriter(record.id, epoch, int(owner), REFUSED[int(code)])

    async def finish_record(self, record: DeliberationRecord, epoch: int | None = None) -> bool:
        """End a record that has its result as `completed`, as owner `epoch` (None: take ownership now). The status,
        its terminal stage event and its `deliberation.completed` feed entry are derived here. True if this call
        finished it; False if it was finished already (a retry: nothing is written or counted again). Raises
        StaleWriter if a newer runner owns it or it is gone."""
        result = record.result
        if result is None:
            raise ValueError(f"deliberation {record.id} has no result to finish with")
        record.status = "completed"  # also for a record resumed after its result was checkpointed
        record.finished_at = record.finished_at or time.time()
        return await self._end(record, epoch, ("completed", {"status": "completed", "winner_id": result.winner_id,
                                                             "score": result.proposals[0].score}),
                               ("deliberation.completed", feed_entry(record)))

    async def fail_record(self, record: DeliberationRecord, epoch: int | None, error: str,
                          status: FailStatus = "failed") -> bool:
        """End an unfinished record as `failed` or `timeout` with `error`, as owner `epoch` (None: take it over
        from whichever runner has it; that one's next write is refused). Its terminal stage event and its
        `deliberation.failed` feed entry (a timeout too, with its status) are derived here. True / False / StaleWriter
        as finish_record."""
        record.status, record.error, record.finished_at = status, error, time.time()
        return await self._end(record, epoch, (status, {"status": status, "error": error}),
                               ("deliberation.failed", feed_entry(record)))

    async def fail_unfinished(self, role: str, delib_id: str, reason: str) -> bool:
        """Fail a stored record of council `role` by id, taking it over from any runner (fail_record). False if
        it was finished or gone (then it only leaves the active set)."""
        record = await self.get_record(delib_id)
        if record is None or record.finished:
            await self.drop_active(role, delib_id)
            return False
        try:
            return await self.fail_record(record, None, reason)
        except StaleWriter:  # gone meanwhile
            return False

    async def _end(self, record: DeliberationRecord, epoch: int | None, terminal: tuple[str, dict[str, Any]],
                   feed: tuple[str, dict[str, Any]]) -> bool:
        """The finish, in one atomic script: the record with its TTL, out of the active set, the `terminal` stage
        event, the `feed` entry on councils:events, the stats counters and the duration sample."""
        record.updated_at = time.time()
        role = record.request.role
        counters = {f"deliberations.{role}.{record.status}": 1}
        duration = ""
        if record.result is not None and record.status == "completed":
            usage = record.result.usage
            counters[f"tokens.{role}.prompt"] = usage.prompt_tokens
            counters[f"tokens.{role}.completion"] = usage.completion_tokens
            # One sample per completed deliberation: its duration and each stage's (stage kinds: critique-2 is a
            # critique), for the latency percentiles of /v1/status.
            duration = json.dumps({"s": round(record.result.duration_s, 3),
                                   "stages": [[stage_kind(t.stage), round(t.seconds, 3)] for t in record.timings]},
                                  separators=(",", ":"))
        keys = [self.key("delib", record.id), self._owner_key(record.id), self.active_key(role),
                self.key("delib", record.id, "events"), self.key("events"), self.key("stats"),
                self.key("durations", role)]
        args = [record.model_dump_json(), "" if epoch is None else str(epoch), self.record_ttl_s, record.id,
                terminal[0], json.dumps(terminal[1]), feed[0], json.dumps(feed[1]),
                duration, DURATIONS_KEPT, DELIB_EVENTS_MAXLEN, EVENTS_MAXLEN]
        for field, by in counters.items():
            args += [field, by]
        code, owner = await self.client.eval(scripts.FINISH_RECORD, len(keys), *keys, *args)
        if int(code) < 0:
            raise StaleWriter(record.id, epoch, int(owner), REFUSED[int(code)])
        return int(code) == 1

    async def active_ids(self, role: str) -> list[str]:
        return sorted(await self.client.smembers(self.active_key(role)))

    async def drop_active(self, role: str, delib_id: str) -> None:
        """Forget an index entry whose record is finished or gone (expired, or never written)."""
        await self.client.srem(self.active_key(role), delib_id)

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
