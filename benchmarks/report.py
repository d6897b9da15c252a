"""Summarise the phases' raw runs: one JSON and one PNG per benchmark under benchmarks/results/,
and docs/benchmarks.md (with the targets and whether each was met), a generated file written whole.

    python -m benchmarks.report       # after `python -m benchmarks` (or its phases) wrote results/runs/
"""

from __future__ import annotations

from .common import MODEL_LABEL, RESULTS, ROOT, load_run, median, ratio, save

DOC = ROOT / "docs" / "benchmarks.md"
FIG = {"figsize": (5.2, 3.0), "dpi": 80}
TARGETS = {"fanout_n3": 1.5, "serve_overhead": 0.10, "council_vs_original": 0.6}


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
    f = inproc.get("fanout") if inproc else None
    if not f:
        return None
    res = f["results"]
    summary = {"max_tokens": f["max_tokens"], "reps": f["reps"], "results": res,
               "target": f"ratio for N=3 <= {TARGETS['fanout_n3']}",
               "n3_ratio": res.get("3", {}).get("ratio_to_n1")}
    summary["met"] = None if summary["n3_ratio"] is None else summary["n3_ratio"] <= TARGETS["fanout_n3"]
    save("propose_fanout", {"model": MODEL_LABEL, **summary})
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIG["figsize"])
    ns = list(res)
    _bars(ax, [f"N={n}" for n in ns], [res[n]["median_wall_s"] for n in ns], "{:.2f} s")
    for i, n in enumerate(ns):
        ax.annotate(f"x{res[n]['ratio_to_n1']:.2f}", (i, res[n]["median_wall_s"] / 2), ha="center", color="white")
    ax.set_ylabel("propose stage, median wall s")
    ax.set_title(f"Propose fan-out on one engine ({f['max_tokens']} tokens/agent)")
    summary["png"] = _savefig(fig, "propose_fanout")
    return summary


def overhead(inproc: dict, stack: dict) -> dict | None:
    b = (stack or {}).get("overhead")
    if not b or not b.get("same_engine_in_process"):
        return None
    local = b["same_engine_in_process"]["rows"]
    inp, http = median([r["wall_s"] for r in local]), median([r["wall_s"] for r in b["rows"]])
    over = round(http / inp - 1, 3)
    summary = {"in_process_same_engine": {"rows": local, "median_wall_s": inp},
               "serve_http": {"rows": b["rows"], "median_wall_s": http,
                              "median_council_duration_s": median([r["council_duration_s"] for r in b["rows"]])},
               "overhead": over, "target": f"overhead <= {TARGETS['serve_overhead']:.0%}",
               "met": over <= TARGETS["serve_overhead"], "council": b["council"],
               "idle_cpu": stack.get("idle_cpu")}
    labels, values = ["in-process protocol,\nstack's engine actor", "HTTP through\nServe"], [inp, http]
    bare = (inproc or {}).get("deliberation")
    if bare:  # phase 1: the same protocol on an engine in the driver's own process, no Ray cluster running
        bare_s = median([r["wall_s"] for r in bare["rows"]])
        summary["in_process_bare_engine"] = {"rows": bare["rows"], "median_wall_s": bare_s,
                                             "http_over_bare": round(http / bare_s - 1, 3)}
        labels.insert(0, "in-process protocol,\nbare engine (no Ray)")
        values.insert(0, bare_s)
    save("serve_overhead", {"model": MODEL_LABEL, **summary})
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIG["figsize"])
    _bars(ax, labels, values, "{:.2f} s")
    ax.set_ylabel("full deliberation, median wall s")
    ax.set_title(f"Serve overhead: {over:+.1%}")
    summary["png"] = _savefig(fig, "serve_overhead")
    return summary


