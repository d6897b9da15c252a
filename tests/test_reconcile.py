"""serve_app/reconcile.py without Ray: `retrying`, the backoff of the start-up reconcile and of pushing live settings
(tenacity), retries a failing step until it succeeds, reporting each error (redacted) and each delay."""

from __future__ import annotations

import asyncio

import pytest

from serve_app import redact
from serve_app.reconcile import retrying

pytestmark = pytest.mark.unit


async def test_retrying_backs_off_doubling_to_the_cap_until_the_step_succeeds(caplog):
    redact.register("s3cret-in-an-error")
    errors, calls = [], []

    async def step():
        calls.append(1)
        if len(calls) <= 3:
            raise ConnectionError(f"attempt {len(calls)}: s3cret-in-an-error")

    with caplog.at_level("WARNING", logger="councils.ingress"):
        await retrying(step, "reconcile", on_error=errors.append, first_delay_s=0.5, max_delay_s=1.0)
    assert len(calls) == 4
    assert errors == [f"ConnectionError: attempt {i}: {redact.MASK}" for i in (1, 2, 3)]
    waits = [r.getMessage().rpartition("retrying in ")[2] for r in caplog.records]
    assert waits == ["0.5s", "1.0s", "1.0s"]


async def test_retrying_stops_when_cancelled():
    async def step():
        raise RuntimeError("Valkey away")

    task = asyncio.ensure_future(retrying(step, "reconcile", first_delay_s=0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
