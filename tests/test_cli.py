"""The `councils` command in-process (councils_local/cli), no Ray: main() against the real routes and CouncilService on
the in-memory store (tests/memory_store.py), served over HTTP by uvicorn in a thread, with a council that finishes a
deliberation as soon as it is submitted. Each command's output (plain and --json), bad usage (exit 2), HTTP errors
as one line without a traceback (exit 1), the token each command sends and where it reads it, the options before or
after the command, `up` and `down` by PID file (on a stand-in launcher), and output that is safe on a terminal."""

from __future__ import annotations

import json
import signal
import socket
import sys
import textwrap
import threading
import time

import httpx
import pytest
import uvicorn

from actors.models.records import DeliberationResult, Proposal, Usage
from councils_local.cli import main
from serve_app.api import build_api
from serve_app.auth import ADMIN, READ, TokenAuth
from tests.memory_store import MemoryRegistry, memory_service
from tests.ray_cluster import wait_until

pytestmark = pytest.mark.unit

READ_TOKEN, ADMIN_TOKEN = "cli-read-token-0123456789", "cli-admin-token-9876543210"
ANSWER = "def reverse(xs):\n    return xs[::-1]"


class FinishingRegistry(MemoryRegistry):
    """Council handles that complete (or, for a task saying "fail", fail) a deliberation when it is submitted."""

    def __init__(self):
        super().__init__()
        self.store = None

    async def submitted(self, role: str, delib_id: str):
        record = self.store.records[delib_id]
        events = [("1-0", "stage.started", {"stage": "propose"}),
                  ("2-0", "proposal", {"author": "agent-dev-001", "content": ANSWER}),
                  ("3-0", "stage.completed", {"stage": "propose"})]
        if "fail" in record.request.task:
            record.status, record.error = "failed", "every agent failed"
            events.append(("4-0", "failed", {"status": "failed", "error": "every agent failed"}))
        else:
            record.status = "completed"
            record.result = DeliberationResult(
                proposals=[Proposal(author="agent-dev-001", content=ANSWER, score=1.0, rank=1),
                           Proposal(author="agent-dev-002", content="no idea", score=0.25, rank=2)],
                winner_id="agent-dev-001", duration_s=1.5, usage=Usage(prompt_tokens=3, completion_tokens=4))
            events.append(("4-0", "completed", {"status": "completed", "winner_id": "agent-dev-001"}))
        record.finished_at = time.time()
        self.store.events[record.id] = events


@pytest.fixture(scope="module")
def server():
    """(url, service) of the real app on a free port, tokens on: READ_TOKEN reads, ADMIN_TOKEN writes too."""
    service = memory_service()
    service.registry = FinishingRegistry()
    service.registry.store = service.store
    service.restored = service.engines_ready = True
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = build_api(service, TokenAuth({ADMIN: ADMIN_TOKEN, READ: READ_TOKEN}))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield url, service
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def cli(server, capsys, monkeypatch):
    """run(*args) -> (exit status, stdout, stderr) of `councils --url <server> args...`, with the read token in
    $COUNCILS_API_TOKEN and the admin token in $COUNCILS_ADMIN_TOKEN."""
    for name in ("COUNCILS_URL", "COUNCILS_API_TOKEN_FILE", "COUNCILS_ADMIN_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COUNCILS_API_TOKEN", READ_TOKEN)
    monkeypatch.setenv("COUNCILS_ADMIN_TOKEN", ADMIN_TOKEN)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--url", server[0], *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def get(server, path: str):
    return httpx.get(server[0] + path, headers={"Authorization": f"Bearer {READ_TOKEN}"}).json()


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("up", "down", "status", "list", "show", "create", "delete", "deliberate", "--json", "--token-file"):
        assert name in text
    assert main(["deliberate", "-h"]) == 0 and "--requirement" in capsys.readouterr().out


