"""The cheap parts around the engine, no model: model names, the engine actor's options, the OpenAI-compatible backend
against a fake server, a call whose vLLM engine is shut down meanwhile. The real vLLM engine: tests/test_engine_vllm.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from actors.backends.base import EngineError, EngineUnavailable
from actors.engine import Engine
from actors.engine_hosting import engine_actor_options
from actors.model_prep import DEV_MODEL, resolve_model
from actors.models.councils import EngineSpec

pytestmark = pytest.mark.unit

TASK = [
    {"role": "system", "content": "You are a pragmatic senior engineer."},
    {"role": "user", "content": "Write a Python function that checks whether a string is a palindrome."},
]


def test_non_special_model_names_pass_through():
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("/models/x") == "/models/x"


def test_actor_options():
    spec = EngineSpec(name="smollm2", model=DEV_MODEL, num_cpus=1)
    opts = engine_actor_options(spec)
    assert opts["name"] == "engine-smollm2" and opts["namespace"] == "councils"
    assert opts["lifetime"] == "detached" and opts["max_restarts"] == -1
    assert opts["num_gpus"] == 0 and opts["num_cpus"] == 1 and opts["max_concurrency"] >= 64
    env = opts["runtime_env"]["env_vars"]
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"]
    gpu = engine_actor_options(EngineSpec(name="big", model="org/model", num_gpus=1))
    assert gpu["num_gpus"] == 1 and "VLLM_CPU_KVCACHE_SPACE" not in gpu["runtime_env"]["env_vars"]


def _openai_engine(monkeypatch, handler, **spec_kw) -> Engine:
    monkeypatch.setenv("TEST_ENGINE_KEY", "sk-test")
    spec = EngineSpec(
        name="remote", backend="openai", model="served-model", base_url="http://upstream.test/v1",
        api_key_env="TEST_ENGINE_KEY", **spec_kw,
    )
    engine = Engine(spec)

    class Client(httpx.AsyncClient):  # a subclass: the openai client checks that it is given an httpx client
        def __init__(self, **kw):
            super().__init__(transport=httpx.MockTransport(handler), **kw)

    monkeypatch.setattr(httpx, "AsyncClient", Client)
    return engine


async def test_openai_backend_posts_chat_completions(monkeypatch):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        assert body["model"] == "served-model" and body["seed"] == 3 and body["max_tokens"] == 16
        return httpx.Response(200, json={
            "choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 8}},
        })

    engine = _openai_engine(monkeypatch, handler)
    out = await engine.generate([{"role": "user", "content": "hi"}], temperature=0.2, max_tokens=16, seed=3)
    assert out == {"text": "hello", "prompt_tokens": 11, "cached_tokens": 8, "completion_tokens": 2,
                   "finish_reason": "stop"}
    assert str(seen[0].url) == "http://upstream.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    await engine.shutdown()


async def test_openai_backend_retries_then_reports_unavailable(monkeypatch):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        # Retry-After (honoured by the openai client) keeps the backoff between attempts short here.
        return httpx.Response(503, text="overloaded", headers={"retry-after-ms": "1"})

    engine = _openai_engine(monkeypatch, handler)
    with pytest.raises(EngineUnavailable, match="503"):
        await engine.generate([{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=4)
    assert len(calls) == 4  # first try + 3 retries


async def test_openai_backend_client_errors_are_not_retried(monkeypatch):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": "bad"})

    engine = _openai_engine(monkeypatch, handler)
    with pytest.raises(EngineError, match="400"):
        await engine.generate([{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=4)
    assert len(calls) == 1


class _HangingLLM:
    """An AsyncLLM stand-in whose requests never answer (the engine core was SIGKILLed); while this call awaits
    its renderer, another call shuts the engine down (`backend.llm = None`), as Engine.generate does on a death."""

    errored = False

    def __init__(self, backend):
        self.backend = backend
        self.renderer = self

    async def render_cmpl_async(self, prompts):
        await asyncio.sleep(0.05)
        self.backend.llm = None  # another call saw the engine core die and shut it down meanwhile
        return prompts

    async def generate(self, prompt, params, request_id):
        await asyncio.Event().wait()
        yield None  # pragma: no cover


class _Tokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "prompt"

    def encode(self, text, add_special_tokens):
        return [1, 2, 3]


async def test_a_call_whose_engine_is_shut_down_meanwhile_is_unavailable_not_a_bug(monkeypatch):
    """This call must fail with EngineUnavailable (the council retries it on the new engine core), not with
    AttributeError on the engine another call set to None. Found on a fresh-clone CI run of test_e2e_make_run's
    engine-core SIGKILL: the deliberation ended failed."""
    from actors.backends import vllm as backend_module
    from actors.backends.vllm import VllmBackend

    monkeypatch.setattr(backend_module, "DEATH_POLL_S", 0.05)
    import vllm  # noqa: F401  imported before the hang guard below starts: on a loaded machine it took minutes

    backend = VllmBackend(EngineSpec(name="e", model="m"))
    backend.llm, backend.tokenizer = _HangingLLM(backend), _Tokenizer()
    with pytest.raises(EngineUnavailable, match="is dead|went away"):
        await asyncio.wait_for(backend.generate(TASK, 0.0, 8, None), 120)


def test_a_cpu_engine_core_is_reniced_to_yield_the_cores_and_never_lowered():
    """On a CPU node the engine core gets CPU_ENGINE_CORE_NICENESS (19), so the councils and the ingress (Ray workers
    at 15) are not queued behind its model threads; a process already nicer is left as it is. As any user may."""
    import subprocess
    import sys

    import psutil

    from actors.backends.vllm import CPU_ENGINE_CORE_NICENESS, raise_niceness

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = psutil.Process(child.pid)
        assert proc.nice() < CPU_ENGINE_CORE_NICENESS
        raise_niceness([proc], CPU_ENGINE_CORE_NICENESS)
        assert proc.nice() == CPU_ENGINE_CORE_NICENESS
        raise_niceness([proc], 5)
        assert proc.nice() == CPU_ENGINE_CORE_NICENESS  # never lowered
        child.kill()
        child.wait()
        raise_niceness([proc], CPU_ENGINE_CORE_NICENESS)  # gone: left as it is, no error
    finally:
        child.kill()


async def test_only_the_processes_an_engine_start_spawned_are_reniced(monkeypatch):
    """A driver that hosts an engine (a benchmark beside a whole `make run` stack it started) keeps its other
    children's niceness: the first version reniced every child, and with them the whole stack."""
    import subprocess
    import sys
    import types

    import psutil

    from actors.backends import vllm as backend_module
    from actors.backends.vllm import CPU_ENGINE_CORE_NICENESS, VllmBackend

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    spawned: list[subprocess.Popen] = []

    class FakeAsyncLLM:  # spawns an "engine core", as AsyncLLM.from_engine_args does
        @staticmethod
        def from_engine_args(args):
            spawned.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
            return types.SimpleNamespace(get_tokenizer=lambda: types.SimpleNamespace(chat_template="t"),
                                         model_config=types.SimpleNamespace(max_model_len=2048),
                                         shutdown=lambda: None)

    monkeypatch.setitem(sys.modules, "vllm.v1.engine.async_llm", types.SimpleNamespace(AsyncLLM=FakeAsyncLLM))
    monkeypatch.setattr(backend_module, "resolve_model", lambda model: "/models/m")
    monkeypatch.setattr(backend_module, "is_cpu_platform", lambda: True)
    monkeypatch.setattr(backend_module, "cpu_engine_env", lambda: {})  # this process's environment stays as it is
    monkeypatch.setattr(VllmBackend, "engine_args", lambda self, path, cpu: None)
    try:
        await VllmBackend(EngineSpec(name="e", model="m")).start()
        assert psutil.Process(spawned[0].pid).nice() == CPU_ENGINE_CORE_NICENESS
        assert psutil.Process(bystander.pid).nice() == psutil.Process().nice()
    finally:
        for proc in (bystander, *spawned):
            proc.kill()
