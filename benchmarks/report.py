"""Summarise the phases' raw runs: one JSON and one PNG per benchmark under benchmarks/results/,
and docs/benchmarks.md (with the targets and whether each was met), a generated file written whole.

    python -m benchmarks.report       # after `python -m benchmarks` (or its phases) wrote results/runs/
"""

from __future__ import annotations

from .common import MODEL_LABEL, RESULTS, ROOT, load_run, median, ratio, save

DOC = ROOT / "docs" / "benchmarks.md"
FIG = {"figsize": (5.2, 3.0), "dpi": 80}
TARGETS = {"fanout_n3": 1.5, "serve_overhead": 0.10, "council_vs_original": 0.6, "service_vs_peer": 1.0,
           "critique_revise_cache_hit": 0.6, "idle_cpu_pct": 15.0}
PATH_LABELS = {"service": "**the service** (HTTP → Serve → council actor → engine actor)",
               "engine_actor": "the protocol in the driver, on the stack's engine actor (no Serve, no council actor)",
               "bare": "the protocol in the driver, on a bare engine (no Ray)",
               "concurrent": "concurrent HTTP to a stock vLLM server (the simplest peer)",
               "original": "original: sequential HTTP to the same server"}


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


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


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


def _walls(rows: list[dict]) -> list[float]:
    return [r["wall_s"] for r in rows]


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
        walls = _walls(rs)
        out[name] = {"median_wall_s": median(walls), "min_s": min(walls), "max_s": max(walls),
                     "tokens_per_s": _tps(rs), "median_completion_tokens": median([r["completion_tokens"] for r in rs]),
                     "cache_hit_by_stage": _hit_rates(rs)}
        if name != "service":
            out[name]["service_over_this"] = _paired(rows, "service", name)
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
    summary = {"paths": table, "rows": p["rows"], "order": p["order"],
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
               "service_vs_peer": table["concurrent"]["service_over_this"]["median"],
               "critique_revise_hit_rate": min(later) if later else None}
    summary["hit_rate_met"] = None if not later else min(later) >= TARGETS["critique_revise_cache_hit"]
    save("long_context", {"model": MODEL_LABEL, **summary})
    return summary


def throughput(stack: dict) -> dict | None:
    t = ((stack or {}).get("throughput") or {}).get("results")
    if not t:
        return None
    summary = {"by_concurrency": t, "councils": stack["throughput"]["councils"]}
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
    ax.set_xticks(list(x), [f"{c} deliberations\n({t[c]['engine_concurrent_calls']} calls)" for c in cs])
    ax.set_ylabel("generated tokens / s (median)")
    ax.set_title("Throughput: deliberations vs the engine alone")
    ax.legend(fontsize=7, loc="upper left")
    ax.margins(y=0.25)
    summary["png"] = _savefig(fig, "throughput")
    return summary


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


# ---------------------------------------------------------------- docs/benchmarks.md


FAULT_LABELS = {
    "council": ("a council actor's worker process (council-DEV)", "Ray restarts the actor; it reads its spec and records from Valkey"),
    "ingress": ("the Ingress's Serve replica process", "Serve starts a new replica"),
    "gcs": ("the head's `gcs_server`", "the launcher's supervisor restarts the head; the worker node keeps councils, engine and ingress"),
    "head": ("the head's `gcs_server` and `raylet` together", "as for the GCS alone (issue 13's target: ≤ 20 s)"),
    "valkey": ("`valkey-server`", "the supervisor restarts it from its AOF; Ray's GCS exits on the outage and the head restarts too"),
    "engine": ("the vLLM engine-core process", "the engine actor starts a new engine core: the model loads again"),
}