def test_list_show_status(cli, server):
    code, out, err = cli("list")
    assert code == 0 and not err
    assert out.splitlines()[:2] == ["council  agents  engines  rounds  version",
                                    "-------  ------  -------  ------  -------"]
    assert out.splitlines()[2].split() == ["DEV", "3", "fake", "1", "1"]
    code, out, _ = cli("show", "DEV")
    assert code == 0 and out.startswith("council DEV (version 1, 1 peer-review round(s))\nagent ")
    assert "agent-dev-003" in out
    code, out, _ = cli("status")
    assert code == 0 and out.startswith(f"{server[0]}: ready (valkey ok, councils restored: True, engines ready: True)")
    assert "uptime " in out and "engines: fake" in out and "council  agents  rounds  active" in out


def test_json_output_is_the_service_s_json(cli, server):
    assert cli("--json", "list") == (0, json.dumps(get(server, "/v1/councils")["councils"], indent=2) + "\n", "")
    assert cli("list", "--json") == cli("--json", "list")  # options before or after the command
    assert cli("show", "QA", "--json")[1] == json.dumps(get(server, "/v1/councils/QA"), indent=2) + "\n"
    code, out, _ = cli("status", "--json")
    assert code == 0 and json.loads(out)["readyz"]["ready"] is True and "councils" in json.loads(out)["status"]


def test_create_and_delete_use_the_admin_token(cli, server, monkeypatch):
    code, out, err = cli("create", "CLITEST", "--agents", "2", "--rounds", "0")  # engine: the service's first
    assert (code, err) == (0, "") and out == "created council CLITEST: 2 agents, 0 round(s), version 1\n"
    code, out, _ = cli("--json", "create", "CLITEST", "--agents", "2", "--max-tokens", "64")
    spec = json.loads(out)
    assert code == 0 and spec["version"] == 2 and spec["agents"][0]["max_tokens"] == 64
    assert cli("delete", "CLITEST") == (0, "deleted council CLITEST\n", "")
    assert cli("delete", "CLITEST", "--json")[0] == 1  # gone
    monkeypatch.delenv("COUNCILS_ADMIN_TOKEN")  # the read token alone may not write
    code, out, err = cli("create", "CLITEST", "--engine", "fake")
    assert code == 1 and out == "" and err.startswith("councils: error: PUT /v1/councils/CLITEST: 403 ")


def test_create_from_a_file(cli, tmp_path):
    body = tmp_path / "council.yaml"
    body.write_text("agents:\n  - {id: file-1, engine: fake}\n  - {id: file-2, engine: fake}\nrounds: 2\n")
    assert cli("create", "FILED", "--file", str(body))[1] == "created council FILED: 2 agents, 2 round(s), version 1\n"
    assert cli("delete", "FILED")[0] == 0
    code, _, err = cli("create", "FILED", "--file", str(tmp_path / "nope.yaml"))
    assert code == 1 and err == f"councils: error: cannot read {tmp_path / 'nope.yaml'}: FileNotFoundError\n"


