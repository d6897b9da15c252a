"""What the CLI prints: terminal-safe lines, plain tables, stage events, a deliberation's result, a live status line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from serve_app.security import terminal_safe


def out(text: str = "") -> None:
    # Model text (proposals, critiques, errors) never writes escape sequences to the terminal.
    print(terminal_safe(text), flush=True)


def table(rows: list[list[Any]], header: list[str]) -> str:
    # Plain columns, not a rich table: scripts and docs/cli.md read these lines as they are.
    cells = [header] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def fmt_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


@contextmanager
def live_status(text: str, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner, `text` and the time elapsed below the printed lines while the block runs, on a terminal only
    (rich); yields the function that changes the text. Off a terminal (a pipe, a file) nothing but the lines."""
    console = Console()
    if not enabled or not console.is_terminal:
        yield lambda _text: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(terminal_safe(text), total=None)
        yield lambda new: progress.update(task, description=terminal_safe(new))


def revised(data: dict) -> str:
    kept = "adopted" if data.get("adopted") else "kept as a candidate"
    return f"  {data.get('author')} revised {data.get('target')}'s proposal ({kept})"


# A stage event's kind -> its line of progress (any other kind: the kind and its JSON).
EVENT_LINES: dict[str, Callable[[dict], str]] = {
    "stage.started": lambda d: f"{d.get('stage')}: started",
    "stage.completed": lambda d: f"{d.get('stage')}: done",
    "proposal": lambda d: f"  proposal by {d.get('author')} ({len(d.get('content', ''))} chars)",
    "tests.generated": lambda d: f"  {d.get('author')} wrote {len(d.get('asserts', []))} assert(s)",
    "critique": lambda d: f"  {d.get('critic')} critiqued {d.get('target')}'s proposal",
    "revision": revised,
    "stage.skipped": lambda d: f"skipped {', '.join(d.get('stages', []))}: {d.get('reason')}",
    "judgement": lambda d: f"  {d.get('judge')} judged {len(d.get('inputs', []))} distinguishing input(s)"
                           + ("" if d.get("parsed") else " (did not parse)"),
    "ranking": lambda d: f"  {d.get('reviewer')} ranked: {' > '.join(d.get('order', []))}",
    "score": lambda d: f"  {d.get('author')}: score {fmt_score(d.get('score'))}, rank {d.get('rank')}",
    "completed": lambda d: f"completed: winner {d.get('winner_id')}",
    "failed": lambda d: f"failed: {d.get('error')}",
    "timeout": lambda d: f"timeout: {d.get('error')}",
}


def describe(kind: str, data: dict) -> str:
    """One stage event of a deliberation as a line of progress."""
    line = EVENT_LINES.get(kind)
    return line(data) if line else f"{kind}: {json.dumps(data)[:120]}"


def print_result(record: dict) -> None:
    """A finished deliberation: the ranked proposals, the decision, the winner and its answer."""
    res = record.get("result")
    if not res:
        out(f"deliberation {record['id']} {record['status']}: {record.get('error')}")
        return
    rows = []
    for p in res["proposals"]:
        applied = [c for c in p.get("checks", []) if c["status"] != "skipped"]
        passed = sum(1 for c in applied if c["status"] == "passed")
        version = p.get("versions", [{}])[p.get("chosen", 0)] if p.get("versions") else {}
        rows.append([p["rank"], p["author"], fmt_score(p.get("score")), f"{passed}/{len(applied)}",
                     f"v{p.get('chosen', 0)} by {version.get('written_by', p['author'])}", len(p["content"]),
                     clip(p["content"], 50)])
    out()
    out(table(rows, ["rank", "author", "score", "checks", "version", "chars", "proposal"]))
    usage = res["usage"]
    if res.get("reason"):
        out(f"\ndecided by {res.get('decided_by')}: {clip(res['reason'], 200)}")
    out(f"\nwinner: {res['winner_id']}   ({res['duration_s']:.1f}s, "
        f"{usage['prompt_tokens'] + usage['completion_tokens']} tokens, deliberation {record['id']})")
    out("-" * 72)
    out(res["proposals"][0]["content"])
