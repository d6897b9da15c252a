"""The council actor: a thin, durable host around the deliberation protocol.

`council-<ROLE>` is a detached, named actor (namespace `councils`, restarted forever). Its
constructor reads its spec and its unfinished deliberations from Valkey, so a restart *is* a
restore: every unfinished deliberation resumes from its last checkpointed stage.

Why ~400 lines: the actor's lifecycle (restore, sweep, retire), the run of one deliberation with its fenced
finish, and the checkpoint sink are one ownership story (epochs, leases, the tasks dict as the lock); split,
each part would have to reach into the others' state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any

import ray

from . import metrics, topology
from .backends.base import EngineUnavailable
from .engine_client import AFFINITY, RayEngineGenerator
from .orchestrate import NotOrchestrable, choose
from .protocol import DeliberationTimeout, deliberate
from .models.councils import CouncilSpec
from .models.records import DeliberationRecord, FailStatus
from .store import UNREACHABLE, StaleWriter, Store
from .verification import LocalVerifier, RayVerifier

log = logging.getLogger("councils.council")

NAMESPACE = "councils"
# How often a council looks for unfinished records of its own that nothing is running.
SWEEP_INTERVAL_S = 5.0


def council_actor_name(role: str) -> str:
    return f"council-{role}"


class CouncilNotFound(Exception):
    pass


class _StoreSink:
    """RecordSink over the Valkey store: checkpoints (fenced on the runner's owner epoch of the record)
    and stage events (timed for the stage metric)."""

    def __init__(self, store: Store, role: str = "", epochs: dict[str, int] | None = None):
        self.store = store
        self.role = role
        # Owner epoch of every deliberation this council runs (Council._run claims it).
        self.epochs: dict[str, int] = {} if epochs is None else epochs
        self.stage_started: dict[tuple[str, str], float] = {}

    async def checkpoint(self, record: DeliberationRecord) -> None:
        # The protocol's last checkpoint holds the result, still in_progress: Store.finish_record ends it.
        await self.store.save_record(record, self.epochs[record.id])

    async def event(self, record: DeliberationRecord, kind: str, data: dict[str, Any]) -> None:
        await self.store.add_event(record.id, kind, data)
        if kind == "stage.started":
            self.stage_started[(record.id, data["stage"])] = time.monotonic()
        elif kind == "stage.completed":
            started = self.stage_started.pop((record.id, data["stage"]), None)
            if started is not None:  # a stage resumed after a restart has no start here
                metrics.stage_finished(self.role, data["stage"], time.monotonic() - started)

    def forget(self, delib_id: str) -> None:
        """Drop the start times of a deliberation that ended before its stage did."""
        for key in [k for k in self.stage_started if k[0] == delib_id]:
            del self.stage_started[key]


class Council:
    def __init__(self, role: str, valkey_url: str, key_prefix: str = "councils:", record_ttl_s: int = 3600,
                 sweep_interval_s: float = SWEEP_INTERVAL_S, verification: dict | None = None):
        self.role = role
        self.store = Store(valkey_url, key_prefix, record_ttl_s)
        self.epochs: dict[str, int] = {}  # deliberation id -> the owner epoch this council holds
        self.sink = _StoreSink(self.store, role, self.epochs)
        # Engines by name; the actors behind a name (its replicas) are looked up in Valkey (they change on a
        # rollover). A deliberation's calls go to one replica (AFFINITY, set in _run).
        self.engines = RayEngineGenerator(namespace=NAMESPACE, resolve=self.store.engine_replicas)
        self.generator = metrics.MeteredGenerator(self.engines, role)
        # Verification runs as Ray tasks inside a cluster, in threads of this process outside one (tests).
        self.verifier = RayVerifier(verification) if ray.is_initialized() else \
            LocalVerifier(bool((verification or {}).get("allow_unisolated_sandbox")))
        self.tasks: dict[str, asyncio.Task] = {}
        self.sweep_interval_s = sweep_interval_s
        # A runner holds a lease on each record it runs (renewed every sweep), so another council's
        # sweeper leaves it alone instead of taking it over while it is alive.
        self.lease_s = max(3 * sweep_interval_s, 1.0)
        self.sweeper: asyncio.Task | None = None
        self.retired = False
        self.started_at = time.time()
        # The constructor is synchronous (Ray actors): the store reads the restore state with a sync client.
        self.spec: CouncilSpec | None
        self.unfinished: list[str]
        self.spec, self.unfinished, settings = self.store.restore_state(role)
        self._apply_settings(settings)
        log.info("council %s restored: spec v%s, %d unfinished", role,
                 self.spec.version if self.spec else None, len(self.unfinished))
        # Resume without waiting for anyone to call us: queue a call to ourselves, which runs
        # on the actor's event loop as soon as the constructor returns. (Only inside Ray: outside it,
        # get_runtime_context() would start a local Ray instance.)
        if ray.is_initialized():
            try:
                ray.get_runtime_context().current_actor.resume_unfinished.remote()
            except Exception:  # a driver, not an actor (tests host the class in-process)
                pass

    # -- lifecycle ----------------------------------------------------------------------------
    async def resume_unfinished(self) -> list[str]:
        if self.spec is None and not self.retired:
            await self._retire_if_deleted()
        if self.retired:
            return []
        self._start_sweeper()
        for delib_id in self.unfinished:
            self._ensure_running(delib_id)
        resumed, self.unfinished = self.unfinished, []
        return resumed

    def _start_sweeper(self) -> None:
        if not self.retired and (self.sweeper is None or self.sweeper.done()):
            self.sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                for delib_id, epoch in list(self.epochs.items()):
                    await self.store.hold_lease(delib_id, epoch, self.lease_s)
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Valkey away for a moment: try again next time
                log.warning("council %s: sweep failed: %s", self.role, exc)

    async def sweep(self) -> list[str]:
        """Take over every unfinished record of this council that no task of this actor is running:
        one past its deadline becomes `timeout` (in _run), any other runs. Such a record was accepted
        while nothing could hand it to us (its submit was lost, the council was down...).

        The tasks dict is the lock: a record this actor is running is never touched here (its own
        wait_for ends it at the deadline), and _ensure_running never starts a second task for an id.
        A record another runner holds a live lease on is left to it; if two runners still meet, the
        owner epoch (Store.claim_record) lets only the newest write.
        """
        if self.retired:
            return []
        adopted = []
        for delib_id in await self.store.active_ids(self.role):
            task = self.tasks.get(delib_id)
            if self.retired or (task is not None and not task.done()):
                continue
            if await self.store.lease_holder(delib_id) is not None:
                continue  # another council's runner is alive and running it
            self._ensure_running(delib_id)
            adopted.append(delib_id)
        if adopted:
            log.info("council %s: sweep took over %s", self.role, adopted)
        return adopted

    async def info(self) -> dict[str, Any]:
        await self.resume_unfinished()
        return {
            "role": self.role,
            "version": self.spec.version if self.spec else None,
            "running": sorted(i for i, t in self.tasks.items() if not t.done()),
            "started_at": self.started_at,
        }

    async def reload(self) -> int | None:
        """Re-read the spec after an update. Running deliberations keep the spec they started with.
        Also re-resolves engine actors (a config deploy reloads councils after an engine rollover)."""
        self.spec = await self.store.get_council(self.role)
        self.engines.forget()
        return self.spec.version if self.spec else None

    async def configure(self) -> dict[str, Any]:
        """Re-read the live settings (the ingress's user_config) from Valkey."""
        self._apply_settings(await self.store.get_settings())
        return {"record_ttl_s": self.store.record_ttl_s}

    def _apply_settings(self, raw: str | None) -> None:
        if not raw:
            return
        try:
            ttl = json.loads(raw).get("record_ttl_s")
            if ttl:
                self.store.record_ttl_s = int(ttl)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("council %s: ignoring unreadable settings %r: %s", self.role, raw, exc)

    async def retire(self, reason: str = "council deleted") -> list[str]:
        """Before the actor is killed: end every running deliberation as failed, with the reason."""
        failed = []
        self.retired = True  # nothing starts again here: not the sweeper, not a late submit
        if self.sweeper is not None:
            self.sweeper.cancel()
        for delib_id, task in list(self.tasks.items()):
            if not task.done():
                task.cancel()
        for delib_id in await self.store.active_ids(self.role):
            record = await self.store.get_record(delib_id)
            if record and not record.finished:
                try:  # taken over from whichever runner has it: that one's next write is refused
                    await self._fail(record, reason, force=True)
                except StaleWriter:  # gone meanwhile
                    continue
                failed.append(delib_id)
        return failed

    async def _retire_if_deleted(self) -> None:
        """No spec: the council was deleted, and this actor was created by a call that raced the delete
        (a POST on another replica) or outlived it. Fail what is left of the council and go away for good,
        so nothing brings a deleted council back."""
        self.spec = await self.store.get_council(self.role)
        if self.spec is not None:  # re-created meanwhile
            return
        reason = f"council {self.role} was deleted"
        log.warning("council %s: no spec (deleted); retiring this actor", self.role)
        await self.retire(reason)
        await self.store.purge_council(self.role, reason)
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id():
            ray.actor.exit_actor()  # an intentional exit: Ray does not restart it

    # -- deliberations ------------------------------------------------------------------------
    async def submit(self, delib_id: str) -> str:
        """Start (or keep running) the deliberation with this id. Idempotent: retried calls are safe."""
        await self.resume_unfinished()
        task = self._ensure_running(delib_id)
        return "running" if task and not task.done() else "finished"

    async def orchestrate(self, delib_id: str, top_k: int = 3) -> dict:
        """The architect step over a completed deliberation (see orchestrate.py). Idempotent: the first
        stored outcome is the outcome, so a retried call returns it instead of asking again."""
        stored = await self.store.get_orchestration(delib_id)
        if stored is not None:
            return stored
        record = await self.store.get_record(delib_id)
        if record is None:
            raise NotOrchestrable(delib_id)
        if record.status != "completed" or record.result is None:
            raise NotOrchestrable(delib_id, record.status)
        # The architect speaks through the council's first agent: its engine, its seed.
        agent = self.spec.agents[0] if self.spec and self.spec.agents else None
        outcome = await choose(delib_id, record.request, record.result.proposals, agent, self.generator,
                               top_k=top_k, nonce=record.nonce)
        stored, created = await self.store.put_orchestration(delib_id, outcome.model_dump(mode="json"))
        if created:
            await self.store.bump(f"orchestrations.{self.role}.{outcome.decided_by}")
        return stored

    async def deliberate(self, delib_id: str) -> dict:
        """Run the deliberation and return its final record (as a dict)."""
        await self.submit(delib_id)
        task = self.tasks.get(delib_id)
        if task is not None:
            # Shield: a caller that goes away must not cancel the work it asked for.
            await asyncio.shield(task)
        record = await self.store.get_record(delib_id)
        return record.model_dump(mode="json") if record else {}

    def _ensure_running(self, delib_id: str) -> asyncio.Task | None:
        task = self.tasks.get(delib_id)
        if self.retired:
            return task
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._run(delib_id))
            self.tasks[delib_id] = task
            task.add_done_callback(lambda t, i=delib_id: self._task_done(i, t))
            self._report_inflight()
        return task

    def _task_done(self, delib_id: str, task: asyncio.Task) -> None:
        if self.tasks.get(delib_id) is task:
            self.tasks.pop(delib_id, None)
        self._report_inflight()

    def _report_inflight(self) -> None:
        metrics.set_inflight(self.role, sum(1 for t in self.tasks.values() if not t.done()))

    async def _run(self, delib_id: str) -> None:
        AFFINITY.set(delib_id)  # this task's context: every engine call of the deliberation on one replica
        try:
            await self._run_owned(delib_id)
        except StaleWriter as exc:
            # Another runner took this deliberation over, or finished it: it is theirs now. Stop here.
            log.warning("council %s: stopped running %s: %s", self.role, delib_id, exc)
        finally:
            self.epochs.pop(delib_id, None)
            self.sink.forget(delib_id)
            self.engines.release(delib_id)

    async def _run_owned(self, delib_id: str) -> None:
        # Take ownership first: from here on every write of this record is fenced on this epoch, so a
        # second runner (a zombie actor, another cluster during a switchover) can no longer overwrite it.
        epoch = await self.store.claim_record(delib_id)
        record = await self.store.get_record(delib_id) if epoch is not None else None
        if record is None or record.finished:
            await self.store.drop_active(self.role, delib_id)
            return
        self.epochs[delib_id] = epoch
        await self.store.hold_lease(delib_id, epoch, self.lease_s)
        if record.request.role != self.role:
            await self._fail(record, f"record belongs to council {record.request.role}, not {self.role}")
            return
        spec = self.spec
        if spec is None:
            await self._fail(record, f"council {self.role} does not exist")
            return
        remaining = record.deadline - time.time()
        try:
            if remaining <= 0:
                raise DeliberationTimeout(
                    f"deadline passed before the deliberation could {'resume' if record.stages_done else 'run'}"
                    f" (status was {record.status}, stages done: {record.stages_done or 'none'})")
            record.council_version = record.council_version or spec.version
            await asyncio.wait_for(deliberate(record, spec, self.generator, self.sink, self.verifier),
                                   timeout=remaining)
            if record.result is None:
                raise RuntimeError("the protocol ended without a result")
        except (DeliberationTimeout, asyncio.TimeoutError) as exc:
            await self._fail(record, f"timed out after {record.request.constraints.timeout_s:g}s: "
                                     f"{exc}{self.engines.why_waiting()}", status="timeout")
        except EngineUnavailable:
            # The caller reads record.error: a generic sentence and an id; the detail (a remote traceback that
            # names nodes and addresses) is in this council's log under the same id.
            error_id = secrets.token_hex(8)
            log.exception("deliberation %s: engine unavailable (error id %s)", delib_id, error_id)
            await self._fail(record, f"engine unavailable (error id {error_id}); the council's log has the detail")
        except (asyncio.CancelledError, StaleWriter):
            raise
        except UNREACHABLE as exc:
            # Valkey is away for longer than the client's retries (a restart under load takes tens of
            # seconds). Writing `failed` would fail too, and the deliberation did nothing wrong: leave the
            # record in the active set with its last checkpoint. Its lease lapses, and once Valkey is back
            # the sweeper resumes it from that checkpoint (or ends it as timeout past its deadline).
            log.warning("deliberation %s: Valkey unreachable (%s); the sweeper resumes it from its last "
                        "checkpoint once Valkey is back", delib_id, exc)
        except Exception:  # a bug or a bad engine answer: the record must still end
            error_id = secrets.token_hex(8)
            log.exception("deliberation %s failed (error id %s)", delib_id, error_id)
            await self._fail(record, f"internal error (error id {error_id}); the council's log has the detail")
        else:
            # Outside the handlers above: the result is checkpointed, and an error while finishing must not
            # turn it into a failure. If the finish did not get through, the record stays in the active set
            # with its result, and the next run (sweep, restart) only finishes it.
            try:
                await self._completed(record)
            except StaleWriter:
                raise
            except Exception:
                log.exception("deliberation %s: result checkpointed, finishing it failed; the sweeper retries",
                              delib_id)

    async def _completed(self, record: DeliberationRecord) -> None:
        """Finish a record that has its result (Store.finish_record: status, terminal event, feed entry)."""
        if await self.store.finish_record(record, self.epochs[record.id]):
            metrics.deliberation_finished(self.role, "completed", record.result.duration_s)

    async def _fail(self, record: DeliberationRecord, error: str, *, status: FailStatus = "failed",
                    force: bool = False) -> None:
        """End a record as failed or timeout (Store.fail_record), fenced on this council's epoch of the record;
        `force` (retire) takes the record over from whoever runs it instead."""
        done = await self.store.fail_record(record, None if force else self.epochs[record.id], error, status)
        self.sink.forget(record.id)
        if done:
            metrics.deliberation_finished(self.role, status, record.finished_at - (record.started_at or record.created_at))


def council_actor_options(role: str, max_concurrency: int = 64) -> dict[str, Any]:
    return {
        "name": council_actor_name(role),
        "namespace": NAMESPACE,
        "lifetime": "detached",
        "max_restarts": -1,
        # Calls are idempotent (keyed by deliberation id), so Ray may retry them after a restart.
        "max_task_retries": -1,
        "max_concurrency": max_concurrency,
        "num_cpus": 0,
        # On a worker node (actors/topology.py): never on the head, so a head crash does not take it along.
        "resources": topology.demand(topology.WORKER),
        "get_if_exists": True,
    }


RemoteCouncil = ray.remote(Council)
