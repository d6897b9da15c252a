"""End to end, as a user runs it: the `make run` launcher on the real vLLM CPU engine (SmolLM2-135M).

Starts the launcher (embedded Valkey, Valkey-backed Ray head, `serve deploy configs/local.yaml`),
deliberates over HTTP, stops it with Ctrl-C (SIGINT), starts it again on the same data directory and
checks that every council came back from Valkey unchanged, with no init step.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from councils_local.valkey_server import free_port
from tests.ray_cluster import LOCK_PATH, ROOT, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ROLES = {"DEV", "QA", "ARCHITECT", "DEVOPS", "DATA"}


class Launcher:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.ports = {"valkey": free_port(), "ray": free_port(), "dashboard": free_port(), "http": free_port(),
                      "metrics": free_port()}
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / "launcher.log"
        self.api_token = f"e2e-api-token-{os.urandom(8).hex()}"
        self.token_file = data_dir / "api-token"
        self.token_file.write_text(self.api_token + "\n")
        self.token_file.chmod(0o600)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def gcs(self) -> str:
        return f"127.0.0.1:{self.ports['ray']}"

    def start(self, timeout_s: float = 900) -> None:
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        out = open(self.log, "ab")
        env = {k: v for k, v in os.environ.items() if k != "COUNCILS_VALKEY_URL"}
        env["COUNCILS_API_TOKEN_FILE"] = str(self.token_file)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "councils_local.launcher", "--config", str(ROOT / "configs" / "local.yaml"),
             "--data-dir", str(self.data_dir), "--valkey-port", str(self.ports["valkey"]),
             "--ray-port", str(self.ports["ray"]), "--dashboard-port", str(self.ports["dashboard"]),
             "--http-port", str(self.ports["http"]), "--metrics-port", str(self.ports["metrics"])],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        out.close()
        wait_until(lambda: self._ready(), timeout_s, interval=0.25, what="launcher READY")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"launcher exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return "READY on" in self.log.read_text()[self.log_offset:]

    def ctrl_c(self, timeout_s: float = 120) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.ctrl_c()


def leftover_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


# These modules share one `make run` (its start is ~50 s, mostly the engine loading): conftest.py runs
# test_topology_make_run.py right before this one, and the launcher is stopped after the last of them that runs.
MAKE_RUN_MODULES = ("test_topology_make_run.py", "test_e2e_make_run.py")
_shared: dict = {}


def _stop_shared() -> None:
    run, lock = _shared.pop("run", None), _shared.pop("lock", None)
    try:
        if run:
            run.kill()
    finally:
        if lock:
            lock.close()  # releases the flock


def shared_launcher(request, tmp_path_factory) -> Launcher:
    """The running `make run` launcher of the make-run modules, started (under the test-cluster lock) if there is
    none or it is not running (a failed test may have left it stopped). Stopped at the end of the session at the
    latest, whatever happens."""
    if "run" not in _shared:
        _shared["lock"] = open(LOCK_PATH, "w")
        fcntl.flock(_shared["lock"], fcntl.LOCK_EX)  # one Ray cluster at a time on this machine
        request.config.add_cleanup(_stop_shared)
        _shared["run"] = Launcher(tmp_path_factory.mktemp("make-run"))
    run = _shared["run"]
    if run.proc is None or run.proc.poll() is not None:
        try:
            run.start()
        except BaseException:
            _stop_shared()
            raise
    return run


def next_module_shares_it(request) -> bool:
    """Whether the test after this module's last one is in the other make-run module."""
    items = request.session.items
    mine = [n for n, item in enumerate(items) if getattr(item, "module", None) is request.module]
    if not mine or mine[-1] + 1 >= len(items):
        return False
    after = items[mine[-1] + 1].path.name
    return after in MAKE_RUN_MODULES and after != Path(request.module.__file__).name


@pytest.fixture(scope="module")
def launcher(request, tmp_path_factory):
    yield shared_launcher(request, tmp_path_factory)
    if not next_module_shares_it(request):
        _stop_shared()


def _started_by(launcher) -> list:
    """Every process the launcher started: its descendants, and those in its sessions (Ray workers may be
    re-parented), identified by the cluster's ports and temp dir in their command lines as a fallback."""
    import psutil

    root = psutil.Process(launcher.proc.pid)
    procs = {p.pid: p for p in root.children(recursive=True)}
    markers = (f"councils-ray-{launcher.ports['ray']}", f"127.0.0.1:{launcher.ports['valkey']}",
               f"--gcs-address=127.0.0.1:{launcher.ports['ray']}")
    for p in psutil.process_iter(["cmdline"]):
        if any(m in " ".join(p.info["cmdline"] or []) for m in markers):
            procs[p.pid] = p
    return list(procs.values())