def recovery(faults: dict | None) -> dict | None:
    """Time from each SIGKILL to the next successful deliberation over HTTP (benchmarks/faults.py)."""
    if not faults or not faults.get("faults"):
        return None
    summary = {"request": faults["request"], "stack_ready_s": faults.get("stack_ready_s"), "run_on": faults["machine"],
               "note": faults.get("note", ""),
               "faults": {k: {x: v[x] for x in ("median_s", "min_s", "max_s", "n", "healthy_deliberation_s")}
                          for k, v in faults["faults"].items()}}
    save("faults", {"model": MODEL_LABEL, **summary})
    return summary


def recovery_markdown(r: dict) -> list[str]:
    req, m = r["request"], r["run_on"]
    out = ["## 8. Time to recover", "",
           "On the `make run` stack (`python -m benchmarks.faults`: the launcher with its supervisor, a head and a "
           "worker node, the real vLLM engine), each process below is SIGKILLed with the stack healthy, then "
           f"`POST /v1/deliberations?wait=true` ({req['role']}, rounds {req['rounds']}, {req['max_tokens']} tokens) "
           "is sent again and again until one answers 200. Seconds from the kill to that answer, median of "
           f"{max(v['n'] for v in r['faults'].values())} kills (min–max); a healthy stack answers the same request "
           f"in the last column's time. Run on {m['cpu']}, {m['cores']} cores, on {m['date']}"
           + (f"; {r['note']}." if r.get("note") else "."), "",
           "| SIGKILL of | what brings it back | to the next deliberation, median (min–max) | healthy |",
           "|---|---|---|---|"]
    for fault, v in r["faults"].items():
        what, how = FAULT_LABELS.get(fault, (fault, ""))
        out.append(f"| {what} | {how} | **{v['median_s']:.1f} s** ({v['min_s']:.1f}–{v['max_s']:.1f}) | "
                   f"{v['healthy_deliberation_s']:.1f} s |")
    out += ["", "What each kill must not lose (every accepted deliberation completes, once) is tested, not "
            "benchmarked: [operations.md, what survives what](operations.md#what-survives-what).", ""]
    return out


def _idle_markdown(idle: dict) -> list[str]:
    kinds = sorted(idle["by_kind"].items(), key=lambda kv: -kv[1]["cpu_pct_of_one_core"])
    total = idle["total_cpu_pct_of_one_core"]
    out = ["## 4. Idle CPU", "",
           f"The stack's own processes (the launcher's tree: Valkey, both Ray nodes, Serve, the council actors, the "
           f"engine) while no deliberation runs, {idle.get('settle_s', 15):.0f} s after the last answer, over "
           f"{idle['seconds']:.0f} s, as % of one core (`benchmarks/stack.py idle_cpu`). Target ≤ "
           f"{TARGETS['idle_cpu_pct']:.0f} %: **{total:.1f} %**, {_met(total <= TARGETS['idle_cpu_pct'])}.", "",
           "| component | % of one core | processes | nice |", "|---|---|---|---|"]
    for k, v in kinds:
        out.append(f"| {k} | {v['cpu_pct_of_one_core']:.1f} | {v['processes']} | {', '.join(map(str, v['nice']))} |")
    out += ["", "The engine's model threads are bound to both cores, so on this machine that load competes with "
            "decoding; on a GPU node the model does not run on the cores the control plane uses.", ""]
    return out


