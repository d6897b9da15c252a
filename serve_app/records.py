"""Deliberation ids and what the API says about a record: the id check, the id an Idempotency-Key stands for,
progress, the HTTP status of a finished record, and the 202 body."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from actors.protocol import stage_names
from actors.models.records import DeliberationRecord

from .errors import ApiError

DELIB_ID_PATTERN = r"^[0-9a-f]{32}$"


def check_delib_id(delib_id: str) -> str:
    if not re.fullmatch(DELIB_ID_PATTERN, delib_id):  # fullmatch: `$` alone also matches before a "\n"
        raise ApiError(404, f"deliberation {delib_id!r} not found")
    return delib_id


def idempotent_id(role: str, key: str | None) -> str | None:
    """The deliberation id an `Idempotency-Key` header stands for (per council), or None without one:
    a client that retries a POST with the same key gets the same deliberation, not a second one."""
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
        raise ApiError(422, "header Idempotency-Key: 1 to 255 printable ASCII characters")
    return hashlib.sha256(f"{role}\n{key}".encode()).hexdigest()[:32]


def progress(record: DeliberationRecord) -> dict[str, Any]:
    # Stages skipped by early stop will never run: they leave the total.
    total = len(stage_names(record.request.rounds or 0)) - len(record.stages_skipped)
    return {"stages_done": len(record.stages_done), "stages_total": total,
            "last_stage": record.stages_done[-1] if record.stages_done else None}


def status_code(record: DeliberationRecord) -> int:
    """The HTTP status of a finished record: 200 completed, 504 timeout, 503 failed."""
    return {"completed": 200, "timeout": 504}.get(record.status, 503)


def accepted(record: DeliberationRecord) -> dict[str, Any]:
    return {"id": record.id, "status": record.status, "status_url": f"/v1/deliberations/{record.id}",
            "events_url": f"/v1/deliberations/{record.id}/events"}