def test_make_run_keeps_secrets_off_command_lines_and_ray_jobs_need_the_token(launcher):
    """Issue 12: the Valkey password, the API token and Ray's token appear in no /proc/<pid>/cmdline of any
    process `make run` started (nor in its log), the secret files are 0600, Ray token auth is on (an
    unauthenticated POST /api/jobs/ is refused), and the dashboard is on loopback only."""
    import json
    import stat
    import urllib.request

    valkey_password = (launcher.data_dir / "valkey" / "password").read_text().strip()
    gcs_password = (launcher.data_dir / "valkey" / "gcs-password").read_text().strip()
    ray_token = (launcher.data_dir / "ray-auth-token").read_text().strip()
    for path in (launcher.data_dir / "valkey" / "password", launcher.data_dir / "valkey" / "gcs-password",
                 launcher.data_dir / "ray-auth-token", launcher.data_dir / "valkey" / "valkey.conf"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    secrets = {"valkey password": valkey_password, "gcs's valkey password": gcs_password, "ray token": ray_token,
               "api token": launcher.api_token}
    procs = _started_by(launcher)
    names = " ".join(sorted({p.name() for p in procs}))
    for needed in ("valkey-server", "gcs_server", "raylet"):
        assert needed in names, names
    assert len(procs) >= 10, names  # head, GCS, raylet, dashboard, agents, Serve, replica, councils, engine
    for p in procs:
        try:
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        for what, secret in secrets.items():
            assert secret not in cmdline, f"{what} on the command line of {p.pid} {p.name()}"
    log = launcher.log.read_text()
    assert all(secret not in log for secret in secrets.values())
    # The API token is in force (the launcher passed COUNCILS_API_TOKEN_FILE through to the replicas).
    assert httpx.get(f"{launcher.url}/v1/councils").status_code == 401
    # Ray's Jobs API: refused without the token, on a dashboard bound to 127.0.0.1.
    dashboard = f"http://127.0.0.1:{launcher.ports['dashboard']}"
    request = urllib.request.Request(f"{dashboard}/api/jobs/", data=json.dumps({"entrypoint": "env"}).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(request, timeout=10)
    assert exc.value.code in (401, 403)
    ok = httpx.get(f"{dashboard}/api/version", headers={"Authorization": f"Bearer {ray_token}"})
    assert ok.status_code == 200
    import psutil

    listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == launcher.ports["dashboard"]}
    assert listening and all(ip.startswith("127.") for ip in listening), listening


def test_make_run_deliberates_on_vllm_and_restores_after_restart(launcher):
    http = httpx.Client(base_url=launcher.url, timeout=600, headers={"Authorization": f"Bearer {launcher.api_token}"})
    councils = http.get("/v1/councils").json()["councils"]
    assert {c["role"] for c in councils} == ROLES
    assert all(len(c["agents"]) == 3 for c in councils)

    # A council created through the API, to be restored after the restart.
    r = http.put("/v1/councils/SEC", json={"agents": [
        {"id": "sec-1", "engine": "smollm2", "persona": "You are a security reviewer.", "max_tokens": 32},
        {"id": "sec-2", "engine": "smollm2", "persona": "You are a pragmatic engineer.", "max_tokens": 32}]})
    assert r.status_code == 201, r.text
    sec = r.json()

    # The DEV council, edited by round-tripping its GET body: peers rank on every deliberation (by default
    # only when the verifiers leave a tie and no tests ran), so this run shows every agent's ranking.
    dev = http.get("/v1/councils/DEV").json()
    dev["scoring"]["peer_rank"] = "always"
    r = http.put("/v1/councils/DEV", json=dev)
    assert r.status_code == 200, r.text
    drafts = r.json()["drafts_per_agent"]
    councils = http.get("/v1/councils").json()["councils"]  # the DEV council as edited
    assert {c["role"]: c for c in councils}["DEV"]["scoring"]["peer_rank"] == "always"

    # A verified deliberation: the request's tests run against every proposal, in the sandbox, as Ray tasks.
    r = http.post("/v1/deliberations", params={"wait": "true"}, json={
        "role": "DEV", "task": "Write a Python function is_palindrome(s) that ignores case.",
        "max_tokens": 96, "constraints": {
            "requirements": ["ignore case"],
            "tests": "assert is_palindrome('Aba')\nassert not is_palindrome('ab')\nassert is_palindrome('')"}})
    assert r.status_code == 200, r.text
    rec = r.json()
    res = rec["result"]
    assert rec["status"] == "completed"
    assert len(res["proposals"]) == 3 and [p["rank"] for p in res["proposals"]] == [1, 2, 3]
    from actors.scoring import all_verified, settled, verifier_key
    from actors.models.records import Proposal
    from tests.fakes import drafted

    early_stop = "revise-1" in rec["stages_skipped"]

    first_drafts = [drafted(p) for p in res["proposals"]]
    # Drafting stops at the first wave with a draft that passes the tests; early stop then skips the round.
    waves = {len(p.versions) for p in first_drafts}
    assert len(waves) == 1 and 1 <= waves.pop() <= drafts
    assert early_stop == (settled(first_drafts) or all_verified(first_drafts))
    for p, proposal in zip(res["proposals"], first_drafts):
        assert p["content"].strip()  # model-written
        revisions = [v for v in p["versions"] if v["round"] == 1]
        if early_stop or all_verified([proposal]):
            assert not revisions
        else:  # revised, answering a critique (an agent's, or the verifier findings)
            assert len(revisions) == 1 and revisions[0]["critique"].strip()
        assert all(v["content"].strip() for v in p["versions"])
        for v in p["versions"]:  # per-proposal test results, for every version
            tests = {c["name"]: c for c in v["checks"]}["python.tests"]
            assert tests["status"] in ("passed", "failed") and tests["message"]
        assert p["score"] is None or 0.0 <= p["score"] <= 1.0
    # Peer rankings from every agent, each of the two others, constrained to parse.
    assert sorted(r["reviewer"] for r in res["rankings"]) == sorted(p["author"] for p in res["proposals"])
    for ranking in res["rankings"]:
        assert ranking["parsed"] and ranking["reviewer"] not in ranking["order"] and len(ranking["order"]) == 2
    assert res["decided_by"] in ("verifiers", "votes", "peer_rank", "tie_break") and res["reason"]
    # The winner is consistent with the rule: no candidate verifies better than it.
    proposals = [Proposal.model_validate(p) for p in res["proposals"]]
    best = max(verifier_key(v) for p in proposals for v in p.versions)
    assert verifier_key(proposals[0].current) == best
    assert res["winner_id"] == res["proposals"][0]["author"]
    assert res["written_by"] == proposals[0].current.written_by
    assert res["duration_s"] > 0 and res["usage"]["completion_tokens"] > 0 and res["usage"]["prompt_tokens"] > 0

    # make run's cluster needs Ray's token: ask it from a process started with the token's mode and file (Ray
    # reads RAY_AUTH_MODE once per process, and this one runs the test clusters without it).
    script = ("import json, ray; from ray.util.state import list_actors; "
              f"ray.init(address={launcher.gcs!r}, log_to_driver=False); "
              "print(json.dumps([a.name for a in list_actors(filters=[('state', '=', 'ALIVE')], limit=1000)]))")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(launcher.data_dir / "ray-auth-token")}
    listed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    alive = set(json.loads(listed.stdout.strip().splitlines()[-1]))
    assert {f"council-{r}" for r in ROLES} | {"council-SEC", "engine-smollm2"} <= alive

    # Ctrl-C stops everything the launcher started.
    assert launcher.ctrl_c() == 0
    deadline = time.time() + 2  # what the launcher stopped may take a moment to be reaped: at most 2 s
    while time.time() < deadline and (leftover_processes(f"councils-ray-{launcher.ports['ray']}")
                                      or leftover_processes(f"127.0.0.1:{launcher.ports['valkey']}")):
        time.sleep(0.1)
    assert leftover_processes(f"councils-ray-{launcher.ports['ray']}") == []
    assert leftover_processes(f"127.0.0.1:{launcher.ports['valkey']}") == []  # valkey-server's process title

    # Again: every council is back from Valkey, unchanged, the PUT one included.
    launcher.start()
    http = httpx.Client(base_url=launcher.url, timeout=600, headers={"Authorization": f"Bearer {launcher.api_token}"})
    after = {c["role"]: c for c in http.get("/v1/councils").json()["councils"]}
    assert after["SEC"] == sec
    assert {role: after[role] for role in ROLES} == {c["role"]: c for c in councils if c["role"] in ROLES}
    assert http.get(f"/v1/deliberations/{rec['id']}").json()["result"] == res


