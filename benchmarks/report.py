"""Summarise the phases' raw runs: one JSON and one PNG per benchmark under benchmarks/results/,
and docs/benchmarks.md (with the targets and whether each was met), a generated file written whole.

    python -m benchmarks.report       # after `python -m benchmarks` (or its phases) wrote results/runs/
"""

from __future__ import annotations

from collections import Counter

from . import bench_history
from .common import MODEL_LABEL, RESULTS, ROOT, load_run, machine, median, save
from .report_doc import DOC, TARGETS, markdown

FIG = {"figsize": (5.2, 3.0), "dpi": 80}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "axes.titlesize": 9})
    return plt


def _savefig(fig, name: str) -> str:
    path = RESULTS / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=FIG["dpi"])
    _plt().close(fig)
    return f"{name}.png"


def _bars(ax, labels, values, fmt="{:.2f}"):
    bars = ax.bar(labels, values, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2"][: len(values)])
    for b, v in zip(bars, values):
        ax.annotate(fmt.format(v), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom")
    ax.margins(y=0.15)
    return bars


def _tps(rows: list[dict]) -> float:
    return median([r["completion_tokens"] / r["wall_s"] for r in rows])


# ---------------------------------------------------------------- per benchmark


def fanout(inproc: dict) -> dict | None:
    budgets = (inproc or {}).get("fanout")
    if not budgets or "results" in budgets:  # absent, or a run from before the two budgets
        return None
    summary: dict = {"target": f"ratio for N=3 <= {TARGETS['fanout_n3']}", "budgets": {}}
    for tokens, f in budgets.items():
        n3 = f["results"].get("3", {}).get("ratio_to_n1")
        summary["budgets"][tokens] = {**f, "n3_ratio": n3, "met": None if n3 is None else n3 <= TARGETS["fanout_n3"]}
    save("propose_fanout", {"model": MODEL_LABEL, **summary})
    plt = _plt()
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.6 * len(budgets), 3.0), squeeze=False)
    for ax, (tokens, f) in zip(axes[0], budgets.items()):
        res = f["results"]
        ns = list(res)
        _bars(ax, [f"N={n}" for n in ns], [res[n]["median_wall_s"] for n in ns], "{:.2f} s")
        for i, n in enumerate(ns):
            ax.annotate(f"x{res[n]['ratio_to_n1']:.2f}", (i, res[n]["median_wall_s"] / 2), ha="center", color="white")
        ax.set_ylabel("propose stage, median wall s")
        ax.set_title(f"Propose fan-out, {tokens} tokens/agent")
    summary["png"] = _savefig(fig, "propose_fanout")
    return summary


def _paired(rows: dict[str, list[dict]], a: str, b: str) -> dict:
    """a's wall over b's, repetition by repetition (same task, back to back): median and min–max."""
    rs = [x["wall_s"] / y["wall_s"] for x, y in zip(rows[a], rows[b])]
    return {"median": median(rs), "min": round(min(rs), 3), "max": round(max(rs), 3), "n": len(rs)}


def _hit_rates(rows: list[dict]) -> dict[str, float]:
    """Prefix-cache hit rate by stage kind, over every repetition: cached prompt tokens / prompt tokens."""
    kinds: dict[str, list[int]] = {}
    for r in rows:
        for stage, t in r["stages"].items():
            k = kinds.setdefault(stage.split("-")[0], [0, 0])
            k[0] += t["cached_prompt_tokens"]
            k[1] += t["prompt_tokens"]
    return {kind: round(c / n, 3) for kind, (c, n) in kinds.items() if n}


def _path_table(rows: dict[str, list[dict]]) -> dict:
    out = {}
    for name, rs in rows.items():
        walls = [r["wall_s"] for r in rs]
        out[name] = {"median_wall_s": median(walls), "min_s": min(walls), "max_s": max(walls),
                     "tokens_per_s": _tps(rs), "median_completion_tokens": median([r["completion_tokens"] for r in rs]),
                     "cache_hit_by_stage": _hit_rates(rs)}
        if name != "service":
            out[name]["service_over_this"] = _paired(rows, "service", name)
        n = len(rs)
        out[name]["mean_per_deliberation_s"] = {
            key: round(sum(t[key] for r in rs for t in r["stages"].values()) / n, 3)
            for key in ("generation_s", "verification_s", "checkpoint_s")}
        out[name]["mean_per_deliberation_s"]["outside_stages"] = round(
            sum(r["wall_s"] - sum(t["seconds"] for t in r["stages"].values()) for r in rs) / n, 3)
        if all("propose" in r["stages"] for r in rs):
            out[name]["median_propose_s"] = median([r["stages"]["propose"]["seconds"] for r in rs])
    return out


