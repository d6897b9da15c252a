"""Deliberation quality (issue 22): one agent, self-consistency at equal total tokens, and the council as `make run`
ships it, on three task families of two task splits, graded by hidden tests.

    python -m benchmarks.quality                    # both splits, held-out first (what `make bench` runs)
    python -m benchmarks.quality --split heldout    # the held-out split only: the headline figures
    python -m benchmarks.quality --limit 3 --reps 1 # a trial of the machinery (still appended to the history)

Builds its own engine (`make run`'s spec, in-process) and runs every arm with the real protocol and verifiers:
quality_arms.py (families, arms, picks, grading), quality_stats.py (Wilson, exact McNemar, random-pick
expectation, the equal-token budget), quality_figures.py (figures, targets, the history), quality_page.py
(docs/quality.md and README.md's line). Each run of a split is saved whole to benchmarks/results/quality_<split>.json,
its headline figures are appended to benchmarks/results/quality_history.json, and the page is written from the
latest run of each split and the whole history.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from .common import (MODEL_LABEL, RESULTS, ROOT, git_state, machine, machine_lock, on_bench_engine, save_run,
                     settings)
from .quality_arms import ARMS, EXACT_ROLE, Grader, Shape, attempt, council_for, shipped_shape, task_inputs
from .quality_figures import append_history, figures, history_entry, load_history
from .quality_page import markdown, readme_claim, update_readme
from .quality_stats import samples_within
from .quality_tasks import SPLITS, load_split

DOC = ROOT / "docs" / "quality.md"
README = ROOT / "README.md"
HISTORY = RESULTS / "quality_history.json"
SAMPLE_CAP = 64  # a council's agent ceiling (actors/models/limits.py CEILING_AGENTS)


def family_tasks(split: str, limit: int | None = None) -> dict[str, list[dict]]:
    tasks = load_split(split)
    python, exact = tasks["python"][:limit], tasks["exact"][:limit]
    return {"python_tests": python, "python_notests": python, "exact": exact}


async def measure(gen, *, split: str, tasks: dict[str, list[dict]], shape: Shape, reps: int, concurrency: int = 8,
                  sample_cap: int = SAMPLE_CAP, verifier=None) -> dict:
    """`reps` repetitions; in each, one agent and the council on every task of every family, then self-consistency
    with as many samples per task as fit in that task's council tokens (at one agent's tokens per sample)."""
    from actors.verification import LocalVerifier

    commit, dirty = git_state()  # what the run started on
    verifier = verifier or LocalVerifier()
    grader = Grader()
    sem = asyncio.Semaphore(concurrency)
    rows: list[dict] = []
    samples: dict[str, list[int]] = {f: [] for f in tasks}

    async def arm(name: str, rep: int, n_for=lambda family, task: 1) -> list[dict]:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(attempt(gen, verifier, grader, name, family, task,
                                              council_for(name, family, shape, rep, n_for(family, task)), rep, sem)
                                      for family, ts in tasks.items() for task in ts))
        print(f"quality {split} rep {rep} {name}: {sum(r['correct'] for r in done)}/{len(done)} passed in "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
        return list(done)

    for rep in range(reps):
        single = await arm("single", rep)
        council = await arm("council", rep)
        # Equal tokens: each task's council total, in samples of one agent's total on the same task.
        one = {(r["family"], r["id"]): r["tokens"] for r in single}
        n = {(r["family"], r["id"]): samples_within(r["tokens"], one[r["family"], r["id"]], sample_cap) for r in council}
        for family, ts in tasks.items():
            samples[family] += [n[family, t["id"]] for t in ts]
        rows += single + council + await arm("self_consistency", rep, lambda family, task, n=n: n[family, task["id"]])
    return {"split": split, "date": time.strftime("%Y-%m-%d"), "commit": commit, "dirty": dirty,
            "machine": machine(), "model": MODEL_LABEL, "reps": reps, "shape": shape.as_dict(),
            "exact_role": EXACT_ROLE, "arms": list(ARMS), "concurrency": concurrency, "sample_cap": sample_cap,
            "tasks": {f: len(ts) for f, ts in tasks.items()},
            "task_inputs": sum(1 for t in tasks.get("python_notests", []) if task_inputs(t)),
            "self_consistency_samples": samples, "rows": rows}


def write_outputs(run: dict, *, results: Path = RESULTS, history: Path = HISTORY, page: Path = DOC,
                  readme: Path | None = README) -> dict:
    """Save the run whole, append its headline figures to the history, rewrite the page (and README's line)
    from the latest run of each split."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"quality_{run['split']}.json").write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n")
    entries = append_history(history, history_entry(run, figures(run)))
    return write_page(results=results, history=history, page=page, readme=readme, entries=entries)


def write_page(*, results: Path = RESULTS, history: Path = HISTORY, page: Path = DOC, readme: Path | None = README,
               entries: list[dict] | None = None) -> dict:
    runs = {}
    for split in SPLITS:
        path = results / f"quality_{split}.json"
        runs[split] = json.loads(path.read_text()) if path.exists() else None
    page.write_text(markdown(runs, load_history(history) if entries is None else entries))
    if readme is not None:
        update_readme(readme, readme_claim(runs.get("heldout")))
    return runs


def main() -> None:
    s = settings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", nargs="+", default=["heldout", "dev"], choices=SPLITS,
                    help="task splits to run, in order (default: heldout dev)")
    ap.add_argument("--limit", type=int, default=s["quality_limit"], help="first N tasks of each family")
    ap.add_argument("--reps", type=int, default=s["quality_reps"], help="repetitions (seeds offset per repetition)")
    ap.add_argument("--concurrency", type=int, default=8, help="tasks in flight per arm")
    ap.add_argument("--max-tokens", type=int, default=s["quality_max_tokens"],
                    help="override the shipped max_tokens (the council is then no longer as shipped; recorded)")
    ap.add_argument("--page-only", action="store_true", help="only rewrite docs/quality.md and README's line")
    args = ap.parse_args()
    if args.page_only:
        write_page()
        print(f"wrote {DOC}")
        return
    shape = shipped_shape()
    if args.max_tokens:
        shape = Shape(**{**shape.as_dict(), "max_tokens": args.max_tokens,
                         "source": shape.source + f" (max_tokens overridden: {args.max_tokens})"})
    # Wall times are figures here (a target compares them): hold the machine-wide lock so no test cluster or other
    # benchmark shares the cores (under `make bench` the suite holds it already).
    with machine_lock():
        for split in args.split:
            t0 = time.time()
            tasks = family_tasks(split, args.limit)
            run = asyncio.run(on_bench_engine(lambda gen, split=split, tasks=tasks: measure(
                gen, split=split, tasks=tasks, shape=shape, reps=args.reps, concurrency=args.concurrency)))
            run["wall_s"] = round(time.time() - t0, 1)
            run["limit"] = args.limit
            save_run("quality", {k: v for k, v in run.items() if k != "rows"})
            write_outputs(run)
            print(f"quality {split}: wrote {DOC}, {HISTORY}", flush=True)


if __name__ == "__main__":
    main()
