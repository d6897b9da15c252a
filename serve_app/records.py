"""Deliberation ids and what the API says about a record: the id check, the id an Idempotency-Key stands for,
progress, the HTTP status of a finished record, and the 202 body."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Any, Mapping

from actors.protocol import stage_names
from actors.models.records import DeliberationRecord

from .errors import ApiError
from .settings import EnvSettings, env_var

DELIB_ID_PATTERN = r"^[0-9a-f]{32}$"


def check_delib_id(delib_id: str) -> str:
    if not re.fullmatch(DELIB_ID_PATTERN, delib_id):  # fullmatch: `$` alone also matches before a "\n"
        raise ApiError(404, f"deliberation {delib_id!r} not found")
    return delib_id


def idempotent_id(role: str, key: str | None, secret: bytes) -> str | None:
    """The deliberation id an `Idempotency-Key` header stands for (per council), or None without one:
    a client that retries a POST with the same key gets the same deliberation, not a second one.

    An HMAC-SHA256 under the server's secret (load_idempotency_secret): without the secret nobody can compute
    the id another client's key stands for, and so read its record by guessing the key."""
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
        raise ApiError(422, "header Idempotency-Key: 1 to 255 printable ASCII characters")
    if len(secret) < 16:
        raise ValueError("the idempotency secret must have at least 16 bytes")
    return hmac.new(secret, f"{role}\n{key}".encode(), hashlib.sha256).hexdigest()[:32]


class SecretConfigError(RuntimeError):
    """The idempotency secret is configured but unusable. The message names the variable or file, never the value."""


def load_idempotency_secret(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key of the Idempotency-Key HMAC from COUNCILS_IDEMPOTENCY_SECRET_FILE (preferred: a 0600/0400 file) or
    COUNCILS_IDEMPOTENCY_SECRET; None when neither is set (the service then keeps a generated one in Valkey).
    A file that is set but unreadable, empty or shorter than 16 characters stops the replica."""
    env = EnvSettings.from_env(environ)
    var, file_var = env_var("idempotency_secret"), env_var("idempotency_secret_file")
    if env.idempotency_secret and env.idempotency_secret_file:
        raise SecretConfigError(f"set {var} or {file_var}, not both")
    value, where = env.idempotency_secret, var
    if env.idempotency_secret_file:
        where = f"{file_var}={env.idempotency_secret_file}"
        try:
            value = Path(env.idempotency_secret_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretConfigError(f"{where} cannot be read: {type(exc).__name__}") from None
        if not value.strip():
            raise SecretConfigError(f"{where} is empty")
    value = value.strip()
    if not value:
        return None
    if len(value) < 16:
        raise SecretConfigError(f"{where}: the idempotency secret must have at least 16 characters "
                                "(openssl rand -hex 32)")
    return value.encode()


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
