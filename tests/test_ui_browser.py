"""The council viewer (/ui) in a real browser: headless Chromium from Debian (/usr/bin/chromium, installed by
`make install` as root) driven by Playwright's Python package (never `playwright install`), against the real routes
and CouncilService on the in-memory store, served by uvicorn in a thread (as tests/test_cli.py does). A submitted
deliberation runs the real protocol (actors/protocol.py) in the server's event loop on the deterministic fake
generator and verifier (tests/fakes.py), writing its checkpoints and events to the store, so the page sees the same
record and SSE stream the service serves. No Ray, no Valkey.

What it proves: without a token only the login field shows; a read token shows no admin action, an admin token
does, and an open API (no token configured, as under `make run`) needs no login; a deliberation started from the form streams its stages live; the first event stream is cut by the server
and the page resumes with Last-Event-ID; a reload mid-deliberation shows every event again exactly once and resumes
after the last one; the winner's card carries decided_by; a proposal holding <script> and an onerror handler is
rendered as text and runs nothing; the page raises no CSP violation. COUNCILS_UI_SCREENSHOT=1 writes the finished
deliberation to docs/ui-screenshot.png."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from actors.models.records import CheckResult
from actors.protocol import deliberate
from serve_app.api import build_api
from serve_app.auth import ADMIN, READ, TokenAuth
from tests.fakes import FakeGenerator, FakeVerifier, default_response, fake_checks
from tests.memory_store import MemoryRegistry, MemoryStore, memory_service

pytestmark = [pytest.mark.unit, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
READ_TOKEN, ADMIN_TOKEN = "ui-read-token-0123456789abcdef", "ui-admin-token-fedcba9876543210"
TASK = "Write a Python function solve() that returns the word council."
TESTS = 'assert solve() == "council"'
INJECTION = '<script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">'
CUT_AFTER = 5  # the server ends the first event stream after this many events: the page must resume
PAUSE_AFTER = "critique-1"  # the deliberation waits after this stage until the test has reloaded the page


# -- the server: the real app over an in-memory store whose councils run the real protocol on fakes -----------
def responder(messages, seed, json_schema=None):
    """default_response, shaped so the deliberation has every kind of stage: no draft passes the request's test,
    the verifiers' findings are the critiques, and the pragmatic agent's revision passes and wins. The
    performance-minded agent writes markup that must show as text."""
    if json_schema is not None:
        return default_response(messages, seed, json_schema)
    user = messages[-1]["content"]
    persona = user.split("\n\n", 1)[0]
    if "Rewrite the proposal" in user:
        word = "council" if "pragmatic" in persona else "counsel"
        return f"Revised: return the exact word.\n\n```python\ndef solve():\n    return {word!r}\n```\n"
    if "performance-minded" in persona:
        return f"A fast one. {INJECTION}\n\n```python\ndef solve():\n    return None\n```\n"
    if "pragmatic" in persona:
        return "Simplest thing:\n\n```python\ndef solve():\n    # one word\n    return 'Council'\n```\n"
    return default_response(messages, seed)


def checks(text, request):
    """fake_checks plus a behaviour group (what solve() returns), as generated evidence would give one."""
    found = fake_checks(text, request)
    group = hashlib.sha256(text.split("```python", 1)[-1].encode()).hexdigest()[:6] if "```python" in text else None
    if group:
        found.append(CheckResult(name="generated.behaviour_agreement", status="passed",
                                 message="behaved like the versions of its group", group=group, evidence=0.5))
    return found


class CachingGenerator(FakeGenerator):
    """The fake generator, with two thirds of each prompt found in a (pretend) prefix cache."""

    async def generate(self, *args, **kwargs):
        completion = await super().generate(*args, **kwargs)
        return completion.model_copy(update={"cached_tokens": completion.prompt_tokens * 2 // 3})


class LiveStore(MemoryStore):
    """MemoryStore whose event reads block like XREAD BLOCK, with stream-like entry ids."""

    ids = itertools.count(1)

    def add_event(self, delib_id: str, kind: str, data: dict) -> None:
        self.events.setdefault(delib_id, []).append((f"{1_700_000_000_000 + next(self.ids)}-0", kind, data))

    async def read_events(self, delib_id, after="0-0", block_ms=None, count=100):
        deadline = time.monotonic() + (block_ms or 0) / 1000
        while True:
            found = await super().read_events(delib_id, after)
            if found or time.monotonic() >= deadline:
                return found[:count]
            await asyncio.sleep(0.02)

    async def active_count(self, role: str) -> int:
        return sum(1 for r in self.records.values() if r.request.role == role and not r.finished)


class Sink:
    """The protocol's RecordSink on the LiveStore; waits after PAUSE_AFTER until `gate` is set."""

    def __init__(self, store: LiveStore, gate: threading.Event):
        self.store, self.gate = store, gate

    async def checkpoint(self, record) -> None:
        self.store.records[record.id] = record.model_copy(deep=True)

    async def event(self, record, kind: str, data: dict) -> None:
        self.store.add_event(record.id, kind, data)
        if kind == "stage.completed" and data.get("stage") == PAUSE_AFTER:
            while not self.gate.is_set():
                await asyncio.sleep(0.05)


