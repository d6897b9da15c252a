"""`make bench`: every benchmark, one command. Results in benchmarks/results/,
docs/benchmarks.md rewritten whole.

Holds the machine-wide lock (/tmp/councils-ray-tests.lock) for the whole run and runs the phases one
after another, each in its own process, so only one engine is ever loaded and nothing competes for
the cores:
  inprocess  one in-process vLLM engine: the propose-stage fan-out at two token budgets
  stack      the `make run` stack, a stock vLLM OpenAI server and a bare engine in the driver: the service path
             interleaved with its peers (short and long-context tasks), idle CPU, throughput, restore
  ray_floor  a bare two-node Ray cluster, nothing of ours: the idle floor the stack's idle CPU is read against
  latency    the `make run` stack: the default deliberation as shipped, over HTTP (issue 22's 25 s target)
  quality    one in-process vLLM engine: one agent vs self-consistency vs the council (docs/quality.md)
  faults     the `make run` stack: time from each fault's SIGKILL to the next successful deliberation
then `report` turns the raw runs into JSON, PNG plots and docs/benchmarks.md.

    python -m benchmarks [--phases inprocess stack] [--report-only]
    COUNCILS_BENCH_QUICK=1 python -m benchmarks    # tiny settings: tries the machinery, figures meaningless
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from . import report
from .common import ROOT, RUNS, git_state, load_run, machine_lock, save_run

PHASES = ["inprocess", "stack", "ray_floor", "latency", "quality", "faults"]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", nargs="+", choices=PHASES, default=PHASES)
    ap.add_argument("--report-only", action="store_true", help="only rebuild JSON, plots and docs/benchmarks.md from results/runs/")
    args = ap.parse_args()
    failed = []
    if not args.report_only:
        t0 = time.time()
        commit, dirty = git_state()  # what the run started on (its own result files make the tree dirty after)
        previous = load_run("suite") or {}
        phases_s = {k: v for k, v in previous.get("phases_s", {}).items() if k in PHASES and k not in args.phases}
        with machine_lock():  # the phases see COUNCILS_BENCH_LOCK_HELD=1 and run under this lock
            for phase in args.phases:
                print(f"=== {phase} ===", flush=True)
                started = time.time()
                rc = subprocess.run([sys.executable, "-m", f"benchmarks.{phase}"], cwd=ROOT).returncode
                phases_s[phase] = round(time.time() - started, 1)
                print(f"=== {phase}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {phases_s[phase]:.0f}s ===",
                      flush=True)
                if rc != 0:
                    failed.append(phase)
                    (RUNS / f"{phase}.json").unlink(missing_ok=True)  # never report a stale run as this one's
        save_run("suite", {"phases_s": phases_s, "total_s": round(sum(phases_s.values()), 1),
                           "wall_s": round(time.time() - t0, 1), "failed": failed,
                           "commit": commit + ("+" if dirty else "")})
    report.main(phases=None if args.report_only else [p for p in args.phases if p not in failed])
    if failed:
        print(f"FAILED phases: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