def test_without_tests_the_candidates_are_run_and_architect_runs_the_tests_it_is_given(launcher):
    """Issue 22 over HTTP on the real engine: a DEV deliberation with no tests gets evidence from running every
    candidate (python.runs, behaviour groups), and Python tests sent to ARCHITECT run (python.tests)."""
    from actors.models.records import Version
    from actors.scoring import outcome

    http = httpx.Client(base_url=launcher.url, timeout=600, headers={"Authorization": f"Bearer {launcher.api_token}"})
    r = http.post("/v1/deliberations", params={"wait": "true"}, json={
        "role": "DEV", "task": "Write a Python function square(x) that returns x times x.", "max_tokens": 96})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["status"] == "completed"
    res = rec["result"]
    versions = [v for p in res["proposals"] for v in p["versions"]]
    behaviour = []
    for v in versions:
        checks = {c["name"]: c for c in v["checks"]}
        assert checks["python.tests"]["status"] == "skipped"
        if checks.get("python.parse", {}).get("status") == "passed":  # code that parses is run
            assert checks["python.runs"]["status"] in ("passed", "failed", "skipped") and checks["python.runs"]["message"]
        if checks.get("python.runs", {}).get("status") == "passed":
            b = checks["generated.behaviour_agreement"]
            assert b["group"] and b["evidence"] >= 1 and "agree" in b["message"]
            behaviour.append(b)
    groups = {b["group"] for b in behaviour}
    # The test writer's asserts: every candidate that ran was checked against those that call square.
    from actors.verifiers.behaviour import examples_for

    written = examples_for(rec["generated_tests"], "square")
    for v in versions:
        checks = {c["name"]: c for c in v["checks"]}
        if written and checks.get("python.runs", {}).get("status") == "passed":
            assert checks["generated.tests"]["tests_total"] == len(written), checks["generated.tests"]
    outcomes = {str(outcome(Version.model_validate(v))) for v in versions}
    if behaviour and len(outcomes) > 1:  # the execution evidence separated the winner from another outcome, or the
        # judges of two tied behaviour groups were asked before the peers or the hash could decide
        assert (res["decided_by"] in ("verifiers", "generated_evidence", "distinguishing_inputs")
                or res["judgements"]), res["reason"]
    print(f"DEV without tests: {len(rec['generated_tests'])} assert(s) written ({len(written)} runnable), "
          f"{len(versions)} versions, {len(behaviour)} ran, {len(groups)} behaviour group(s), "
          f"decided_by {res['decided_by']}: {res['reason']}")

    r = http.post("/v1/deliberations", params={"wait": "true"}, json={
        "role": "ARCHITECT", "task": "Write a Python function add(a, b) that returns a + b, and say where it belongs.",
        "max_tokens": 64, "constraints": {"tests": "assert add(1, 2) == 3\nassert add(-1, 1) == 0"}})
    assert r.status_code == 200, r.text
    for p in r.json()["result"]["proposals"]:
        for v in p["versions"]:
            tests = {c["name"]: c for c in v["checks"]}["python.tests"]
            assert tests["status"] in ("passed", "failed") and tests["tests_total"] == 2