def service_paths(stack: dict) -> dict | None:
    p = ((stack or {}).get("paths") or {}).get("short")
    if not p:
        return None
    table = _path_table(p["rows"])
    vs_peer = table["concurrent"]["service_over_this"]["median"]
    vs_orig = table["original"]["service_over_this"]["median"]
    vs_bare = table["bare"]["service_over_this"]["median"]
    vs_actor = table["engine_actor"]["service_over_this"]["median"]
    summary = {"paths": table, "rows": p["rows"], "order": p["order"], "shape": p.get("shape"),
               "service_vs_peer": vs_peer, "service_vs_peer_met": vs_peer <= TARGETS["service_vs_peer"],
               "service_vs_original": vs_orig, "service_vs_original_met": vs_orig <= TARGETS["council_vs_original"],
               "overhead_vs_bare": round(vs_bare - 1, 3), "overhead_vs_engine_actor": round(vs_actor - 1, 3),
               "overhead_vs_bare_met": vs_bare - 1 <= TARGETS["serve_overhead"],
               "overhead_vs_engine_actor_met": vs_actor - 1 <= TARGETS["serve_overhead"],
               "median_council_duration_s": median([r["council_duration_s"] for r in p["rows"]["service"]]),
               "peer_server_command": stack.get("peer_server_command")}
    save("service_paths", {"model": MODEL_LABEL, **summary})
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    names = list(table)
    _bars(ax, ["service", "engine\nactor", "bare\nengine", "concurrent\nHTTP", "original"][: len(names)],
          [table[n]["median_wall_s"] for n in names], "{:.1f} s")
    for i, n in enumerate(names):
        ax.plot([i, i], [table[n]["min_s"], table[n]["max_s"]], color="black", linewidth=1)
    ax.set_ylabel("deliberation wall s (median, min–max)")
    ax.set_title("The same deliberation on five paths, interleaved")
    summary["png"] = _savefig(fig, "service_paths")
    return summary


def long_context(stack: dict) -> dict | None:
    p = ((stack or {}).get("paths") or {}).get("long")
    if not p:
        return None
    table = _path_table(p["rows"])
    hits = table["service"]["cache_hit_by_stage"]
    later = [v for k, v in hits.items() if k in ("critique", "revise")]
    summary = {"paths": table, "rows": p["rows"], "context_tokens": p["context_tokens"], "files": p["files"],
               "shape": p.get("shape"),
               "service_vs_peer": table["concurrent"]["service_over_this"]["median"],
               "critique_revise_hit_rate": min(later) if later else None}
    summary["hit_rate_met"] = None if not later else min(later) >= TARGETS["critique_revise_cache_hit"]
    save("long_context", {"model": MODEL_LABEL, **summary})
    return summary


def throughput(stack: dict) -> dict | None:
    t = ((stack or {}).get("throughput") or {}).get("results")
    if not t:
        return None
    run = stack["throughput"]
    summary = {"by_concurrency": t, "councils": run["councils"], "shape": run.get("shape"),
               "matched": run.get("baseline") == "matched", "saturation": saturation(t)}
    save("throughput", {"model": MODEL_LABEL, **summary})
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIG["figsize"])
    cs = list(t)
    x = range(len(cs))
    w = 0.38
    ax.bar([i - w / 2 for i in x], [t[c]["tokens_per_s"] for c in cs], w, label="deliberations (HTTP, 5 councils)")
    ax.bar([i + w / 2 for i in x], [t[c]["engine_tokens_per_s"] for c in cs], w, label="engine, raw generate calls")
    for i, c in enumerate(cs):
        ax.annotate(f"{t[c]['deliberations_per_min']:.1f}/min\nx{t[c]['ratio_to_engine']:.2f}",
                    (i - w / 2, t[c]["tokens_per_s"]), ha="center", va="bottom", fontsize=7)
    calls = "{:g} in flight" if summary["matched"] else "{} calls"
    ax.set_xticks(list(x), [f"{c} deliberations\n({calls.format(t[c]['engine_concurrent_calls'])})" for c in cs])
    ax.set_ylabel("generated tokens / s (median)")
    ax.set_title("Throughput: deliberations vs the engine alone")
    ax.legend(fontsize=7, loc="upper left")
    ax.margins(y=0.25)
    summary["png"] = _savefig(fig, "throughput")
    return summary