def baselines(inproc: dict, base: dict, stack: dict) -> dict | None:
    council = (inproc or {}).get("deliberation")
    if not base or not council:
        return None
    sides = {"original (sequential HTTP)": base["original"]["rows"],
             "concurrent HTTP": base["concurrent"]["rows"],
             "this council (in-process)": council["rows"]}
    if stack and stack.get("overhead"):
        sides["this council (via Serve)"] = stack["overhead"]["rows"]
    orig = median([r["wall_s"] for r in sides["original (sequential HTTP)"]])
    rows = {}
    for name, rs in sides.items():
        wall = median([r["wall_s"] for r in rs])
        rows[name] = {"median_wall_s": wall, "ratio_to_original": ratio(wall, orig), "tokens_per_s": _tps(rs),
                      "median_completion_tokens": median([r["completion_tokens"] for r in rs]), "rows": rs}
    primary = rows["this council (in-process)"]["ratio_to_original"]
    summary = {"designs": rows, "target": f"this council <= {TARGETS['council_vs_original']} x original wall time",
               "council_ratio": primary, "met": primary <= TARGETS["council_vs_original"],
               "server_command": base.get("server_command")}
    if "this council (via Serve)" in rows:
        summary["council_via_serve_ratio"] = rows["this council (via Serve)"]["ratio_to_original"]
    save("baselines", {"model": MODEL_LABEL, **summary})
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7.5, 3.0))
    labels = ["original\nseq. HTTP", "concurrent\nHTTP", "council\nin-process", "council\nvia Serve"][: len(rows)]
    _bars(ax1, labels, [r["median_wall_s"] for r in rows.values()], "{:.1f} s")
    ax1.set_title("deliberation wall time (median)")
    _bars(ax2, labels, [r["tokens_per_s"] for r in rows.values()], "{:.1f}")
    ax2.set_title("generated tokens / s")
    summary["png"] = _savefig(fig, "baselines")
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
    out = ["## 7. Time to recover", "",
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


def _spread(rows: list[dict]) -> str:
    walls = [r["wall_s"] for r in rows]
    mid = median(walls)
    return f"{(max(walls) - min(walls)) / mid:.0%}" if mid else "n/a"


def _overhead_causes(o: dict) -> list[str]:
    """What the run measured about the Ray cluster's own cost on this machine: the bare-engine side and
    the stack's idle CPU."""
    lines = []
    bare = o.get("in_process_bare_engine")
    if bare:
        lines += ["", f"Not part of the target, for the record: the same in-process protocol on a **bare** engine "
                  f"(phase 1: the engine in the benchmark's own process, no Ray cluster running) took "
                  f"{bare['median_wall_s']:.2f} s; the deliberation over HTTP took {bare['http_over_bare']:+.1%} "
                  f"against that."
                  + (" The extra is not Serve (see the table) but the engine running as a Ray actor beside a Ray "
                     "cluster on the same 2 cores." if bare["http_over_bare"] > o["overhead"] + 0.05 else "")]
    idle = o.get("idle_cpu")
    if idle:
        kinds = sorted(idle["by_kind"].items(), key=lambda kv: -kv[1]["cpu_pct_of_one_core"])
        lines += ["", f"While no deliberation runs, the stack's own processes use {idle['total_cpu_pct_of_one_core']:.0f} % "
                  f"of one core ({idle['total_cpu_pct_of_one_core'] / 2:.0f} % of this 2-core machine), measured over "
                  f"{idle['seconds']:.0f} s: "
                  + ", ".join(f"{k} {v['cpu_pct_of_one_core']:.1f} %" for k, v in kinds if v["cpu_pct_of_one_core"] >= 0.1)
                  + ". The engine's model threads are bound to both cores, so here that load competes with decoding; "
                    "on a GPU node the model does not run on the cores the control plane uses."]
    return lines


def markdown(s: dict, inproc: dict, base: dict, stack: dict, suite: dict | None) -> str:
    from .common import machine, settings

    m = (inproc or base or stack or {}).get("machine") or machine()
    cfg = (inproc or base or stack or {}).get("settings") or settings()
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
            f"(propose, critique, revise, score: 3 batched generation stages), **{cfg['max_tokens']} tokens per "
            f"generation**, agents unseeded (see below); {cfg['overhead_reps']} timed repetitions of "
            f"the council's deliberation on each path and {cfg['reps']} of each baseline design (after one untimed "
            f"warm-up each), repetition i on task i of a fixed list of engineering tasks, the same list on every "
            f"side; figures are medians. Small figures on purpose: the whole suite must fit in 30 minutes on 2 "
            f"cores.", ""]

    out += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    f, o, b = s.get("fanout"), s.get("overhead"), s.get("baselines")
    out.append("| propose fan-out, N=3 ≤ 1.5 × N=1 | "
               + (f"{f['n3_ratio']:.2f} × | {_met(f['met'])} |" if f else "not measured | n/a |"))
    out.append("| Serve overhead ≤ 10 % | "
               + (f"{o['overhead']:+.1%} | {_met(o['met'])} |" if o else "not measured | n/a |"))
    out.append("| this council ≤ 0.6 × the original design's wall time | "
               + (f"{b['council_ratio']:.2f} × (via Serve: {b.get('council_via_serve_ratio', float('nan')):.2f} ×) "
                  f"| {_met(b['met'])} |" if b else "not measured | n/a |"))
    out.append("")

    if f:
        out += ["## 1. Propose fan-out", "",
                f"The propose stage of the real protocol (`actors/protocol.py`) for N agents on one in-process "
                f"engine, {f['max_tokens']} tokens per agent, median of {f['reps']} (`benchmarks/propose_fanout.py`). "
                f"The agents' proposals are concurrent requests on one `AsyncLLM`, which batches them.", "",
                "| agents | wall time | tokens generated | ratio to N=1 |", "|---|---|---|---|"]
        for n, r in f["results"].items():
            out.append(f"| {n} | {r['median_wall_s']:.2f} s | {r['median_completion_tokens']:.0f} | "
                       f"{r['ratio_to_n1']:.2f} |")
        out += ["", f"![fan-out]({png}{f['png']})", ""]

    if o:
        out += ["## 2. Serve overhead", "",
                "The benchmark council's full deliberation two ways on the `make run` stack (launcher on free "
                "ports, its own data dir), on the stack's **one engine actor**, interleaved task by task so both "
                "sides see the same engine, load and drift:",
                "- **HTTP through Serve**: `POST /v1/deliberations?wait=true` → Serve proxy → ingress replica → "
                "council actor (a Valkey checkpoint and events after every sub-stage) → engine actor;",
                "- **in-process**: the benchmark driver runs the same protocol (`actors/protocol.py`) with the same "
                "council spec and request itself, calling the engine actor as a council actor does "
                "(`RayEngineGenerator`), no Serve, no council actor, no Valkey.", "",
                "| path | median wall | |", "|---|---|---|",
                f"| in-process protocol, same engine actor | {o['in_process_same_engine']['median_wall_s']:.2f} s | |",
                f"| HTTP through Serve | {o['serve_http']['median_wall_s']:.2f} s | council's own duration "
                f"{o['serve_http']['median_council_duration_s']:.2f} s |",
                f"| **overhead** | **{o['overhead']:+.1%}** | target ≤ 10 %: {_met(o['met'])} |", "",
                f"The repetitions spread over {_spread(o['in_process_same_engine']['rows'])} (in-process) and "
                f"{_spread(o['serve_http']['rows'])} (HTTP) of their median: CPU decoding at sampled temperatures "
                f"is noisy, so a difference of a few percent is within it. Time inside the council actor (the "
                f"record's `duration_s`): {o['serve_http']['median_council_duration_s']:.2f} s of "
                f"{o['serve_http']['median_wall_s']:.2f} s, so HTTP, Serve and the ingress's wait cost "
                f"{o['serve_http']['median_wall_s'] - o['serve_http']['median_council_duration_s']:.2f} s per "
                "deliberation."]
        out += _overhead_causes(o)
        out += ["", f"![overhead]({png}{o['png']})", ""]

    if b:
        d = b["designs"]
        out += ["## 3. Against the original design and concurrent HTTP", "",
                "The same protocol, council spec, requests and max_tokens, on the same model and settings:",
                "- **original**: each agent calls a vLLM OpenAI-compatible server (`python -m "
                "vllm.entrypoints.openai.api_server`, float32, eager, prefix caching on) over HTTP, one call "
                "after another (propose, critique, revise), as the original orchestrator did;",
                "- **concurrent HTTP**: the same server, all agents' calls of a stage sent at once;",
                "- **this council**: the in-process `AsyncLLM` engine, the agents' calls of a stage batched; "
                "and the same through the whole Serve stack (section 2).", "",
                "| design | median wall | ratio to original | generated tokens/s | tokens per deliberation |",
                "|---|---|---|---|---|"]
        for name, r in d.items():
            out.append(f"| {name} | {r['median_wall_s']:.2f} s | {r['ratio_to_original']:.2f} | "
                       f"{r['tokens_per_s']:.1f} | {r['median_completion_tokens']:.0f} |")
        out += ["", f"Target: this council ≤ 0.6 × the original's wall time: {b['council_ratio']:.2f} × "
                f"— {_met(b['met'])}. The original design runs the 9 generations of a deliberation one after "
                "another; the concurrent-HTTP design and this council run the 3 of each stage at once, and the "
                "engine batches them (continuous batching; section 1: three proposals cost "
                + (f"{s['fanout']['n3_ratio']:.2f}" if s.get("fanout") else "?") + " × one). "
                f"Concurrent HTTP against this council: {d['concurrent HTTP']['ratio_to_original']:.2f} against "
                f"{b['council_ratio']:.2f} of the original's wall time: both get the batching from vLLM, so what "
                "this project adds over a script that calls one vLLM server concurrently is durable councils, "
                "records and the service around them, not speed"
                + (f" (in this run concurrent HTTP was {1 - d['concurrent HTTP']['median_wall_s'] / d['this council (in-process)']['median_wall_s']:.0%} "
                   "faster than the in-process council)." if d["concurrent HTTP"]["median_wall_s"]
                   < d["this council (in-process)"]["median_wall_s"] else "."), "",
                f"![baselines]({png}{b['png']})", ""]

    r = s.get("restore")
    if r:
        sl, ac, ct = r["spec_load"], r["actors"], r["constructor"]
        big = max(sl, key=int)
        out += ["## 4. Restore", "",
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
        out += ["## 5. Throughput", "",
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

    out += ["## 6. Quality", "",
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
    wide = RESULTS / "propose_fanout_64tok.json"
    if wide.exists():
        f = json.loads(wide.read_text())
        res = f["results"]
        out += [f"**Propose fan-out, {f['reps']} repetitions** (`python -m benchmarks.propose_fanout --max-tokens "
                f"{f['max_tokens']} --reps {f['reps']}`, run on its own; raw runs: "
                f"`benchmarks/results/propose_fanout_64tok.json`): "
                + ", ".join(f"N={n} {r['median_wall_s']:.2f} s ({r['ratio_to_n1']:.2f} ×)" for n, r in res.items())
                + ". At very short budgets (8 tokens) the ratio rose to 1.78: with so few decode steps the fixed "
                "cost of a step with three sequences weighs more than at a realistic answer length.", ""]
    return out


def main() -> dict:
    inproc, base, stack = load_run("inprocess"), load_run("baselines"), load_run("stack")
    suite = load_run("suite")
    summaries = {"fanout": fanout(inproc), "overhead": overhead(inproc, stack),
                 "baselines": baselines(inproc, base, stack), "throughput": throughput(stack),
                 "restore": restore(stack), "recovery": recovery(load_run("faults"))}
    DOC.write_text(markdown({k: v for k, v in summaries.items() if v}, inproc, base, stack, suite).strip() + "\n")
    print(f"wrote {DOC.relative_to(ROOT)} and {', '.join(sorted(p.name for p in RESULTS.glob('*.png')))}")
    return summaries


if __name__ == "__main__":
    main()