def test_deliberate_shows_progress_then_the_result(cli, server):
    code, out, err = cli("deliberate", "DEV", "Write a function that reverses a list.",
                         "--requirement", "reverse the list", "--requirement", "O(n)", "--task-id", "CLI-1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    delib_id = lines[0].split()[1]
    assert lines[0] == f"deliberation {delib_id} accepted by council DEV"
    for line in ("] propose: started", f"]   proposal by agent-dev-001 ({len(ANSWER)} chars)", "] propose: done",
                 "] completed: winner agent-dev-001"):
        assert any(x.startswith("[") and x.endswith(line) for x in lines), (line, out)
    assert out.index("propose: started") < out.index("rank  author")
    assert lines[1].endswith("] propose: started")  # the stream's `retry:` message is no line of progress
    assert f"winner: agent-dev-001   (1.5s, 7 tokens, deliberation {delib_id})" in out
    assert out.endswith("-" * 72 + "\n" + ANSWER + "\n")
    request = server[1].store.records[delib_id].request
    assert request.constraints.requirements == ["reverse the list", "O(n)"]
    assert request.constraints.metadata == {"task_id": "CLI-1"}

    code, out, err = cli("--json", "deliberate", "QA", "Plan tests.", "--rounds", "0", "--agents", "2")
    record = json.loads(out)
    assert (code, err) == (0, "")
    assert out == json.dumps(get(server, f"/v1/deliberations/{record['id']}"), indent=2) + "\n"
    assert (record["request"]["rounds"], record["request"]["num_agents"]) == (0, 2)


def test_a_failed_deliberation_exits_1(cli):
    code, out, _ = cli("deliberate", "DEV", "please fail")
    assert code == 1 and "] failed: every agent failed" in out
    assert out.splitlines()[-1].endswith(" failed: every agent failed")


def test_errors_are_one_line_without_a_traceback(cli, server, tmp_path):
    code, out, err = cli("show", "NOPE")
    assert (code, out) == (1, "") and err == "councils: error: GET /v1/councils/NOPE: 404 council 'NOPE' not found\n"
    code, out, err = cli("--token", "wrong-token-000000", "list")
    assert code == 1 and "401" in err and "wrong-token" not in err and "Traceback" not in err
    code, _, err = cli("deliberate", "DEV", "x", "--rounds", "9")
    assert code == 1 and err.startswith("councils: error: POST /v1/deliberations: 422 body.rounds")
    code, _, err = cli("list", "--token-file", str(tmp_path / "missing"))
    missing = tmp_path / "missing"
    assert code == 2 and err == f"councils: error: token file {missing} cannot be read: FileNotFoundError\n"
    code, _, err = cli("create", "lower")
    assert code == 1 and err.startswith("councils: error: invalid council:")
    code, _, err = cli("list", "--url", "http://127.0.0.1:9")
    assert code == 1 and err.startswith("councils: error: cannot reach http://127.0.0.1:9: ConnectError")


def test_bad_usage_exits_2(cli):
    for args in (("nope",), ("show",), ("deliberate", "DEV"), ("create", "X", "--agents", "three"),
                 ("list", "--http-timeout", "soon"), ("deliberate", "DEV", "t", "--no-such-option")):
        code, out, err = cli(*args)
        assert code == 2 and out == "" and "Traceback" not in err, args
    assert main([]) == 2


def test_up_waits_for_readyz_then_down_stops_it(cli, server, tmp_path, monkeypatch):
    from councils_local.cli import commands_local

    # Like the real launcher, the stand-in takes SIGINT (`down`'s Ctrl-C) even when started with it ignored (as
    # `make test &` starts everything); otherwise `down` waited out its 20 s and stopped it with SIGTERM.
    script = ("import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "print('fake launcher', flush=True); time.sleep(120)")
    launcher = [sys.executable, "-c", script]
    monkeypatch.setattr(commands_local, "launcher_command", lambda *args: launcher)
    data = str(tmp_path / "data")
    code, out, err = cli("--json", "up", "--data-dir", data)  # --url: the test server, which is ready
    info = json.loads(out)
    assert (code, err) == (0, "") and info["ready"] is True and info["log"] == str(tmp_path / "data" / "councils.log")
    assert cli("up", "--data-dir", data)[:2] == (1, "")  # already running
    assert cli("down", "--data-dir", data, "--timeout", "20") == (0, f"stopped (pid {info['pid']})\n", "")
    monkeypatch.setattr(commands_local, "launcher_command",
                        lambda *args: [sys.executable, "-c", "print('no config'); raise SystemExit(3)"])
    code, out, err = cli("up", "--data-dir", data, "--url", "http://127.0.0.1:9")  # the command's --url wins
    assert code == 1 and err.startswith("councils: error: the launcher exited with 3:\n")  # and the log's tail
    assert err.endswith("\nno config\n")
    assert not (tmp_path / "data" / "councils.pid").exists()


# -- up / down by PID file --------------------------------------------------------------------------------
FAKE_LAUNCHER = textwrap.dedent("""
    import signal, sys, time
    # As the real launcher does: Ctrl-C is handled whatever SIGINT disposition was inherited (a shell's
    # background job, nohup and `make test &` start it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("fake launcher up", flush=True)
    try:
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("fake launcher stopping", flush=True)
        sys.exit(0)
""")


def test_cli_up_and_down_by_pid_file(tmp_path, monkeypatch, capsys):
    from councils_local import cli
    from councils_local.cli import commands_local

    script = tmp_path / "fake_launcher.py"
    script.write_text(FAKE_LAUNCHER)
    monkeypatch.setattr(commands_local, "launcher_command", lambda *args: [sys.executable, str(script)])
    data = str(tmp_path / "data")
    # Started the way `make test &` starts everything: with SIGINT ignored, which a child inherits.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert cli.main(["up", "--data-dir", data, "--no-wait"]) == 0
    finally:
        signal.signal(signal.SIGINT, previous)
    info = json.loads((tmp_path / "data" / commands_local.PID_FILE).read_text())
    assert commands_local.read_pid(tmp_path / "data" / commands_local.PID_FILE)["pid"] == info["pid"]
    assert cli.main(["up", "--data-dir", data, "--no-wait"]) == 1  # one at a time
    assert "already running" in capsys.readouterr().err
    wait_until(lambda: "fake launcher up" in (tmp_path / "data" / commands_local.LOG_FILE).read_text(), 30, 0.1,
               what="fake launcher started")
    assert cli.main(["down", "--data-dir", data, "--timeout", "20"]) == 0
    assert f"stopped (pid {info['pid']})" in capsys.readouterr().out
    assert not (tmp_path / "data" / commands_local.PID_FILE).exists()
    assert "fake launcher stopping" in (tmp_path / "data" / commands_local.LOG_FILE).read_text()
    assert cli.main(["--json", "down", "--data-dir", data]) == 0
    assert json.loads(capsys.readouterr().out) == {"stopped": False, "running": False}
    # A stale PID file (a process that is not the one we started) is never signalled.
    (tmp_path / "data" / commands_local.PID_FILE).write_text(json.dumps({"pid": 1, "create_time": 0}))
    assert cli.main(["down", "--data-dir", data]) == 0 and "not running" in capsys.readouterr().out


# -- terminal-safe output, the token's sources -------------------------------------------------------------
def test_cli_output_is_terminal_safe(capsys):
    from councils_local.cli import render

    evil = "def f():\n\treturn 1\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\\x9b31m\u202eok\r"
    record = {"id": "d" * 32, "status": "completed", "result": {
        "winner_id": "a\x1b[31m1", "duration_s": 1.0, "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        "proposals": [{"rank": 1, "author": "a\x1b[31m1", "score": 1.0, "content": evil, "checks": []}]}}
    render.print_result(record)
    render.out(render.describe("failed", {"error": "boom\x1b[5m"}))
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed and "\x9b" not in printed and "\u202e" not in printed
    assert "def f():\n\treturn 1" in printed and "click" in printed


def test_cli_reads_its_token_from_a_file_or_the_environment(tmp_path):
    from councils_local.cli.client import CliError, resolve_token

    token_file = tmp_path / "token"
    token_file.write_text("file-token-123\n")
    admin_file = tmp_path / "admin"
    admin_file.write_text("admin-token-456\n")
    assert resolve_token(None, str(token_file), environ={}) == "file-token-123"
    assert resolve_token("given", str(token_file), environ={}) == "given"
    assert resolve_token(None, None, environ={"COUNCILS_API_TOKEN_FILE": str(token_file)}) == "file-token-123"
    assert resolve_token(None, None, environ={"COUNCILS_API_TOKEN": "env-token"}) == "env-token"
    env = {"COUNCILS_API_TOKEN_FILE": str(token_file), "COUNCILS_ADMIN_TOKEN_FILE": str(admin_file)}
    assert resolve_token(None, None, admin=True, environ=env) == "admin-token-456"  # create, delete
    assert resolve_token(None, None, environ=env) == "file-token-123"
    assert resolve_token(None, None, environ={}) is None
    with pytest.raises(CliError, match="cannot be read"):
        resolve_token(None, None, environ={"COUNCILS_API_TOKEN_FILE": str(tmp_path / "nope")})