@contextlib.contextmanager
def viewer(launcher, tmp_path):
    """/ui of the make run stack in headless Chromium (Debian's), signed in with the stack's token."""
    from tests.test_ui_browser import CHROMIUM, FLAGS, sign_in

    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (`make install` installs it as root)")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=FLAGS)
        context.set_default_timeout(60_000)
        try:
            page = context.new_page()
            sign_in(page, launcher.url, launcher.api_token)
            yield page
        finally:
            context.close()


def test_the_council_viewer_watches_a_real_deliberation_live_and_after_a_reload(launcher, tmp_path):
    """Issue 27 on the real stack: in headless Chromium, /ui signs in with make run's token, starts a DEV
    deliberation from the form on vLLM, shows its stages as they arrive, is reloaded mid-deliberation and still
    shows every event exactly once (the ids the API's event stream serves), and marks the winner with decided_by.
    (A proposal holding <script> is shown as text: tests/test_ui_browser.py, where the proposal can be chosen.)"""
    from tests.test_ui_browser import shown_events, start_from_form

    with viewer(launcher, tmp_path) as page:
        delib_id = start_from_form(page, "DEV", "Write a Python function cube(x) that returns x to the power of three.",
                                   rounds="1", max_tokens="64")
        page.wait_for_selector("#d-events li[data-kind='stage.started']")  # live, before the deliberation ends
        page.reload()
        page.wait_for_selector("#d-events li")
        page.wait_for_selector("#d-events li[data-kind=completed]", timeout=600_000)
        shown = shown_events(page)
        served = []
        with httpx.stream("GET", f"{launcher.url}/v1/deliberations/{delib_id}/events", timeout=60,
                          headers={"Authorization": f"Bearer {launcher.api_token}"}) as r:
            for line in r.iter_lines():
                if line.startswith("id:"):
                    served.append(line[3:].strip())
        assert [eid for eid, _ in shown] == served and len(set(served)) == len(served)
        record = httpx.get(f"{launcher.url}/v1/deliberations/{delib_id}", timeout=60,
                           headers={"Authorization": f"Bearer {launcher.api_token}"}).json()
        page.wait_for_selector(".card.winner")
        assert page.locator(".card.winner .decided-by").text_content() == record["result"]["decided_by"]
        assert page.locator(".card.winner .reason").text_content() == record["result"]["reason"]
        assert page.evaluate("window.__pwned") is None


