"""Every `make bench` run's headline figures, appended, never rewritten: benchmarks/results/bench_history.json.

An entry is the run's date, commit and the rows of docs/benchmarks.md's Targets table as they were written (target,
measured, met or not), so a figure that later moved (a fix, a regression, a redefined benchmark) keeps its date.
"""

from __future__ import annotations

import json

from .common import RESULTS, ROOT

HISTORY = RESULTS / "bench_history.json"


def target_rows(page: str) -> list[list[str]]:
    """The Targets table of a rendered docs/benchmarks.md: [target, measured, verdict] per row."""
    rows, inside = [], False
    for line in page.splitlines():
        if line.strip() in ("## Targets", "### Targets"):
            inside = True
            continue
        if inside and line.startswith("#"):
            break
        if inside and line.startswith("| ") and not line.startswith(("| target |", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append([cells[0], cells[1], cells[2].strip("*")])
    return rows


def load() -> list[dict]:
    return json.loads(HISTORY.read_text()) if HISTORY.exists() else []


def append(date: str, commit: str, page: str, phases: list[str]) -> list[dict]:
    """Add this run's Targets rows, with the commit it started on (`+`: uncommitted changes); skipped when they equal
    the last entry's (a re-render, not a run)."""
    entries = load()
    rows = target_rows(page)
    if rows and (not entries or entries[-1]["rows"] != rows):
        entries.append({"date": date, "commit": commit, "phases": phases, "rows": rows})
        HISTORY.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
    return entries


def markdown(entries: list[dict]) -> list[str]:
    if not entries:
        return []
    out = ["## Every run's headline figures", "",
           f"Appended by each `make bench` run to `{HISTORY.relative_to(ROOT)}`, never rewritten; a phase not run "
           "keeps its last figures on the page, so a row may repeat an earlier run's figure.", "",
           "| date | commit | phases | figures |", "|---|---|---|---|"]
    for e in entries:
        figures = "; ".join(f"{t}: {m} ({v})" for t, m, v in e["rows"]) + (f". {e['note']}" if e.get("note") else "")
        out.append(f"| {e['date']} | {e['commit']} | {', '.join(e.get('phases') or ['?'])} | {figures} |")
    return out + [""]
