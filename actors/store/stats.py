"""Counters and latency samples in Valkey: `<prefix>stats` (a hash of counters, written by the finish script and by
`bump`), each council's active-set size, and its last DURATIONS_KEPT deliberation durations (with stage times)."""

from __future__ import annotations

import json
from typing import Any

from .base import StoreBase


class Stats(StoreBase):
    async def bump(self, field: str, by: int = 1) -> None:
        await self.client.hincrby(self.key("stats"), field, by)

    async def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in (await self.client.hgetall(self.key("stats"))).items()}

    async def active_count(self, role: str) -> int:
        """Unfinished (pending or in progress) deliberations of a council."""
        return int(await self.client.scard(self.active_key(role)))

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