def test_the_council_viewer_shows_a_real_proposal_holding_markup_as_text(launcher, tmp_path):
    """Issue 27 on the real stack: a proposal that holds <script> (the model asked to repeat a line of markup) is
    shown as text in its card and runs nothing. Skipped when no proposal of the model holds it this time: then
    only tests/test_ui_browser.py, whose proposal is chosen, shows it."""
    from tests.test_ui_browser import start_from_form

    markup = "<script>window.__pwned = 1</script>"
    with viewer(launcher, tmp_path) as page:
        delib_id = start_from_form(page, "ARCHITECT", f"Repeat this line exactly, as it is, and nothing else: {markup}",
                                   rounds="0", max_tokens="48")
        page.wait_for_selector("#d-events li[data-kind=completed]", timeout=600_000)
        page.wait_for_selector(".card")
        record = httpx.get(f"{launcher.url}/v1/deliberations/{delib_id}", timeout=60,
                           headers={"Authorization": f"Bearer {launcher.api_token}"}).json()
        holding = [v for p_ in record["result"]["proposals"] for v in p_["versions"] if "<script" in v["content"]]
        shown = " ".join(page.locator(".card").all_text_contents())
        pwned = page.evaluate("window.__pwned")
        injected = page.locator("#d-cards script, #d-events script").count()
    assert pwned is None and injected == 0
    if not holding:
        pytest.skip("no proposal of the model held <script> this time")
    assert "<script" in shown  # as text, in the card


def test_real_vllm_engine_core_sigkilled_mid_deliberation_completes(launcher):
    """Issue 16: SIGKILL the real vLLM engine-core process (not a fake engine, not a graceful stop) while a
    deliberation is generating: the engine actor starts a new engine core and the deliberation completes."""
    import psutil

    http = httpx.Client(base_url=launcher.url, timeout=600, headers={"Authorization": f"Bearer {launcher.api_token}"})

    def engine_cores() -> list:
        return [p for p in _started_by(launcher) if "EngineCore" in p.name() or
                "EngineCore" in " ".join(p.cmdline() if p.is_running() else [])]

    (core,) = wait_until(lambda: engine_cores() or None, 300, interval=0.5, what="the engine-core process")
    r = http.post("/v1/deliberations", json={"role": "QA", "task": "Plan the tests of a login form.",
                                             "max_tokens": 64, "rounds": 1, "constraints": {"timeout_s": 900}})
    assert r.status_code == 202, r.text
    delib_id = r.json()["id"]
    wait_until(lambda: http.get(f"/v1/deliberations/{delib_id}").json()["status"] == "in_progress", 120,
               interval=0.2, what="the deliberation running")
    core.send_signal(signal.SIGKILL)
    assert wait_until(lambda: not core.is_running() or core.status() == psutil.STATUS_ZOMBIE, 30, interval=0.2,
                      what="the engine core gone")
    rec = wait_until(lambda: (x := http.get(f"/v1/deliberations/{delib_id}").json())["status"]
                     in ("completed", "failed", "timeout") and x, 900, interval=0.5, what="the deliberation finished")
    assert rec["status"] == "completed", rec.get("error")
    assert rec["result"]["proposals"] and all(p["content"].strip() for p in rec["result"]["proposals"])
    (new_core,) = engine_cores()
    assert new_core.pid != core.pid  # a new engine core serves now
