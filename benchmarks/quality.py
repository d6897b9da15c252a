"""Deliberation quality: one agent versus a council, on arithmetic with exact answers.

Tasks are generated on the fly with a fixed seed, as in the multi-agent debate paper (Du et al., 2023):
"What is the result of a+b*c+d-e*f? Make sure to state your answer at the end of the response.",
with a..f drawn from 0..30. Both sides run the real protocol on the same engine with the same
max_tokens per generation:
  single   a one-agent council, rounds 0: one proposal, the answer;
  council  the benchmark council (3 agents, 1 round): propose, critique, revise, score; the answer
           is the winner's (ranked by the check suite, as the service returns it). The majority
           answer over the council's final proposals is reported beside it.
The answer is the last integer in the text. Accuracy with a 95 % Wilson interval.

    python -m benchmarks.quality [--tasks 24] [--max-tokens 64]   # builds its own engine
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
from collections import Counter

from .common import NullSink, bench_council, machine_lock, on_bench_engine, save_run, settings, wilson

PROMPT = "What is the result of {expr}? Make sure to state your answer at the end of the response."
_INT = re.compile(r"-?\d[\d,]*")


def make_tasks(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    tasks = []
    for _ in range(n):
        a, b, c, d, e, f = (rng.randint(0, 30) for _ in range(6))
        tasks.append({"expr": f"{a}+{b}*{c}+{d}-{e}*{f}", "answer": a + b * c + d - e * f})
    return tasks


def parse_answer(text: str) -> int | None:
    """The last integer in the text (thousands separators allowed), or None."""
    found = _INT.findall(text or "")
    if not found:
        return None
    try:
        return int(found[-1].replace(",", ""))
    except ValueError:
        return None


def _request(task: dict, agents: int, rounds: int, max_tokens: int):
    from actors.specs import DeliberationRequest

    return DeliberationRequest.model_validate({
        "role": "MATH", "task": PROMPT.format(expr=task["expr"]),
        "constraints": {"timeout_s": 3600}, "rounds": rounds, "num_agents": agents, "max_tokens": max_tokens})


async def _solve(gen, task: dict, agents: int, rounds: int, max_tokens: int, sem: asyncio.Semaphore) -> dict:
    from actors.protocol import deliberate
    from actors.specs import DeliberationRecord

    council = bench_council(agents=agents, rounds=rounds, max_tokens=max_tokens, role="MATH")
    async with sem:
        record = DeliberationRecord(request=_request(task, agents, rounds, max_tokens))
        await deliberate(record, council, gen, NullSink())
    result = record.result
    winner = result.proposals[0]
    answers = [parse_answer(p.content) for p in result.proposals]  # rank order
    counted = Counter(a for a in answers if a is not None)
    top = max(counted.values()) if counted else 0
    # Majority over the final proposals; a tie goes to the best-ranked of the tied answers.
    majority = next((a for a in answers if a is not None and counted[a] == top), None)
    return {"expr": task["expr"], "answer": task["answer"], "winner_answer": answers[0],
            "correct": answers[0] == task["answer"], "majority_answer": majority,
            "majority_correct": majority == task["answer"], "answers": answers,
            "winner_text": winner.content[:400], "completion_tokens": result.usage.completion_tokens}


def _summary(rows: list[dict], key: str) -> dict:
    k, n = sum(1 for r in rows if r[key]), len(rows)
    return {"correct": k, "tasks": n, "accuracy": round(k / n, 3) if n else None, "ci95": wilson(k, n),
            "parsed": sum(1 for r in rows if r["winner_answer"] is not None)}


async def measure(gen, n_tasks: int, max_tokens: int, seed: int, agents: int = 3, rounds: int = 1,
                  concurrency: int = 8) -> dict:
    """Every task once per side; deliberations run `concurrency` at a time (order does not change answers)."""
    tasks = make_tasks(n_tasks, seed)
    sem = asyncio.Semaphore(concurrency)
    out = {"tasks": n_tasks, "seed": seed, "max_tokens": max_tokens, "prompt": PROMPT,
           "council": {"agents": agents, "rounds": rounds}}
    for side, (n_agents, n_rounds) in (("single", (1, 0)), ("council", (agents, rounds))):
        t0 = time.perf_counter()
        rows = await asyncio.gather(*(_solve(gen, t, n_agents, n_rounds, max_tokens, sem) for t in tasks))
        wall = time.perf_counter() - t0
        out[side] = {"rows": rows, "wall_s": round(wall, 2), "winner": _summary(rows, "correct"),
                     "completion_tokens": sum(r["completion_tokens"] for r in rows)}
        if side == "council":
            out[side]["majority"] = _summary(rows, "majority_correct")
        print(f"quality {side}: {out[side]['winner']} in {wall:.0f}s", flush=True)
    return out


async def _standalone(n_tasks: int, max_tokens: int, seed: int) -> dict:
    return await on_bench_engine(lambda gen: measure(gen, n_tasks, max_tokens, seed))


def main() -> None:
    s = settings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=s["quality_tasks"])
    ap.add_argument("--max-tokens", type=int, default=s["quality_max_tokens"])
    ap.add_argument("--seed", type=int, default=s["quality_seed"])
    args = ap.parse_args()
    with machine_lock():
        out = asyncio.run(_standalone(args.tasks, args.max_tokens, args.seed))
    print(f"wrote {save_run('quality', {'quality': out})}")


if __name__ == "__main__":
    main()
