"""`councils`: the command line of Councils on Ray.

    councils up [--config FILE] [--http-port N]    start the local service (councils_local.launcher) in the background
    councils down                                  stop it (SIGINT, then wait)
    councils status                                readiness and figures of a running service
    councils list | show ROLE | create ROLE | delete ROLE
    councils deliberate ROLE "task"                live stage progress, then the ranked result

Every command but up/down talks HTTP to `--url` (default $COUNCILS_URL or http://127.0.0.1:8000) with a
bearer token read from `--token-file FILE`, $COUNCILS_API_TOKEN_FILE or $COUNCILS_API_TOKEN (create and delete
prefer $COUNCILS_ADMIN_TOKEN_FILE / $COUNCILS_ADMIN_TOKEN); `--token` works too but shows in `ps`.
Everything printed is terminal-safe: escape sequences and control characters in model text are dropped.
`--json` prints machine-readable JSON only.
Exit status: 0 success, 1 a failed request or deliberation, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
from httpx_sse import connect_sse

from actors.models.records import FINISHED

from serve_app.security import terminal_safe
from serve_app.settings import EnvSettings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "http://127.0.0.1:8000"
PID_FILE = "councils.pid"
LOG_FILE = "councils.log"
TERMINAL_KINDS = FINISHED  # a deliberation's last stage event is named by its final status


class CliError(Exception):
    """A failure to report in one line (exit status 1)."""


# -- output ---------------------------------------------------------------------------------------
def out(text: str = "") -> None:
    # Model text (proposals, critiques, errors) never writes escape sequences to the terminal.
    print(terminal_safe(text), flush=True)


def table(rows: list[list[Any]], header: list[str]) -> str:
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


# -- HTTP -----------------------------------------------------------------------------------------
class Api:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs) -> httpx.Response:
        try:
            r = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
        if r.status_code not in ok:
            raise CliError(f"{method} {path}: {r.status_code} {error_message(r)}")
        return r

    def json(self, method: str, path: str, **kwargs) -> Any:
        return self.request(method, path, **kwargs).json()

    def events(self, path: str, after: str | None = None) -> Iterator[tuple[str | None, str, dict]]:
        """(id, kind, data) of the Server-Sent Events at path, as they arrive, until the server ends them."""
        headers = {"Last-Event-ID": after} if after else {}
        with connect_sse(self.client, "GET", path, headers=headers, timeout=httpx.Timeout(30.0, read=60.0)) as source:
            if source.response.status_code != 200:
                source.response.read()
                raise CliError(f"GET {path}: {source.response.status_code} {error_message(source.response)}")
            for event in source.iter_sse():
                yield event.id or None, event.event, json.loads(event.data or "{}")


def error_message(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body["error"]["message"])
    except Exception:
        return r.text[:300] or r.reason_phrase


# -- up / down ------------------------------------------------------------------------------------
def data_dir(args) -> Path:
    return Path(args.data_dir or EnvSettings().data_dir or ROOT / ".data")


def launcher_command(args) -> list[str]:
    cmd = [sys.executable, "-m", "councils_local.launcher", "--data-dir", str(data_dir(args))]
    if args.config:
        cmd += ["--config", args.config]
    if args.http_port:
        cmd += ["--http-port", str(args.http_port)]
    return cmd


def read_pid(path: Path) -> dict | None:
    """The launcher we started, if it is still that process (a reused PID is not ours)."""
    import psutil

    try:
        info = json.loads(path.read_text())
        proc = psutil.Process(int(info["pid"]))
        if abs(proc.create_time() - float(info["create_time"])) > 1.0:
            return None
        return info if proc.status() != psutil.STATUS_ZOMBIE else None
    except (OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None


def cmd_up(api: Api | None, args) -> int:
    import psutil

    if args.http_port and args.url == DEFAULT_URL:
        args.url = f"http://127.0.0.1:{args.http_port}"
    ddir = data_dir(args)
    ddir.mkdir(parents=True, exist_ok=True)
    pid_path = ddir / PID_FILE
    running = read_pid(pid_path)
    if running:
        raise CliError(f"already running (pid {running['pid']}; `councils down` stops it)")
    log_path = ddir / LOG_FILE
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(launcher_command(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(ROOT))
    info = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "url": args.url}
    pid_path.write_text(json.dumps(info))
    if not args.json:
        out(f"started the launcher (pid {proc.pid}); log: {log_path}")
    if args.no_wait:
        if args.json:
            out(json.dumps({"pid": proc.pid, "log": str(log_path), "ready": None}))
        return 0
    deadline = time.time() + args.ready_timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pid_path.unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise CliError(f"the launcher exited with {proc.returncode}:\n" + "\n".join(tail))
        try:
            if httpx.get(f"{args.url.rstrip('/')}/readyz", timeout=3).status_code == 200:
                if args.json:
                    out(json.dumps({"pid": proc.pid, "log": str(log_path), "ready": True}))
                else:
                    out(f"ready on {args.url}")
                return 0
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise CliError(f"not ready within {args.ready_timeout:.0f}s (still starting? see {log_path})")


def cmd_down(api: Api | None, args) -> int:
    import psutil

    pid_path = data_dir(args) / PID_FILE
    info = read_pid(pid_path)
    if info is None:
        pid_path.unlink(missing_ok=True)
        out(json.dumps({"stopped": False, "running": False}) if args.json else "not running")
        return 0
    proc = psutil.Process(int(info["pid"]))
    # SIGINT is the launcher's Ctrl-C: it stops Ray and Valkey, each by its process group.
    for sig, wait_s in ((signal.SIGINT, args.timeout), (signal.SIGTERM, 30.0)):
        try:
            proc.send_signal(sig)
            proc.wait(wait_s)
            break
        except psutil.NoSuchProcess:
            break
        except psutil.TimeoutExpired:
            continue
    else:
        raise CliError(f"pid {proc.pid} did not stop after SIGINT and SIGTERM")
    pid_path.unlink(missing_ok=True)
    out(json.dumps({"stopped": True, "pid": proc.pid}) if args.json else f"stopped (pid {proc.pid})")
    return 0


# -- status ---------------------------------------------------------------------------------------
def cmd_status(api: Api, args) -> int:
    ready = api.request("GET", "/readyz", ok=(200, 503))
    readyz = ready.json()
    status = api.json("GET", "/v1/status")
    if args.json:
        out(json.dumps({"readyz": readyz, "status": status}, indent=2))
        return 0 if ready.status_code == 200 else 1
    out(f"{api.url}: {'ready' if readyz.get('ready') else 'NOT ready'} (valkey {'ok' if readyz.get('valkey') else 'down'}, "
        f"councils restored: {readyz.get('councils_restored')}, engines ready: {readyz.get('engines_ready')})"
        + (f"; error: {readyz['error']}" if readyz.get("error") else ""))
    out(f"uptime {status.get('uptime_s', 0):.0f}s; engines: {', '.join(status.get('engines', [])) or '-'}")
    rows = []
    for c in status.get("councils", []):
        fig = status.get("by_role", {}).get(c["role"], {})
        done = fig.get("by_status", {})
        p50 = (fig.get("duration_s") or {}).get("p50")
        rows.append([c["role"], c["agents"], c["rounds"], fig.get("active", 0), done.get("completed", 0),
                     done.get("failed", 0), done.get("timeout", 0), "-" if p50 is None else f"{p50:.1f}s"])
    out(table(rows, ["council", "agents", "rounds", "active", "completed", "failed", "timeout", "p50"]))
    return 0 if ready.status_code == 200 else 1


# -- councils -------------------------------------------------------------------------------------
def cmd_list(api: Api, args) -> int:
    body = api.json("GET", "/v1/councils")
    if args.json:
        out(json.dumps(body["councils"], indent=2))
        return 0
    rows = [[c["role"], len(c["agents"]), ",".join(sorted({a["engine"] for a in c["agents"]})), c["rounds"], c["version"]]
            for c in body["councils"]]
    out(table(rows, ["council", "agents", "engines", "rounds", "version"]))
    return 0


def cmd_show(api: Api, args) -> int:
    spec = api.json("GET", f"/v1/councils/{args.role}")
    if args.json:
        out(json.dumps(spec, indent=2))
        return 0
    out(f"council {spec['role']} (version {spec['version']}, {spec['rounds']} peer-review round(s))")
    rows = [[a["id"], a["engine"], a["temperature"], a["max_tokens"], a.get("seed"), clip(a.get("persona", ""), 60)]
            for a in spec["agents"]]
    out(table(rows, ["agent", "engine", "temperature", "max_tokens", "seed", "persona"]))
    return 0


def cmd_create(api: Api, args) -> int:
    if args.file:
        text = Path(args.file).read_text()
        try:
            body = json.loads(text)
        except ValueError:
            import yaml

            body = yaml.safe_load(text)
    else:
        from actors.models.councils import default_council

        engine = args.engine or next(iter(api.json("GET", "/v1/status").get("engines", [])), None)
        if not engine:
            raise CliError("no engine known to the service: pass --engine")
        try:
            spec = default_council(args.role, engine, args.agents, args.rounds, args.max_tokens)
        except ValueError as exc:  # pydantic: a role or a number out of bounds
            raise CliError(f"invalid council: {exc}") from None
        body = spec.model_dump(mode="json", include={"agents", "rounds", "scoring"})
    r = api.request("PUT", f"/v1/councils/{args.role}", json=body, ok=(200, 201))
    spec = r.json()
    if args.json:
        out(json.dumps(spec, indent=2))
    else:
        out(f"{'created' if r.status_code == 201 else 'replaced'} council {spec['role']}: "
            f"{len(spec['agents'])} agents, {spec['rounds']} round(s), version {spec['version']}")
    return 0


def cmd_delete(api: Api, args) -> int:
    body = api.json("DELETE", f"/v1/councils/{args.role}")
    out(json.dumps(body) if args.json else f"deleted council {body['deleted']}")
    return 0


# -- deliberate -----------------------------------------------------------------------------------
def describe(kind: str, data: dict) -> str:
    if kind == "stage.started":
        return f"{data.get('stage')}: started"
    if kind == "stage.completed":
        return f"{data.get('stage')}: done"
    if kind == "proposal":
        return f"  proposal by {data.get('author')} ({len(data.get('content', ''))} chars)"
    if kind == "critique":
        return f"  {data.get('critic')} critiqued {data.get('target')}'s proposal"
    if kind == "revision":
        kept = "adopted" if data.get("adopted") else "kept as a candidate"
        return f"  {data.get('author')} revised {data.get('target')}'s proposal ({kept})"
    if kind == "stage.skipped":
        return f"skipped {', '.join(data.get('stages', []))}: {data.get('reason')}"
    if kind == "ranking":
        return f"  {data.get('reviewer')} ranked: {' > '.join(data.get('order', []))}"
    if kind == "score":
        return f"  {data.get('author')}: score {fmt_score(data.get('score'))}, rank {data.get('rank')}"
    if kind == "completed":
        return f"completed: winner {data.get('winner_id')}"
    if kind in ("failed", "timeout"):
        return f"{kind}: {data.get('error')}"
    return f"{kind}: {json.dumps(data)[:120]}"


def follow(api: Api, accepted: dict, quiet: bool) -> None:
    """Print the stage events as they happen; resume after a dropped connection; poll if streaming fails."""
    started, last_id, attempts = time.time(), None, 0
    while attempts < 3:
        try:
            for event_id, kind, data in api.events(accepted["events_url"], last_id):
                last_id = event_id or last_id
                if not quiet:
                    out(f"[{time.time() - started:6.1f}s] {describe(kind, data)}")
                if kind in TERMINAL_KINDS:
                    return
            return  # the server ended the stream (expired record): the record says the rest
        except (httpx.HTTPError, CliError, ValueError) as exc:
            attempts += 1
            if not quiet:
                out(f"(event stream interrupted: {type(exc).__name__}; {'resuming' if attempts < 3 else 'polling'})")
            time.sleep(1)
    while api.json("GET", accepted["status_url"])["status"] not in TERMINAL_KINDS:
        time.sleep(1)


def print_result(record: dict) -> None:
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


def cmd_deliberate(api: Api, args) -> int:
    constraints: dict[str, Any] = {}
    if args.rubric:
        constraints["rubric"] = args.rubric
    if args.requirement:
        constraints["requirements"] = args.requirement
    if args.timeout_s:
        constraints["timeout_s"] = args.timeout_s
    if args.task_id:
        constraints["metadata"] = {"task_id": args.task_id}
    body: dict[str, Any] = {"role": args.role, "task": args.task, "constraints": constraints}
    for name in ("rounds", "num_agents", "max_tokens"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    accepted = api.json("POST", "/v1/deliberations", json=body, ok=(202,))
    if not args.json:
        out(f"deliberation {accepted['id']} accepted by council {args.role}")
    follow(api, accepted, quiet=args.json)
    record = api.json("GET", accepted["status_url"])
    if args.json:
        out(json.dumps(record, indent=2))
    else:
        print_result(record)
    return 0 if record["status"] == "completed" else 1


# -- arguments ------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: the options work before or after the command; the top level sets the defaults.
    common.add_argument("--url", default=argparse.SUPPRESS, help="service URL (default: $COUNCILS_URL or %s)" % DEFAULT_URL)
    common.add_argument("--token", default=argparse.SUPPRESS, help="API token (visible in ps: prefer --token-file)")
    common.add_argument("--token-file", default=argparse.SUPPRESS, help="file holding the API token")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON only")
    common.add_argument("--http-timeout", type=float, default=argparse.SUPPRESS, help="seconds per request (default 30)")

    ap = argparse.ArgumentParser(prog="councils", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    # Not `parents=[common]`: set_defaults would change the actions the subcommands share.
    ap.add_argument("--url", default=EnvSettings().url,
                    help="service URL (default: $COUNCILS_URL or %s)" % DEFAULT_URL)
    ap.add_argument("--token-file", default=None,
                    help="file holding the API token (default: $COUNCILS_API_TOKEN_FILE; not shown in ps)")
    ap.add_argument("--token", default=None,
                    help="API token (default: $COUNCILS_API_TOKEN)")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--http-timeout", type=float, default=30.0, help="seconds per request (default 30)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", parents=[common], help="start the local service in the background")
    p.add_argument("--config", help="Serve config (default: the launcher's, configs/local.yaml)")
    p.add_argument("--data-dir", help="default: $COUNCILS_DATA_DIR or .data (PID file and log go here)")
    p.add_argument("--http-port", type=int)
    p.add_argument("--no-wait", action="store_true", help="return at once instead of waiting for /readyz")
    p.add_argument("--ready-timeout", type=float, default=900)
    p.set_defaults(func=cmd_up, remote=False)

    p = sub.add_parser("down", parents=[common], help="stop the service started by `up`")
    p.add_argument("--data-dir")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait after SIGINT")
    p.set_defaults(func=cmd_down, remote=False)

    p = sub.add_parser("status", parents=[common], help="readiness and per-council figures")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("list", parents=[common], help="list the councils")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[common], help="one council and its agents")
    p.add_argument("role")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("create", parents=[common], help="create (or replace) a council")
    p.add_argument("role")
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--engine", help="default: the service's first engine")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--file", help="JSON or YAML body of PUT /v1/councils/{role} (agents, rounds, scoring)")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("delete", parents=[common], help="delete a council")
    p.add_argument("role")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("deliberate", parents=[common], help="run a deliberation, showing its stages live")
    p.add_argument("role")
    p.add_argument("task")
    p.add_argument("--rubric")
    p.add_argument("--requirement", action="append", help="repeatable")
    p.add_argument("--rounds", type=int)
    p.add_argument("--agents", dest="num_agents", type=int)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--timeout-s", type=float)
    p.add_argument("--task-id")
    p.set_defaults(func=cmd_deliberate)
    return ap


def resolve_token(args, environ=None) -> str | None:
    """--token, --token-file, then the environment: for council writes the admin token first
    ($COUNCILS_ADMIN_TOKEN_FILE, $COUNCILS_ADMIN_TOKEN), then $COUNCILS_API_TOKEN_FILE, $COUNCILS_API_TOKEN."""
    env = EnvSettings.from_env(environ)
    if args.token:
        return args.token
    sources = [("file", args.token_file)] if args.token_file else []
    if getattr(args, "func", None) in (cmd_create, cmd_delete):
        sources += [("file", env.admin_token_file), ("value", env.admin_token)]
    sources += [("file", env.api_token_file), ("value", env.api_token)]
    for kind, value in sources:
        if not value:
            continue
        if kind == "value":
            return value.strip()
        try:
            token = Path(value).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"token file {value} cannot be read: {type(exc).__name__}") from None
        if not token:
            raise CliError(f"token file {value} is empty")
        return token
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        token = resolve_token(args) if getattr(args, "remote", True) else None
    except CliError as exc:
        print(f"councils: error: {terminal_safe(exc)}", file=sys.stderr, flush=True)
        return 2
    api = Api(args.url, token, args.http_timeout) if getattr(args, "remote", True) else None
    try:
        return args.func(api, args)
    except CliError as exc:
        print(f"councils: error: {terminal_safe(exc)}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if api is not None:
            api.close()


if __name__ == "__main__":
    sys.exit(main())
