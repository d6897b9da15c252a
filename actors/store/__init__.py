"""Valkey: the source of truth for councils, engines, deliberation records and events.

One `Store` per process, made of one module per thing it keeps:
- base.py: the connection (one async client), `key` (every key name: docs/operations.md's key table), the sync
  reads a Ray actor's constructor needs, Valkey's own INFO/CONFIG;
- councils.py: council and engine specs, the deployed config's stamp and live settings;
- records.py: deliberation records (create within the caps, claim, checkpoint, finish or fail: fenced on the
  owner epoch), orchestration outcomes;
- events.py: each deliberation's stage-event stream and the shared feed;
- stats.py: counters, active counts and duration samples;
- scripts.py: the Lua scripts for writes that touch several keys at once; errors.py: what the store raises.

No module outside this package builds a key or touches a Valkey client.
"""

from __future__ import annotations

from .councils import CouncilSpecs, same_council
from .errors import UNREACHABLE, CouncilBusy, RegistryFull, ServiceBusy, StaleWriter
from .events import DELIB_EVENTS_MAXLEN, EVENTS_MAXLEN, Event, EventStreams
from .records import DURATIONS_KEPT, Records, feed_entry
from .stats import Stats


class Store(CouncilSpecs, Records, EventStreams, Stats):
    """Everything the councils and the ingress keep in Valkey, behind one object (see the modules above)."""


__all__ = ["Store", "StaleWriter", "CouncilBusy", "ServiceBusy", "RegistryFull", "UNREACHABLE", "Event",
           "feed_entry", "same_council", "EVENTS_MAXLEN", "DELIB_EVENTS_MAXLEN", "DURATIONS_KEPT"]