def saturation(by_concurrency: dict) -> dict:
    """The most deliberations per hour of any concurrency measured, and whether that was the largest one tried
    (then the service may not be saturated yet)."""
    per_hour = {c: r.get("deliberations_per_hour", 60 * r["deliberations_per_min"]) for c, r in by_concurrency.items()}
    best = max(per_hour, key=per_hour.get)
    return {"concurrency": best, "deliberations_per_hour": round(per_hour[best], 1),
            "largest_tried": int(best) == max(map(int, per_hour))}


def restore(stack: dict) -> dict | None:
    r = (stack or {}).get("restore")
    if not r:
        return None
    summary = dict(r)
    acts = r["actors"]
    ns = sorted(acts, key=int)
    if len(ns) >= 2:
        lo, hi = ns[0], ns[-1]
        per = (acts[hi]["median_s"] - acts[lo]["median_s"]) / (int(hi) - int(lo))
        summary["marginal_s_per_actor"] = round(per, 3)
    save("restore", summary)
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.0, 3.0))
    specs = r["spec_load"]
    _bars(ax1, [f"{n} specs" for n in specs], [1000 * specs[n]["median_s"] for n in specs], "{:.1f} ms")
    ax1.set_title("load council specs from Valkey")
    _bars(ax2, [f"{n} councils" for n in ns], [acts[n]["median_s"] for n in ns], "{:.2f} s")
    ax2.set_title("restore council actors (get-or-create + info)")
    summary["png"] = _savefig(fig, "restore")
    return summary


def recovery(faults: dict | None) -> dict | None:
    """Time from each SIGKILL to the next successful deliberation over HTTP (benchmarks/faults.py)."""
    if not faults or not faults.get("faults"):
        return None
    summary = {"request": faults["request"], "stack_ready_s": faults.get("stack_ready_s"), "run_on": faults["machine"],
               "note": faults.get("note", ""), "shape": faults.get("shape"),
               "faults": {k: {x: v[x] for x in ("median_s", "min_s", "max_s", "n", "healthy_deliberation_s")}
                          for k, v in faults["faults"].items()}}
    save("faults", {"model": MODEL_LABEL, **summary})
    return summary


def latency(run: dict | None) -> dict | None:
    """The default deliberation (benchmarks/latency.py): median wall with its spread, each stage's median seconds."""
    if not run or not run.get("rows"):
        return None
    rows = run["rows"]
    walls = [r["wall_s"] for r in rows]
    stages: dict[str, list[float]] = {}
    for r in rows:
        for stage, seconds, *_ in r["stages"]:
            stages.setdefault(stage, []).append(seconds)
    summary = {"task": run["task"], "role": run["role"], "n": len(rows), "median_s": median(walls),
               "min_s": min(walls), "max_s": max(walls), "target_s": run["target_s"],
               "met": median(walls) <= run["target_s"], "shape": run.get("shape"), "date": run["machine"]["date"],
               "stages": {k: {"median_s": median(v), "ran": len(v)} for k, v in stages.items()},
               "decided_by": dict(Counter(r["decided_by"] for r in rows)),
               "skipped": dict(Counter(s for r in rows for s in r["stages_skipped"]))}
    save("latency", summary)
    return summary


def ray_floor(run: dict | None) -> dict | None:
    """A bare two-node Ray cluster's idle CPU (benchmarks/ray_floor.py): the floor the idle stack is read against."""
    if not run or not run.get("idle_cpu"):
        return None
    return {**run["idle_cpu"], "date": run["machine"]["date"], "cluster": run["cluster"]}


def main(phases: list[str] | None = None) -> dict:
    """Rebuild the JSON summaries, plots and docs/benchmarks.md from the raw runs; `phases`: the phases this run
    just ran, whose Targets rows are appended to the history (None: a re-render, nothing appended)."""
    inproc, stack = load_run("inprocess"), load_run("stack")
    suite = load_run("suite")
    summaries = {"fanout": fanout(inproc), "service_paths": service_paths(stack), "long_context": long_context(stack),
                 "throughput": throughput(stack),
                 "restore": restore(stack), "recovery": recovery(load_run("faults")),
                 "latency": latency(load_run("latency")), "ray_floor": ray_floor(load_run("ray_floor")),
                 "quality_shape": (load_run("quality") or {}).get("shape")}
    page = markdown({k: v for k, v in summaries.items() if v}, inproc, stack, suite).strip()
    entries = (bench_history.append(machine()["date"], (suite or {}).get("commit", "unknown"), page, phases)
               if phases else bench_history.load())
    DOC.write_text(page + "\n\n" + "\n".join(bench_history.markdown(entries)).strip() + "\n")
    print(f"wrote {DOC.relative_to(ROOT)} and {', '.join(sorted(p.name for p in RESULTS.glob('*.png')))}")
    return summaries


if __name__ == "__main__":
    main()
