"""What the ingress checks about the Valkey it writes to: room left before a write, and its persistence settings.

Ray's GCS shares this Valkey and must never hit maxmemory itself, so API writes stop (503 + Retry-After) while
used_memory is over FULL_AT of maxmemory. The persistence report (appendonly, appendfsync, maxmemory-policy,
with warnings) is part of /readyz for callers allowed to see details.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from actors.store import Store

from .errors import ApiError

FULL_AT = 0.9  # share of Valkey's maxmemory above which API writes get 503 (the rest is the GCS's)


class ValkeyGuard:
    def __init__(self, store: Store):
        self.store = store
        self._memory: tuple[float, int, int] | None = None
        self._persistence: tuple[float, dict[str, Any]] | None = None

    async def check_room(self) -> None:
        """503 + Retry-After before a write when Valkey is nearly full. INFO is read at most once a second."""
        now = time.time()
        if self._memory is None or now - self._memory[0] > 1.0:
            try:
                info = await self.store.memory_info()
                used, cap = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
            except Exception:  # INFO refused (a managed Valkey): the OOM handler is the backstop
                used, cap = 0, 0
            self._memory = (now, used, cap)
        _, used, cap = self._memory
        if cap and used >= FULL_AT * cap:
            raise ApiError(503, f"Valkey is nearly full ({used} of maxmemory {cap} bytes): new deliberations and "
                                "council writes are refused until records expire or the operator raises maxmemory",
                           headers={"Retry-After": "30"})

    async def persistence(self) -> dict[str, Any]:
        """appendonly / appendfsync / maxmemory(-policy) of the Valkey, with warnings (cached 30 s)."""
        if self._persistence and time.time() - self._persistence[0] < 30:
            return self._persistence[1]
        try:
            info = await asyncio.wait_for(self.store.config_values("append*", "maxmemory*"), 4)
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
