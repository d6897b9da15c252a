"""`councils status`, `list`, `show`, `create` and `delete`: the service's readiness and its councils."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .client import Api, CliError
from .options import Options
from .render import clip, out, table

Role = Annotated[str, typer.Argument(help="the council's role, e.g. DEV", show_default=False)]


def status(api: Api, opts: Options) -> int:
    """Readiness and per-council figures (exit status 1 while not ready)."""
    ready = api.request("GET", "/readyz", ok=(200, 503))
    readyz = ready.json()
    body = api.json("GET", "/v1/status")
    if opts.json:
        out(json.dumps({"readyz": readyz, "status": body}, indent=2))
        return 0 if ready.status_code == 200 else 1
    out(f"{api.url}: {'ready' if readyz.get('ready') else 'NOT ready'} "
        f"(valkey {'ok' if readyz.get('valkey') else 'down'}, "
        f"councils restored: {readyz.get('councils_restored')}, engines ready: {readyz.get('engines_ready')})"
        + (f"; error: {readyz['error']}" if readyz.get("error") else ""))
    out(f"uptime {body.get('uptime_s', 0):.0f}s; engines: {', '.join(body.get('engines', [])) or '-'}")
    rows = []
    for c in body.get("councils", []):
        fig = body.get("by_role", {}).get(c["role"], {})
        done = fig.get("by_status", {})
        p50 = (fig.get("duration_s") or {}).get("p50")
        rows.append([c["role"], c["agents"], c["rounds"], fig.get("active", 0), done.get("completed", 0),
                     done.get("failed", 0), done.get("timeout", 0), "-" if p50 is None else f"{p50:.1f}s"])
    out(table(rows, ["council", "agents", "rounds", "active", "completed", "failed", "timeout", "p50"]))
    return 0 if ready.status_code == 200 else 1


def list_councils(api: Api, opts: Options) -> int:
    """List the councils."""
    body = api.json("GET", "/v1/councils")
    if opts.json:
        out(json.dumps(body["councils"], indent=2))
        return 0
    rows = [[c["role"], len(c["agents"]), ",".join(sorted({a["engine"] for a in c["agents"]})), c["rounds"],
             c["version"]] for c in body["councils"]]
    out(table(rows, ["council", "agents", "engines", "rounds", "version"]))
    return 0


def show(api: Api, opts: Options, role: Role) -> int:
    """One council and its agents."""
    spec = api.json("GET", f"/v1/councils/{role}")
    if opts.json:
        out(json.dumps(spec, indent=2))
        return 0
    out(f"council {spec['role']} (version {spec['version']}, {spec['rounds']} peer-review round(s))")
    rows = [[a["id"], a["engine"], a["temperature"], a["max_tokens"], a.get("seed"), clip(a.get("persona", ""), 60)]
            for a in spec["agents"]]
    out(table(rows, ["agent", "engine", "temperature", "max_tokens", "seed", "persona"]))
    return 0


def council_body(api: Api, role: str, file: str | None, engine: str | None, agents: int, rounds: int,
                 max_tokens: int) -> dict:
    """The body of PUT /v1/councils/{role}: the file's (JSON or YAML), or a default council on `engine`."""
    if file:
        try:
            text = Path(file).read_text()
        except OSError as exc:
            raise CliError(f"cannot read {file}: {type(exc).__name__}") from None
        try:
            return json.loads(text)
        except ValueError:
            import yaml

            return yaml.safe_load(text)
    from actors.models.councils import default_council

    engine = engine or next(iter(api.json("GET", "/v1/status").get("engines", [])), None)
    if not engine:
        raise CliError("no engine known to the service: pass --engine")
    try:
        spec = default_council(role, engine, agents, rounds, max_tokens)
    except ValueError as exc:  # pydantic: a role or a number out of bounds
        raise CliError(f"invalid council: {exc}") from None
    return spec.model_dump(mode="json", include={"agents", "rounds", "scoring"})


def create(api: Api, opts: Options, role: Role,
           agents: Annotated[int, typer.Option(help="how many agents")] = 3,
           engine: Annotated[str | None, typer.Option(help="default: the service's first engine")] = None,
           rounds: Annotated[int, typer.Option(help="peer-review rounds")] = 1,
           max_tokens: Annotated[int, typer.Option(help="per agent and call")] = 256,
           file: Annotated[str | None, typer.Option(
               help="JSON or YAML body of PUT /v1/councils/{role} (agents, rounds, scoring)")] = None) -> int:
    """Create (or replace) a council."""
    body = council_body(api, role, file, engine, agents, rounds, max_tokens)
    r = api.request("PUT", f"/v1/councils/{role}", json=body, ok=(200, 201))
    spec = r.json()
    if opts.json:
        out(json.dumps(spec, indent=2))
    else:
        out(f"{'created' if r.status_code == 201 else 'replaced'} council {spec['role']}: "
            f"{len(spec['agents'])} agents, {spec['rounds']} round(s), version {spec['version']}")
    return 0


def delete(api: Api, opts: Options, role: Role) -> int:
    """Delete a council."""
    body = api.json("DELETE", f"/v1/councils/{role}")
    out(json.dumps(body) if opts.json else f"deleted council {body['deleted']}")
    return 0