def _paths_markdown(sp: dict, png: str) -> list[str]:
    t = sp["paths"]
    out = ["## 2. The service path against its peers", "",
           "The benchmark council's whole deliberation five ways, **interleaved**: repetition i runs every path on "
           "task i, back to back, in an order rotated by i (`benchmarks/paths.py`), so every path sees the same "
           "tasks, background load and drift. Same protocol, council spec, requests, max_tokens, model and settings "
           "on every path; the two engines in the driver and the peer's server are loaded beside the `make run` stack "
           "for the whole comparison.", "",
           "| path | median wall (min–max) | the service's wall over this path's, same task: median (min–max) | "
           "generated tokens/s |", "|---|---|---|---|"]
    for name, r in t.items():
        paired = r.get("service_over_this")
        out.append(f"| {PATH_LABELS.get(name, name)} | {r['median_wall_s']:.2f} s ({r['min_s']:.2f}–{r['max_s']:.2f}) | "
                   + (f"{paired['median']:.2f} × ({paired['min']:.2f}–{paired['max']:.2f})" if paired else "—")
                   + f" | {r['tokens_per_s']:.1f} |")
    out += ["", f"- **Against the simplest peer** (concurrent HTTP): {sp['service_vs_peer']:.2f} × its wall time; target "
            f"≤ 1.0 ×: {_met(sp['service_vs_peer_met'])}.",
            f"- **Against the original design**: {sp['service_vs_original']:.2f} ×; target ≤ 0.6 ×: "
            f"{_met(sp['service_vs_original_met'])}.",
            f"- **Serve overhead, both definitions**: {sp['overhead_vs_bare']:+.1%} against the bare engine, "
            f"{sp['overhead_vs_engine_actor']:+.1%} against the stack's engine actor; target ≤ 10 %: "
            f"{_met(sp['overhead_vs_bare_met'])} against the bare engine, {_met(sp['overhead_vs_engine_actor_met'])} "
            "against the engine actor.",
            f"- Time inside the council actor (the record's `duration_s`): {sp['median_council_duration_s']:.2f} s of "
            f"{t['service']['median_wall_s']:.2f} s; the rest is HTTP, Serve and the ingress's wait.", "",
            f"![paths]({png}{sp['png']})", ""]
    return out


def _long_markdown(lc: dict) -> list[str]:
    t = lc["paths"]
    kinds = ["propose", "critique", "revise", "rank"]
    out = ["## 3. Long context: a source file to review", "",
           f"The same council on tasks that carry a {lc['context_tokens']}-token source file of this repository "
           f"(`constraints.context`: {', '.join(f'`{f}`' for f in lc['files'])}), interleaved the same way on three "
           "paths. The context sits in the brief every prompt of a deliberation starts with, so after the first "
           "prefill the engine's prefix cache holds it. Hit rate: the prompt tokens each stage's requests found in "
           "the engine's prefix cache (vLLM's own per-request `num_cached_tokens`, recorded in each stage's "
           "`timings`) over their prompt tokens, all repetitions together.", "",
           "| path | deliberation, median (min–max) | service over this path | propose stage, median | "
           + " | ".join(f"hit rate: {k}" for k in kinds) + " |", "|---|---|---|---|" + "---|" * len(kinds)]
    for name, r in t.items():
        paired = r.get("service_over_this")
        hits = r["cache_hit_by_stage"]
        out.append(f"| {PATH_LABELS.get(name, name)} | {r['median_wall_s']:.2f} s ({r['min_s']:.2f}–{r['max_s']:.2f}) | "
                   + (f"{paired['median']:.2f} × ({paired['min']:.2f}–{paired['max']:.2f})" if paired else "—")
                   + f" | {r.get('median_propose_s', float('nan')):.2f} s | "
                   + " | ".join(f"{hits[k]:.0%}" if k in hits else "—" for k in kinds) + " |")
    rate = lc["critique_revise_hit_rate"]
    out += ["", "Target: a hit rate ≥ 60 % in the critique and revise stages (the service): "
            + (f"lowest of the two {rate:.0%}, {_met(lc['hit_rate_met'])}." if rate is not None else "not measured.")
            + " The propose stage's three requests arrive together and are prefilled in the same step, before any of "
            "them has filled a cache block, so they find little in the cache; every later stage reuses the brief.",
            f"Against the simplest peer on long tasks: {lc['service_vs_peer']:.2f} ×.", ""]
    return out