class RunningRegistry(MemoryRegistry):
    """Council handles whose submit runs the deliberation in the server's loop, as a council actor would."""

    def __init__(self, store: LiveStore, gate: threading.Event):
        super().__init__()
        self.store, self.gate, self.tasks = store, gate, set()

    async def submitted(self, role: str, delib_id: str):
        task = asyncio.get_running_loop().create_task(self.run(delib_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, delib_id: str) -> None:
        record = self.store.records[delib_id].model_copy(deep=True)
        spec = self.store.councils[record.request.role]
        record.council_version = spec.version
        try:
            await deliberate(record, spec, CachingGenerator(responder, delay=0.3), Sink(self.store, self.gate),
                             FakeVerifier(checks, delay=0.1))
            record.status, record.finished_at = "completed", time.time()
            self.store.records[delib_id] = record.model_copy(deep=True)
            self.store.add_event(delib_id, "completed", {"status": "completed", "winner_id": record.result.winner_id,
                                                         "score": record.result.proposals[0].score})
        except Exception as exc:  # the test sees it as a failed record
            record.status, record.error, record.finished_at = "failed", repr(exc), time.time()
            self.store.records[delib_id] = record.model_copy(deep=True)
            self.store.add_event(delib_id, "failed", {"status": "failed", "error": repr(exc)})


class CutFirstStream:
    """ASGI wrapper: notes the Last-Event-ID of every event-stream request, and ends the first one after
    CUT_AFTER events (as a dropped connection would), telling the app the client went away."""

    def __init__(self, app):
        self.app = app
        self.last_event_ids: list[str | None] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/events"):
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"last-event-id")
        self.last_event_ids.append(header.decode() if header else None)
        if len(self.last_event_ids) > 1:
            return await self.app(scope, receive, send)
        closed = asyncio.Event()
        sent = 0

        async def cut_send(message):
            nonlocal sent
            if closed.is_set():
                return
            await send(message)
            if message["type"] == "http.response.body" and b"id:" in message.get("body", b""):
                sent += 1
                if sent >= CUT_AFTER:
                    closed.set()
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def cut_receive():
            if closed.is_set():
                return {"type": "http.disconnect"}
            incoming = asyncio.ensure_future(receive())
            cut = asyncio.ensure_future(closed.wait())
            done, pending = await asyncio.wait({incoming, cut}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            return incoming.result() if incoming in done else {"type": "http.disconnect"}

        await self.app(scope, cut_receive, cut_send)


@contextlib.contextmanager
def serving(tokens: dict[str, str]):
    """(url, service, gate, wrapper) of the real app on a free port with these tokens ({}: an open API)."""
    gate = threading.Event()
    service = memory_service()
    store = LiveStore()
    store.councils = service.store.councils
    service.store = store
    service.registry = RunningRegistry(store, gate)
    service.restored = service.engines_ready = True
    wrapper = CutFirstStream(build_api(service, TokenAuth(tokens)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(wrapper, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", service, gate, wrapper
    finally:
        gate.set()
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server():
    """The app with tokens on: READ_TOKEN reads and deliberates, ADMIN_TOKEN writes councils too."""
    with serving({ADMIN: ADMIN_TOKEN, READ: READ_TOKEN}) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A persistent Chromium context on a fresh user-data dir (Debian's chromium, the flags above)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (`make install` installs it as root: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(20_000)
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.csp_violations = []  # console errors the CSP raised: inline script or style the page must not use
    page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text
            and page.csp_violations.append(m.text))
    yield page
    page.close()


def sign_in(page, url: str, token: str) -> None:
    page.goto(url + "/ui")
    page.wait_for_selector("#login-form input#token", state="visible")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#main", state="visible")
    page.wait_for_selector(".council[data-role=DEV]")


def start_from_form(page, role: str, task: str, **fields: str) -> str:
    """Start a deliberation from the page's form (`fields`: tests, rounds, agents, max_tokens as the inputs
    f-tests, f-rounds, f-agents, f-max-tokens take them); the id the page then shows."""
    page.select_option("#f-role", role)
    page.fill("#f-task", task)
    page.click("#start-form summary")
    for name, value in fields.items():
        page.fill(f"#f-{name.replace('_', '-')}", value)
    page.click("#f-submit")
    page.wait_for_function("() => /^#d=[0-9a-f]{32}$/.test(location.hash)")
    return page.evaluate("location.hash.slice(3)")


def shown_events(page) -> list[tuple[str, str]]:
    return [tuple(e) for e in
            page.eval_on_selector_all("#d-events li", "els => els.map(e => [e.dataset.eventId, e.dataset.kind])")]


# -- tests -------------------------------------------------------------------------------------------------------
def test_without_a_token_only_the_login_shows_and_a_wrong_token_is_refused(page, server):
    url = server[0]
    page.goto(url + "/ui")
    page.wait_for_selector("#login-form", state="visible")
    assert page.is_hidden("#main") and page.locator(".council").count() == 0
    assert page.locator("section:visible, main:visible").count() == 1  # the login section, nothing else
    page.fill("#token", "not-the-token")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('login-error').textContent.includes('refused')")
    assert page.is_hidden("#main")
    assert page.evaluate("sessionStorage.getItem('councils.token')") is None
    assert not page.csp_violations


def test_a_read_token_sees_no_admin_action_an_admin_token_does(page, server):
    url = server[0]
    sign_in(page, url, READ_TOKEN)
    assert "read scope" in page.text_content("#who")
    assert page.locator(".admin-action").count() == 0
    assert page.locator(".council").count() == 2 and "agent-dev-001" in page.text_content(".council[data-role=DEV]")
    page.click("#logout")
    page.wait_for_selector("#login-form", state="visible")
    assert page.evaluate("sessionStorage.getItem('councils.token')") is None
    sign_in(page, url, ADMIN_TOKEN)
    assert "admin scope" in page.text_content("#who")
    assert page.locator(".council[data-role=DEV] button.admin-action").count() == 3  # remove, per agent
    assert page.locator(".council[data-role=DEV] form.admin-action").count() == 1  # add agent
    page.click("#logout")
    assert not page.csp_violations


def test_an_open_api_needs_no_login_and_shows_the_admin_actions(page):
    """As under `make run`: no token configured (loopback only), so the page opens at once, as an admin would see it."""
    with serving({}) as (url, *_):
        page.goto(url + "/ui")
        page.wait_for_selector(".council[data-role=DEV]")
        assert page.is_hidden("#login") and page.is_hidden("#logout")
        assert "open API" in page.text_content("#who")
        assert page.locator(".council[data-role=QA] .admin-action").count() == 4
    assert not page.csp_violations


def test_the_sse_parser_on_split_chunks(page, server):
    """sse.js's parser, in the browser: fields split across chunks, CRLF and CR line ends, comments, an id that
    persists, multi-line data, retry."""
    page.goto(server[0] + "/ui")
    got = page.evaluate("""async () => {
        const { SSEParser } = await import('/ui/sse.js');
        const events = [], retries = [];
        const p = new SSEParser((e) => events.push(e), (ms) => retries.push(ms));
        for (const chunk of ['retry: 2000\\n\\nid: 1-0\\nev', 'ent: proposal\\ndata: {"a":', '1}\\n\\n: heartbeat\\n',
                             'data: x\\r', '\\ndata: y\\r\\n\\r\\n', 'id: 2-0\\revent: completed\\rdata: {}\\r\\r',
                             'data: unfinished'])
            p.push(chunk);
        return { events, retries };
    }""")
    assert got["retries"] == [2000]
    assert got["events"] == [{"id": "1-0", "event": "proposal", "data": '{"a":1}'},
                             {"id": None, "event": "message", "data": "x\ny"},
                             {"id": "2-0", "event": "completed", "data": "{}"}]


def test_a_deliberation_from_the_form_live_through_a_cut_stream_and_a_reload(page, server):
    url, service, gate, wrapper = server
    gate.clear()
    sign_in(page, url, READ_TOKEN)
    delib_id = start_from_form(page, "DEV", TASK, tests=TESTS, rounds="1", agents="3", max_tokens="200")
    record = service.store.records[delib_id]
    assert (record.request.role, record.request.task, record.request.constraints.tests) == ("DEV", TASK, TESTS)
    assert (record.request.rounds, record.request.num_agents, record.request.max_tokens) == (1, 3, 200)

    # Live: the stages arrive while the deliberation runs (it waits after critique-1 until the gate opens).
    page.wait_for_selector(f"#d-events li[data-kind='stage.completed']:has-text('{PAUSE_AFTER}')")
    assert page.get_attribute(".stage[data-stage=propose]", "data-state") == "done"
    assert page.get_attribute(".stage[data-stage=revise-1]", "data-state") == "pending"
    assert page.locator("#d-events li[data-kind=completed]").count() == 0
    served = [(eid, kind) for eid, kind, _ in service.store.events[delib_id]]
    assert shown_events(page) == served  # every event so far, once, in order, though the first stream was cut
    assert wrapper.last_event_ids[:2] == [None, served[CUT_AFTER - 1][0]]  # resumed right after the cut

    # A reload mid-deliberation: the events come back from this tab's memory, the stream resumes after the last.
    page.reload()
    page.wait_for_selector("#d-events li")
    assert shown_events(page) == served
    page.wait_for_function("() => document.getElementById('d-stream').textContent === 'live'")
    assert wrapper.last_event_ids[-1] == served[-1][0]
    gate.set()

    page.wait_for_selector("#d-events li[data-kind=completed]")
    served = [(eid, kind) for eid, kind, _ in service.store.events[delib_id]]
    shown = shown_events(page)
    assert shown == served and len({eid for eid, _ in shown}) == len(shown)  # every event exactly once
    kinds = [kind for _, kind in shown]
    assert {"proposal", "critique", "revision", "stage.skipped", "score", "completed"} <= set(kinds)

    # The winner's card: the pragmatic agent's revision, decided by the verifiers, with its reason in words.
    final = service.store.records[delib_id]
    result = final.result
    assert result.decided_by == "verifiers" and result.written_by == "agent-dev-001"
    page.wait_for_selector(".card.winner")
    winner = page.locator(".card.winner")
    assert winner.count() == 1
    assert winner.get_attribute("data-author") == result.winner_id
    assert winner.get_attribute("data-version") == str(result.winner_version)
    assert winner.locator(".decided-by").text_content() == "verifiers"
    assert "verifiers decided" in winner.locator(".decided-words").text_content()
    assert winner.locator(".reason").text_content() == result.reason
    assert winner.locator("[data-fact=tests]").text_content() == "1/1"
    assert winner.locator("[data-fact='written by']").text_content() == "agent-dev-001"
    assert winner.locator("pre.code").count() == 1 and "return 'council'" in winner.locator("pre.code").text_content()
    assert winner.locator(".check-passed[data-check='python.tests']").count() == 1
    assert "group " in winner.locator(".checks").text_content()
    every_version = sum(len(p.versions) for p in result.proposals)
    assert page.locator(".card").count() == every_version == 6
    assert page.locator(".check-failed[data-check='python.tests']").count() == 5

    # The markup in a proposal is text: shown verbatim, never parsed, never run.
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#d-cards script, #d-cards img, #d-events script, #d-events img").count() == 0
    assert any(INJECTION in text for text in page.locator(".card .prose").all_text_contents())

    # Cost and time per stage, from the record's timings, and the totals.
    cached = [t for t in final.timings if t.cached_prompt_tokens]
    assert page.locator(".cost-chart rect.bar-cached").count() == len(cached) == 2  # propose and revise-1 call models
    rows = page.eval_on_selector_all(".cost-table tbody tr", "rs => rs.map(r => r.firstChild.textContent)")
    assert rows == [t.stage for t in final.timings] == ["propose", "critique-1", "revise-1", "score"]
    total = sum(t.prompt_tokens for t in final.timings)
    assert f"{total:,}" in page.text_content(".cost-table tfoot")

    # History: this deliberation with its status, the winner's first line, its duration and a link to its JSON.
    row = page.locator(f"#history tr[data-id='{delib_id}']")
    row.locator("td.status-completed").wait_for()
    assert row.locator(".winner-line").text_content() == "Revised: return the exact word."
    assert row.locator("a", has_text="JSON").get_attribute("href") == f"/v1/deliberations/{delib_id}"
    with page.context.expect_page() as opened:  # fetched with the token, opened as a blob in a new tab
        row.locator("a", has_text="JSON").click()
    record_tab = opened.value
    record_tab.wait_for_load_state()
    assert json.loads(record_tab.text_content("body"))["result"]["decided_by"] == "verifiers"
    record_tab.close()
    assert not page.csp_violations

    if os.environ.get("COUNCILS_UI_SCREENSHOT") == "1":
        page.evaluate("document.getElementById('d-events').scrollTop = 0")
        page.screenshot(path=str(ROOT / "docs" / "ui-screenshot.png"), full_page=True)
