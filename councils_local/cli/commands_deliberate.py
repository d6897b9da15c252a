"""`councils deliberate`: submit a task, follow its stage events live, print the ranked result."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer

from actors.models.records import FINISHED

from .client import Api, CliError
from .options import Options
from .render import describe, live_status, out, print_result

TERMINAL_KINDS = FINISHED  # a deliberation's last stage event is named by its final status


def follow(api: Api, accepted: dict, quiet: bool, show: Callable[[str], None] = lambda _text: None) -> None:
    """Print the stage events as they happen; resume after a dropped connection; poll if streaming fails.
    `show` is told which stage runs (the live status line)."""
    started, last_id, attempts = time.time(), None, 0
    while attempts < 3:
        try:
            for event_id, kind, data in api.events(accepted["events_url"], last_id):
                last_id = event_id or last_id
                if not quiet:
                    out(f"[{time.time() - started:6.1f}s] {describe(kind, data)}")
                if kind == "stage.started":
                    show(f"stage {data.get('stage')}")
                if kind in TERMINAL_KINDS:
                    return
            return  # the server ended the stream (expired record): the record says the rest
        except (httpx.HTTPError, CliError, ValueError) as exc:
            attempts += 1
            if not quiet:
                out(f"(event stream interrupted: {type(exc).__name__}; {'resuming' if attempts < 3 else 'polling'})")
            time.sleep(1)
    show(f"polling {accepted['status_url']}")
    while api.json("GET", accepted["status_url"])["status"] not in TERMINAL_KINDS:
        time.sleep(1)


def deliberate(api: Api, opts: Options,
               role: Annotated[str, typer.Argument(help="the council's role, e.g. DEV", show_default=False)],
               task: Annotated[str, typer.Argument(help="the task, in quotes", show_default=False)],
               rubric: Annotated[str | None, typer.Option(help="how to judge the answers")] = None,
               requirement: Annotated[list[str] | None, typer.Option(help="a requirement (repeatable)")] = None,
               rounds: Annotated[int | None, typer.Option(help="default: the council's")] = None,
               num_agents: Annotated[int | None, typer.Option("--agents", help="default: the council's")] = None,
               max_tokens: Annotated[int | None, typer.Option(help="default: each agent's")] = None,
               timeout_s: Annotated[float | None, typer.Option(help="the deliberation's deadline")] = None,
               task_id: Annotated[str | None, typer.Option(help="kept as metadata.task_id")] = None) -> int:
    """Run a deliberation, showing its stages live (exit status 1 unless it completes)."""
    constraints: dict[str, Any] = {}
    if rubric:
        constraints["rubric"] = rubric
    if requirement:
        constraints["requirements"] = list(requirement)
    if timeout_s:
        constraints["timeout_s"] = timeout_s
    if task_id:
        constraints["metadata"] = {"task_id": task_id}
    body: dict[str, Any] = {"role": role, "task": task, "constraints": constraints}
    for name, value in (("rounds", rounds), ("num_agents", num_agents), ("max_tokens", max_tokens)):
        if value is not None:
            body[name] = value
    accepted = api.json("POST", "/v1/deliberations", json=body, ok=(202,))
    if not opts.json:
        out(f"deliberation {accepted['id']} accepted by council {role}")
    with live_status(f"council {role}: waiting for the first stage", enabled=not opts.json) as show:
        follow(api, accepted, quiet=opts.json, show=lambda text: show(f"council {role}: {text}"))
    record = api.json("GET", accepted["status_url"])
    if opts.json:
        out(json.dumps(record, indent=2))
    else:
        print_result(record)
    return 0 if record["status"] == "completed" else 1
