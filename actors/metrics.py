"""Service metrics on Ray's metrics endpoint (`ray.util.metrics`), emitted where the facts are.

Every name starts with `councils_`; Ray prefixes `ray_` when it exports them, and a Counter is
exported with a `_total` suffix (so `councils_deliberations` is scraped as
`ray_councils_deliberations_total`). docs/operations.md documents each metric and its tags.

| metric | type | tags | emitted by |
|---|---|---|---|
| councils_deliberations | Counter | role, status | council actor, when a deliberation ends |
| councils_deliberation_latency_seconds | Histogram | role, status | council actor, when a deliberation ends |
| councils_stage_latency_seconds | Histogram | role, stage | council actor, after each stage |
| councils_tokens | Counter | role, engine, kind (prompt/completion) | council actor, per engine call |
| councils_active_councils | Gauge | (none) | ingress replicas (councils in the registry) |
| councils_inflight_deliberations | Gauge | role | council actor (deliberations it is running) |
| councils_engine_restarts | Gauge | engine | engine actor (Ray restarts of its actor) |

Metrics exist only inside a Ray worker or driver; elsewhere (in-process tests) every call is a no-op.
A metric never breaks the work it measures: errors are logged and dropped.

Gauges are set again every GAUGE_REFRESH_S by a daemon thread: Ray's metrics agent keeps a gauge's value
only for two export intervals (about 20 s) unless it is reported again, so a gauge set once (an engine's
restart count, a council's in-flight count while nothing changes) would vanish from the endpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .models.records import stage_kind

log = logging.getLogger("councils.metrics")

DELIBERATIONS = "councils_deliberations"
DELIBERATION_LATENCY = "councils_deliberation_latency_seconds"
STAGE_LATENCY = "councils_stage_latency_seconds"
TOKENS = "councils_tokens"
ACTIVE_COUNCILS = "councils_active_councils"
INFLIGHT = "councils_inflight_deliberations"
ENGINE_RESTARTS = "councils_engine_restarts"

# Seconds. A deliberation on the CPU dev model takes tens of seconds; on a GPU, a few.
DELIBERATION_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600]
STAGE_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300]

# name -> (kind, description, tag keys, buckets)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    DELIBERATIONS: ("counter", "Deliberations that ended, by council role and final status "
                               "(completed, failed, timeout).", ("role", "status"), None),
    DELIBERATION_LATENCY: ("histogram", "Wall time of a deliberation from its start to its end, seconds.",
                           ("role", "status"), DELIBERATION_BUCKETS),
    STAGE_LATENCY: ("histogram", "Wall time of one deliberation stage (propose, critique, revise, score), "
                                 "seconds.", ("role", "stage"), STAGE_BUCKETS),
    TOKENS: ("counter", "Tokens processed for a council's deliberations, by engine and kind "
                        "(prompt or completion).", ("role", "engine", "kind"), None),
    ACTIVE_COUNCILS: ("gauge", "Councils in the registry (Valkey).", (), None),
    INFLIGHT: ("gauge", "Deliberations a council actor is running right now.", ("role",), None),
    ENGINE_RESTARTS: ("gauge", "How many times Ray restarted the engine's actor after a crash.", ("engine",), None),
}

GAUGE_REFRESH_S = 5.0  # well inside the agent's retention of an unrefreshed gauge (2 x 10 s)

_metrics: dict[str, Any] | None = None
_gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}  # (name, tags) -> last value set
_gauges_lock = threading.Lock()
_refresher: threading.Thread | None = None


def _get(name: str):
    """The metric object, created once per process; None outside Ray."""
    global _metrics
    try:
        import ray

        if not ray.is_initialized():
            return None
        if _metrics is None:
            from ray.util import metrics as rm

            built: dict[str, Any] = {}
            for metric, (kind, desc, tags, buckets) in DEFINITIONS.items():
                if kind == "counter":
                    built[metric] = rm.Counter(metric, description=desc, tag_keys=tags)
                elif kind == "gauge":
                    built[metric] = rm.Gauge(metric, description=desc, tag_keys=tags)
                else:
                    built[metric] = rm.Histogram(metric, description=desc, boundaries=buckets, tag_keys=tags)
            _metrics = built
        return _metrics[name]
    except Exception as exc:  # pragma: no cover - never let a metric break the caller
        log.warning("metrics unavailable: %s", exc)
        return None


def _record(name: str, method: str, value: float, tags: dict[str, str]) -> None:
    metric = _get(name)
    if metric is None:
        return
    try:
        getattr(metric, method)(value, tags=tags)
    except Exception as exc:  # pragma: no cover
        log.warning("metric %s: %s", name, exc)


def _set_gauge(name: str, value: float, tags: dict[str, str]) -> None:
    """Set a gauge now, and keep setting it to that value until it changes (see the module docstring)."""
    global _refresher
    _record(name, "set", value, tags)
    with _gauges_lock:
        _gauges[(name, tuple(sorted(tags.items())))] = value
        if _refresher is None or not _refresher.is_alive():
            _refresher = threading.Thread(target=_refresh_gauges_forever, name="councils-gauges", daemon=True)
            _refresher.start()


def _refresh_gauges_forever() -> None:
    while True:
        time.sleep(GAUGE_REFRESH_S)
        with _gauges_lock:
            current = list(_gauges.items())
        for (name, tags), value in current:
            _record(name, "set", value, dict(tags))


def deliberation_finished(role: str, status: str, duration_s: float) -> None:
    _record(DELIBERATIONS, "inc", 1, {"role": role, "status": status})
    _record(DELIBERATION_LATENCY, "observe", max(duration_s, 0.0), {"role": role, "status": status})


def stage_finished(role: str, stage: str, seconds: float) -> None:
    _record(STAGE_LATENCY, "observe", max(seconds, 0.0), {"role": role, "stage": stage_kind(stage)})


def tokens(role: str, engine: str, prompt: int, completion: int) -> None:
    if prompt > 0:
        _record(TOKENS, "inc", prompt, {"role": role, "engine": engine, "kind": "prompt"})
    if completion > 0:
        _record(TOKENS, "inc", completion, {"role": role, "engine": engine, "kind": "completion"})


def set_active_councils(count: int) -> None:
    _set_gauge(ACTIVE_COUNCILS, count, {})


def set_inflight(role: str, count: int) -> None:
    _set_gauge(INFLIGHT, count, {"role": role})


def engine_started(engine: str) -> None:
    """Called from an engine actor's constructor: publish how often Ray has restarted this actor."""
    try:
        import ray

        if not ray.is_initialized():
            return
        ctx = ray.get_runtime_context()
        actor_id = ctx.get_actor_id()
        if actor_id is None:
            return
        from ray._private.state import actors  # what RuntimeContext.was_current_actor_reconstructed reads

        restarts = int((actors(actor_id=actor_id) or {}).get("NumRestarts", 0))
    except Exception as exc:  # pragma: no cover
        log.warning("engine %s: restart count unavailable: %s", engine, exc)
        return
    _set_gauge(ENGINE_RESTARTS, restarts, {"engine": engine})


class MeteredGenerator:
    """The protocol's Generator, counting tokens by role and engine on the way through."""

    def __init__(self, inner, role: str):
        self.inner = inner
        self.role = role

    async def generate(self, engine, messages, **kwargs):
        completion = await self.inner.generate(engine, messages, **kwargs)
        tokens(self.role, engine, completion.prompt_tokens, completion.completion_tokens)
        return completion

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
