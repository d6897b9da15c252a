"""Figures of a quality run (benchmarks/quality.py), its targets, and the history of every run's headline figures.

figures(run)            per family and arm: passes with a Wilson interval, oracle rate, chosen-when-available,
                        a random pick's expectation from the same pool, tokens, median wall time, a paired exact
                        McNemar test against the council; pooled median wall time per arm;
targets(figs)           the issue-22 targets (judged on the held-out split), each met / not met with its figures;
history_entry(run)      the headline figures one run appends to benchmarks/results/quality_history.json;
append_history(path, e) appends (never rewrites an entry).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .quality_arms import ARMS, FAMILIES
from .quality_stats import discordant, mcnemar_exact, median, random_pick_expectation, wilson


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def arm_figures(rows: list[dict]) -> dict:
    n, k = len(rows), sum(r["correct"] for r in rows)
    oracle = [r for r in rows if r["oracle"]]
    chosen = sum(r["correct"] for r in oracle)
    rnd = random_pick_expectation((r["pool_correct"], r["pool"]) for r in rows)
    rnd_oracle = random_pick_expectation((r["pool_correct"], r["pool"]) for r in oracle)
    return {"attempts": n, "correct": k, "rate": _rate(k, n), "ci95": list(wilson(k, n)),
            "oracle": len(oracle), "oracle_rate": _rate(len(oracle), n),
            "chosen": chosen, "chosen_when_available": _rate(chosen, len(oracle)),
            "random_pick": round(float(rnd), 3), "random_pick_rate": _rate(float(rnd), n),
            "random_pick_when_available": _rate(float(rnd_oracle), len(oracle)),
            "tokens_per_task": round(statistics.mean(r["tokens"] for r in rows)) if rows else None,
            "candidates_per_task": round(statistics.mean(r["pool"] for r in rows), 1) if rows else None,
            "median_wall_s": median(r["wall_s"] for r in rows),
            "per_rep_correct": [sum(r["correct"] for r in rows if r["rep"] == rep)
                                for rep in sorted({r["rep"] for r in rows})],
            "decided_by": dict(sorted(_count(str(r["decided_by"]) for r in rows).items()))}


def figures(run: dict) -> dict:
    """Per family and arm figures, McNemar of the council against each other arm, pooled wall times."""
    rows = run["rows"]
    out: dict = {"families": {}, "wall": {}}
    for family in FAMILIES:
        fam = [r for r in rows if r["family"] == family]
        if not fam:
            continue
        per: dict = {"arms": {}, "mcnemar": {}}
        for arm in ARMS:
            mine = [r for r in fam if r["arm"] == arm]
            if mine:
                per["arms"][arm] = arm_figures(mine)
        council = {(r["id"], r["rep"]): r["correct"] for r in fam if r["arm"] == "council"}
        for arm in ARMS:
            other = {(r["id"], r["rep"]): r["correct"] for r in fam if r["arm"] == arm}
            if arm != "council" and council and other:
                b, c = discordant(council, other)
                per["mcnemar"][arm] = {"council_only": b, "other_only": c, "p": float(f"{mcnemar_exact(b, c):.4g}")}
        out["families"][family] = per
    for arm in ARMS:
        walls = [r["wall_s"] for r in rows if r["arm"] == arm]
        if walls:
            out["wall"][arm] = median(walls)
    return out


def _count(values) -> dict:
    counts: dict = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


# ---------------------------------------------------------------- targets (fixed before any run; never edited after)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def targets(figs: dict) -> list[dict]:
    """The targets of issue 22, judged on the held-out split: name, measured figures, met (None: nothing to judge)."""
    fams = figs["families"]

    def arm(family: str, name: str) -> dict | None:
        return fams.get(family, {}).get("arms", {}).get(name)

    out = []
    c, sc = arm("python_tests", "council"), arm("python_tests", "self_consistency")
    out.append(("with visible tests: council pass rate ≥ self-consistency's at equal tokens",
                c and sc and (f"{c['correct']}/{c['attempts']} vs {sc['correct']}/{sc['attempts']}",
                              c["correct"] >= sc["correct"])))
    out.append(("with visible tests: council chooses a passing candidate when its pool has one, ≥ 95 %",
                c and c["oracle"] and (f"{_pct(c['chosen_when_available'])} ({c['chosen']}/{c['oracle']})",
                                       c["chosen_when_available"] >= 0.95)))
    c, one, sc = arm("python_notests", "council"), arm("python_notests", "single"), \
        arm("python_notests", "self_consistency")
    out.append(("without visible tests: council pass rate ≥ 1.5 × one agent's",
                c and one and (f"{c['correct']}/{c['attempts']} vs 1.5 × {one['correct']}/{one['attempts']}",
                               c["correct"] * one["attempts"] >= 1.5 * one["correct"] * c["attempts"])))
    out.append(("without visible tests: council pass rate ≥ behaviour-majority self-consistency's at equal tokens",
                c and sc and (f"{c['correct']}/{c['attempts']} vs {sc['correct']}/{sc['attempts']}",
                              c["correct"] * sc["attempts"] >= sc["correct"] * c["attempts"])))
    out.append(("without visible tests: council chooses a passing candidate when its pool has one, ≥ 60 %",
                c and c["oracle"] and (f"{_pct(c['chosen_when_available'])} ({c['chosen']}/{c['oracle']}); a random "
                                       f"pick from the same pools: {_pct(c['random_pick_when_available'])}",
                                       c["chosen_when_available"] >= 0.60)))
    wc, ws = figs["wall"].get("council"), figs["wall"].get("self_consistency")
    out.append(("median wall time per task, council ≤ 1.3 × self-consistency's (every family)",
                wc is not None and ws and (f"{wc:.1f} s vs 1.3 × {ws:.1f} s = {1.3 * ws:.1f} s", wc <= 1.3 * ws)))
    return [{"target": name, "measured": got[0] if got else "not measured", "met": got[1] if got else None}
            for name, got in out]


# ---------------------------------------------------------------- history (append only)


def history_entry(run: dict, figs: dict) -> dict:
    """A run's headline figures, as appended to the history."""
    fams = {}
    for family, per in figs["families"].items():
        fams[family] = {"arms": {arm: {k: f[k] for k in ("correct", "attempts", "oracle", "chosen", "tokens_per_task",
                                                          "median_wall_s", "random_pick")}
                                 for arm, f in per["arms"].items()},
                        "mcnemar_vs_council": per["mcnemar"]}
    return {"date": run["date"], "commit": run["commit"], "dirty": run.get("dirty"), "split": run["split"],
            "design": "issue 22: three families, council as make run ships it, self-consistency at equal tokens",
            "arms": [a for a in ARMS if any(a in p["arms"] for p in figs["families"].values())],
            "reps": run["reps"], "max_tokens": run["shape"]["max_tokens"], "council": run["shape"],
            "exact_role": run["exact_role"], "limit": run.get("limit"), "wall_s": run.get("wall_s"),
            "median_wall_s": figs["wall"], "families": fams,
            "targets": [{"target": t["target"], "met": t["met"]} for t in targets(figs)]
            if run["split"] == "heldout" else None}


def load_history(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def append_history(path: Path, entry: dict) -> list[dict]:
    """Append one entry; the entries already there are written back unchanged (checked)."""
    before = path.read_text() if path.exists() else "[]"
    entries = json.loads(before)
    entries.append(entry)
    text = json.dumps(entries, indent=1, ensure_ascii=False) + "\n"
    old = json.loads(before)
    assert json.loads(text)[: len(old)] == old, "the history is append-only"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return entries