def markdown(s: dict, inproc: dict, stack: dict, suite: dict | None) -> str:
    from .common import machine, settings

    m = (stack or inproc or {}).get("machine") or machine()
    cfg = (stack or inproc or {}).get("settings") or settings()
    eng = (inproc or {}).get("engine") or {}
    png = "../benchmarks/results/"  # relative to docs/
    out = ["# Benchmarks", "", "Generated by `make bench` (`python -m benchmarks.report`); do not edit by hand.", ""]
    out.append(
        "`make bench` (`python -m benchmarks`) runs every benchmark below in one go under the machine-wide lock "
        "`/tmp/councils-ray-tests.lock` (never beside a test cluster), writes one JSON per benchmark and its plot "
        "to `benchmarks/results/` (raw repetitions in `benchmarks/results/runs/`) and this page.")
    if suite:
        out.append(f"The last run took **{suite['total_s'] / 60:.1f} min** "
                   f"({', '.join(f'{k} {v:.0f} s' for k, v in suite['phases_s'].items())}).")
    out += ["",
            f"**Machine**: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU; Python {m['python']}; "
            f"run on {m['date']}.  ",
            f"**Model**: {MODEL_LABEL}; max_model_len {eng.get('max_model_len', 2048)}, "
            f"max_num_seqs {eng.get('max_num_seqs', 64)}, `VLLM_CPU_KVCACHE_SPACE=1`, the model's threads bound to "
            f"every core. Each side of a comparison runs in the same `make bench` run, on the same model and "
            f"settings, with the same council spec, prompts and max_tokens.  ",
            f"**Settings**: the benchmark council is {cfg['agents']} agents, {cfg['rounds']} peer-review round "
            f"(propose, critique, revise, rank, score: up to 4 batched generation stages), **{cfg['max_tokens']} tokens "
            f"per generation**, agents unseeded (see below); {cfg['overhead_reps']} timed repetitions of the "
            f"deliberation on each path ({cfg.get('long_context_reps', 0)} for long context), after one untimed "
            f"warm-up each, repetition i on task i of a fixed list of engineering tasks, the same list on every path; "
            f"figures are medians with their min–max. Small figures on purpose: the whole suite must fit in 30 "
            f"minutes on 2 cores.", ""]

    f, sp, lc = s.get("fanout"), s.get("service_paths"), s.get("long_context")
    idle = (stack or {}).get("idle_cpu")
    out += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    for tokens, b in (f or {}).get("budgets", {}).items():
        out.append(f"| propose fan-out at {tokens} tokens, N=3 ≤ 1.5 × N=1 | {b['n3_ratio']:.2f} × | {_met(b['met'])} |")
    if sp:
        out += [f"| the service ≤ 1.0 × concurrent HTTP (the simplest peer) | {sp['service_vs_peer']:.2f} × | "
                f"{_met(sp['service_vs_peer_met'])} |",
                f"| the service ≤ 0.6 × the original design | {sp['service_vs_original']:.2f} × | "
                f"{_met(sp['service_vs_original_met'])} |",
                f"| Serve overhead ≤ 10 % against a bare engine | {sp['overhead_vs_bare']:+.1%} | "
                f"{_met(sp['overhead_vs_bare_met'])} |",
                f"| Serve overhead ≤ 10 % against the engine actor | {sp['overhead_vs_engine_actor']:+.1%} | "
                f"{_met(sp['overhead_vs_engine_actor_met'])} |"]
    if lc and lc["critique_revise_hit_rate"] is not None:
        out.append(f"| long context: prefix-cache hit rate ≥ 60 % in critique and revise | "
                   f"{lc['critique_revise_hit_rate']:.0%} | {_met(lc['hit_rate_met'])} |")
    if idle:
        total = idle["total_cpu_pct_of_one_core"]
        out.append(f"| idle stack ≤ 15 % of one core | {total:.1f} % | {_met(total <= TARGETS['idle_cpu_pct'])} |")
    out.append("")

    if f:
        out += ["## 1. Propose fan-out", "",
                "The propose stage of the real protocol (`actors/protocol.py`) for N agents on one in-process "
                "engine, at the deliberations' own budget and at a longer one (`benchmarks/propose_fanout.py`). "
                "The agents' proposals are concurrent requests on one `AsyncLLM`, which batches them.", "",
                "| tokens per agent | agents | wall time, median | tokens generated | ratio to N=1 |",
                "|---|---|---|---|---|"]
        for tokens, b in f["budgets"].items():
            for n, r in b["results"].items():
                out.append(f"| {tokens} | {n} | {r['median_wall_s']:.2f} s (of {b['reps']}) | "
                           f"{r['median_completion_tokens']:.0f} | {r['ratio_to_n1']:.2f} |")
        out += ["", f"![fan-out]({png}{f['png']})", ""]
    if sp:
        out += _paths_markdown(sp, png)
    if lc:
        out += _long_markdown(lc)
    if idle:
        out += _idle_markdown(idle)

    r = s.get("restore")
    if r:
        sl, ac, ct = r["spec_load"], r["actors"], r["constructor"]
        big = max(sl, key=int)
        out += ["## 5. Restore", "",
                "What the ingress does on start (`Ingress._reconcile_once`): read every council spec from Valkey "
                "(`Store.list_councils`), then get-or-create every council actor (`ActorRegistry.council`: "
                "detached, named, `num_cpus=0`) and call its `info()`; each council's constructor reads its spec, "
                "its unfinished deliberations and the live settings from Valkey. Engines are not involved "
                "(councils look them up lazily), so engine load is excluded. Measured on the `make run` stack's "
                "Ray cluster and Valkey, with the specs under fresh key prefixes, actors killed between repetitions.",
                "", "| what | councils | median |", "|---|---|---|"]
        for n, v in sl.items():
            out.append(f"| load the specs from Valkey (`list_councils`) | {n} | {1000 * v['median_s']:.1f} ms |")
        for n, v in ct.items():
            out.append(f"| every council's constructor (Valkey reads), in one process, no Ray | {n} | "
                       f"{v['total_s']:.2f} s ({v['per_council_ms']:.1f} ms each) |")
        for n, v in ac.items():
            out.append(f"| **restore the council actors** (get-or-create + `info()`) | {n} | **{v['median_s']:.2f} s** |")
        out.append("")
        per = r.get("marginal_s_per_actor")
        rss = max(v["rss_mib_per_actor"] for v in ac.values())
        out.append(
            f"**1000 councils were not restored as actors**: every council actor is its own Ray worker process "
            f"(~{rss:.0f} MiB resident each here), so 1000 would need ~{rss * 1000 / 1024:.0f} GiB, beyond this "
            f"machine's 24 GiB, and Ray starts only a few worker processes at once (`worker_maximum_startup_concurrency`, "
            f"by default tied to the node's CPU count). What was measured "
            f"instead: the Valkey side of a {big}-council restore (the specs: {1000 * sl[big]['median_s']:.0f} ms; "
            f"each constructor's reads: {ct[big]['per_council_ms']:.1f} ms), and actor restores of "
            f"{' and '.join(ac)} councils"
            + (f", whose difference gives {per:.2f} s per additional council actor on 2 cores: the restore "
               f"time is the Ray worker start-up, not Valkey" if per is not None else "")
            + (f" (extrapolated, not measured: ~{per * 1000 / 60:.0f} min for 1000 on this machine if memory "
               "allowed)" if per is not None else "")
            + ". Restoring thousands of councils would need a different actor layout (one actor hosting many "
              "councils) rather than a faster Valkey.")
        out += ["", f"![restore]({png}{r['png']})", ""]

    t = s.get("throughput")
    if t:
        tt = t["by_concurrency"]
        out += ["## 6. Throughput", "",
                "Concurrent deliberations (`POST /v1/deliberations?wait=true`, all sent at once, spread round-robin "
                "over the five default councils DEV, QA, ARCHITECT, DEVOPS, DATA; each 3 agents, 1 round, "
                f"{cfg['max_tokens']} tokens per generation), on the `make run` stack; median over waves "
                f"({', '.join(f'{n} waves of {c}' for c, n in cfg['throughput_reps'].items())}"
                + ("; the median of 2 is their mean). " if 2 in cfg["throughput_reps"].values() else "). ")
                + "Against: the engine's own throughput at the same concurrency — the same number of concurrent "
                "raw `generate` calls the deliberations keep in flight (3 per deliberation), sent by a driver "
                "straight to the engine actor, with prompts of the same kinds (propose, critique, revise) taken "
                "from the deliberations of the same wave, as many waves.", "",
                "| concurrent deliberations | deliberations / min | generated tokens/s | engine alone, tokens/s "
                "(concurrent calls) | ratio to engine |", "|---|---|---|---|---|"]
        for c, r in tt.items():
            out.append(f"| {c} | {r['deliberations_per_min']:.1f} | {r['tokens_per_s']:.1f} | "
                       f"{r['engine_tokens_per_s']:.1f} ({r['engine_concurrent_calls']}) | {r['ratio_to_engine']:.2f} |")
        out += ["", "Both sides send their calls in waves: a deliberation's stages are barriers (every critique "
                "waits for every proposal) and a raw wave ends with its slowest call. The ratio is the share of the "
                "engine's own throughput at that concurrency that deliberations through the whole service (HTTP, "
                "Serve, council actors, Valkey checkpoints) turn into output"
                + ("; above 1, the deliberations kept the engine busier than a raw wave did (stages of different "
                   "deliberations overlap, while a raw wave drains down to its slowest call)." if
                   any(r["ratio_to_engine"] > 1 for r in tt.values()) else "."), "",
                f"![throughput]({png}{t['png']})", ""]

    out += ["## 7. Quality", "",
            "One agent, self-consistency at equal total tokens and the council on the shipped task set, with "
            "hidden tests: [quality.md](quality.md) (written by the `quality` phase).", ""]

    out += ["## Why the benchmark councils are unseeded", "",
            "The councils' default agents carry seeds. vllm-cpu 0.32 kills its engine core when a *seeded* "
            "request's prompt is prefilled in chunks (`RuntimeError: CPU Generator does not use offset`), as "
            "happens under concurrent load with chunked prefill on; the service's engine therefore turns chunked "
            "prefill off on CPU (`actors/backends/vllm.py`, tested in `tests/test_engine.py`). The baseline's stock "
            "`vllm.entrypoints.openai.api_server` keeps chunked prefill on, so every council these benchmarks "
            "deliberate with is unseeded (`seed: null`), on every side of every comparison, to sample alike.", ""]

    if s.get("recovery"):
        out += recovery_markdown(s["recovery"])
    out += _outside(stack)
    return "\n".join(out)


def _outside(stack: dict | None) -> list[str]:
    """Figures from benchmarks run on their own (not by `make bench`), read from the JSON they left in
    benchmarks/results/; each is left out when its file is absent."""
    import json

    out = ["## Measured outside `make bench`", "",
           "**`make bench` on a fresh clone**, `make install` included (warm pip cache), took **22.6 min** on the "
           "machine above (install 2.7 min, the phases 19.7 min, report seconds); measured once by hand.", ""]
    return out


def main() -> dict:
    inproc, stack = load_run("inprocess"), load_run("stack")
    suite = load_run("suite")
    summaries = {"fanout": fanout(inproc), "service_paths": service_paths(stack), "long_context": long_context(stack),
                 "throughput": throughput(stack),
                 "restore": restore(stack), "recovery": recovery(load_run("faults"))}
    DOC.write_text(markdown({k: v for k, v in summaries.items() if v}, inproc, stack, suite).strip() + "\n")
    print(f"wrote {DOC.relative_to(ROOT)} and {', '.join(sorted(p.name for p in RESULTS.glob('*.png')))}")
    return summaries


if __name__ == "__main__":
    main()
