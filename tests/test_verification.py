"""actors/verification.py: Ray tasks verify while the GCS is up; while it is down (a head restart), the pending
texts are verified in the council's own process instead of waiting for the head. Fake task handles, no Ray."""

from __future__ import annotations

import asyncio

import pytest

from actors import verification
from actors.models.councils import ScoringSpec
from actors.models.requests import DeliberationRequest
from actors.verification import RayVerifier
from councils_local.valkey_server import free_port

pytestmark = pytest.mark.unit

REQUEST = DeliberationRequest(role="DEV", task="Write add(a, b).", constraints={"tests": "assert add(1, 2) == 3"})
CODE = "```python\ndef add(a, b):\n    return a + b\n```"
FROM_TASK = [{"name": "from_task", "status": "passed", "message": "ran as a Ray task", "weight": 1.0}]


class Task:
    """Stands for the remote function: `.remote(...)` returns an awaitable that answers after `delay_s`
    (None: never, as a task waiting for a worker while the GCS is down)."""

    def __init__(self, delay_s: float | None):
        self.delay_s, self.submitted = delay_s, 0

    def remote(self, *args):
        self.submitted += 1

        async def answer():
            if self.delay_s is None:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay_s)
            return FROM_TASK
        return answer()


@pytest.fixture(autouse=True)
def quick_probe(monkeypatch):
    monkeypatch.setattr(verification, "GCS_PROBE_S", 0.1)


async def test_gcs_down_pending_texts_are_verified_here():
    verifier = RayVerifier(gcs_address=f"127.0.0.1:{free_port()}")  # nothing listens there
    verifier.task = Task(delay_s=None)
    [checks] = await asyncio.wait_for(verifier.verify([CODE], REQUEST, ["python"], ScoringSpec()), 30)
    assert verifier.task.submitted == 1
    [tests] = [c for c in checks if c.name == "python.tests"]
    assert tests.status == "passed"  # really verified, here


async def test_gcs_up_the_tasks_answer_even_when_slow():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        verifier = RayVerifier(gcs_address=f"127.0.0.1:{port}")
        verifier.task = Task(delay_s=0.5)  # several probes pass while it runs
        results = await verifier.verify([CODE, CODE], REQUEST, ["python"], ScoringSpec())
        assert [[c.name for c in checks] for checks in results] == [["from_task"], ["from_task"]]
    finally:
        server.close()
