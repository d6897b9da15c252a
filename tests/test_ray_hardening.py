"""The hardened API on a real local Ray cluster: bearer token, limits, the OpenAI-compatible endpoint (with
the official `openai` client), the `councils` CLI, a bounded schemathesis fuzz of the OpenAPI document,
and the token absent from every log of the cluster.

One cluster for the module. The ingress is deployed with a token file in the replica's environment
(runtime_env), so the token itself never passes through Ray, and with a few limits set low.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import ray
from ray import serve

from actors.models.limits import Limits
from councils_local import cli
from serve_app.app import Ingress
from tests.ray_cluster import ROLES, LocalCluster, app_config, running_cluster, wait_until

pytestmark = pytest.mark.ray

TOKEN = f"cr-test-token-{uuid.uuid4().hex}"  # the admin token: every scope
READ_TOKEN = f"cr-read-token-{uuid.uuid4().hex}"  # read and deliberate only
LIMITS = Limits(max_task_chars=2000, max_rubric_chars=1000, max_active_per_council=2, max_active_total=6,
                max_councils=9, max_sse_connections=3)
FUZZ_EXAMPLES = 40  # per operation and mode: the whole fuzz stays within a couple of minutes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    token_file = work / "admin-token"
    token_file.write_text(TOKEN + "\n")
    read_file = work / "api-token"
    read_file.write_text(READ_TOKEN + "\n")

    def deploy_with_token(c: LocalCluster) -> None:
        from actors.models.councils import default_council

        serve.start(http_options={"host": "127.0.0.1", "port": c.http_port})
        # The five councils declared in the config (so they are config-owned: API writes to them are 409).
        declared = [{"role": r, **default_council(r, "fake", 3, 1, 32).model_dump(
            mode="json", include={"agents", "rounds", "scoring"})} for r in ROLES]
        config = app_config(c.valkey.url).model_copy(update={"limits": LIMITS, "public_docs": True})
        args = {**config.model_dump(mode="json"), "councils": declared}
        app = Ingress.options(ray_actor_options={
            "num_cpus": 0, "runtime_env": {"env_vars": {"COUNCILS_API_TOKEN_FILE": str(read_file),
                                                        "COUNCILS_ADMIN_TOKEN_FILE": str(token_file)}},
        }).bind(args)
        serve.run(app, name="councils", route_prefix="/")
        c.wait_ready()

    with running_cluster(work, deploy_app=deploy_with_token) as c:
        yield c


@pytest.fixture
def http(cluster):
    with httpx.Client(base_url=cluster.url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
def anon(cluster):
    with cluster.client() as client:
        yield client


# -- authentication ------------------------------------------------------------------------------------
def test_token_required_on_v1_and_health_stays_open(http, anon):
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert anon.get(path).status_code == 200, path
    for method, path in (("GET", "/v1/councils"), ("GET", "/v1/status"), ("GET", "/v1/models"),
                         ("POST", "/v1/deliberations"), ("DELETE", "/v1/councils/DEV")):
        r = anon.request(method, path, json={"role": "DEV", "task": "x"} if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer") and r.json()["error"]["status"] == 401
    r = anon.get("/v1/councils", headers={"Authorization": "Bearer wrong-token"})
    assert r.status_code == 401 and TOKEN not in r.text
    assert http.get("/v1/councils").status_code == 200
    assert http.get("/v1/councils/DEV").json()["role"] == "DEV"
    status = http.get("/v1/status").text
    assert TOKEN not in status and "redis://" not in status
    # /readyz: no internal details to anonymous callers; the persistence settings to token holders.
    assert set(anon.get("/readyz").json()) == {"ready", "valkey", "councils_restored", "engines_ready"}
    persistence = http.get("/readyz").json()["valkey_persistence"]
    assert persistence["appendfsync"] == "always" and persistence["maxmemory-policy"] == "noeviction"
    assert persistence["warnings"] == []


# -- scopes, config-owned councils, council caps (issue 12) --------------------------------------------------------
def test_read_token_403_on_writes_config_owned_409_and_max_councils(cluster, http, anon):
    read = {"Authorization": f"Bearer {READ_TOKEN}"}
    body = {"agents": [{"id": "a-1", "engine": "fake"}]}
    assert anon.get("/v1/councils", headers=read).status_code == 200
    for method, path in (("PUT", "/v1/councils/SCOPE"), ("DELETE", "/v1/councils/DATA"),
                         ("POST", "/v1/councils/DATA/agents"), ("DELETE", "/v1/councils/DATA/agents/agent-data-001")):
        r = anon.request(method, path, headers=read, json=body if method != "DELETE" else None)
        assert r.status_code == 403 and "admin token" in r.json()["error"]["message"], (method, path, r.text)
    r = anon.post("/v1/deliberations", headers=read, json={"role": "DATA", "task": "Design a table.", "rounds": 0})
    assert r.status_code == 202, r.text
    # A council declared in the deployed config: 409 naming it, for the admin token too; nothing changes.
    before = http.get("/v1/councils/DEV").json()
    for method, path in (("PUT", "/v1/councils/DEV"), ("DELETE", "/v1/councils/DEV")):
        r = http.request(method, path, json=body if method == "PUT" else None)
        assert r.status_code == 409 and "owned by the deployed config" in r.json()["error"]["message"], r.text
        assert "args.councils" in r.json()["error"]["message"]
    assert http.get("/v1/councils/DEV").json() == before
    # max_councils = 9: 5 declared + 4 more; the 10th is refused and gets no actor.
    created = []
    try:
        for i in range(4):
            r = http.put(f"/v1/councils/CAP{i}", json=body)
            assert r.status_code == 201, r.text
            created.append(f"CAP{i}")
        r = http.put("/v1/councils/CAP9", json=body)
        assert r.status_code == 422 and "limits.max_councils" in r.json()["error"]["message"], r.text
        assert http.get("/v1/councils/CAP9").status_code == 404
        with pytest.raises(ValueError):
            ray.get_actor("council-CAP9", namespace="councils")
    finally:
        for role in created:
            assert http.delete(f"/v1/councils/{role}").status_code == 200


# -- limits --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload,status,needle", [
    ({"role": "DEV", "task": "x" * 2001}, 422, "body.task: String should have at most 2000"),  # configured, under the ceiling
    ({"role": "DEV", "task": "x" * 100_001}, 422, "task"),  # over the hard ceiling
    ({"role": "DEV", "task": "x", "constraints": {"rubric": "r" * 1001}}, 422, "body.constraints.rubric"),
    ({"role": "DEV", "task": "x", "rounds": 6}, 422, "body.rounds"),
    ({"role": "DEV", "task": "x", "num_agents": 17}, 422, "body.num_agents"),
    ({"role": "DEV", "task": "x", "max_tokens": 4096}, 422, "body.max_tokens"),
    ({"role": "dev", "task": "x"}, 422, "role"),
    ({"role": "DEV\n", "task": "x"}, 422, "role"),
    ({"role": "DEV", "task": "x", "constraints": {"metadata": {"deep": [[[[[[[[[1]]]]]]]]]}}}, 422, "metadata"),
    ({"role": "DEV", "task": "x", "constraints": {"timeout_s": 0}}, 422, "timeout_s"),
])
def test_each_deliberation_limit_answers_its_status(http, payload, status, needle):
    r = http.post("/v1/deliberations", json=payload)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_council_limits_body_size_and_malformed_input(http):
    agents = [{"id": f"a-{i}", "engine": "fake"} for i in range(17)]
    r = http.put("/v1/councils/BIG", json={"agents": agents})
    assert r.status_code == 422 and "body.agents" in r.json()["error"]["message"]
    r = http.put("/v1/councils/BIG", json={"agents": agents[:2], "rounds": 6})
    assert r.status_code == 422 and "body.rounds" in r.json()["error"]["message"]
    r = http.put("/v1/councils/BIG", json={"agents": [{"id": "a", "engine": "fake", "max_tokens": 4096}]})
    assert r.status_code == 422 and "body.agents.0.max_tokens" in r.json()["error"]["message"]
    r = http.put("/v1/councils/BIG", content=b'{"agents": [{"id": "a", "engine": "fake"}], "scoring": {"weights": {"x": 1e400}}}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["error"]["message"]  # 1e400 is Infinity
    assert http.get("/v1/councils/BIG").status_code == 404  # nothing was written
    assert http.get("/v1/councils/DEV%0A").status_code == 422
    # Body size: announced, and chunked without a Content-Length.
    r = http.post("/v1/deliberations", content=b"x" * 300_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "262144" in r.json()["error"]["message"]

    def chunks():
        for _ in range(40):
            yield b" " * 8192

    r = http.post("/v1/deliberations", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    # JSON that Python parses but JSON forbids or Valkey cannot store: 422, never 5xx.
    for raw in (b'{"role": "DEV", "task": "x", "rounds": NaN}',
                b'{"role": "DEV", "task": "x", "constraints": {"metadata": {"k": "\\udfff"}}}',
                b'{"role": "DEV", "task": "\\ud800"}',
                b'{"role": "DEV", "task": "x", "constraints": {"metadata": {"k": Infinity}}}',
                b"[" * 5000 + b"]" * 5000, b"{not json", b'"just a string"', b"null"):
        r = http.post("/v1/deliberations", content=raw, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (raw[:60], r.status_code, r.text)
        assert r.json()["error"]["message"]


def test_concurrent_deliberations_per_council_429_with_retry_after(http):
    engine = ray.get_actor("engine-fake", namespace="councils")
    ray.get(engine.set_delay.remote(1.0))
    try:
        accepted = [http.post("/v1/deliberations", json={"role": "QA", "task": f"Plan tests {i}."}) for i in range(2)]
        assert [r.status_code for r in accepted] == [202, 202]
        r = http.post("/v1/deliberations", json={"role": "QA", "task": "One too many."})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"]["message"]
        # Other councils are not affected.
        assert http.post("/v1/deliberations", json={"role": "DATA", "task": "Design a table.", "rounds": 0}).status_code == 202
    finally:
        ray.get(engine.set_delay.remote(0.0))
    for a in accepted:
        wait_until(lambda: http.get(a.json()["status_url"]).json()["status"] == "completed", 60, what="QA done")
    assert http.post("/v1/deliberations", json={"role": "QA", "task": "Now there is room."}).status_code == 202


def _wait_idle(http, timeout_s: float = 120) -> None:
    wait_until(lambda: sum(r["active"] for r in http.get("/v1/status").json()["by_role"].values()) == 0,
               timeout_s, what="no deliberation pending or running")


def test_global_active_cap_holds_under_a_burst_of_50(http):
    """max_active_total = 6 (per council 2, five councils: 10 would fit without it): exactly 6 of 50 concurrent
    requests are accepted, the others get 429 with Retry-After, and none of them leaves a record behind."""
    from concurrent.futures import ThreadPoolExecutor

    _wait_idle(http)
    engine = ray.get_actor("engine-fake", namespace="councils")
    ray.get(engine.set_delay.remote(8.0))  # nothing finishes during the burst
    try:
        def post(i):
            with httpx.Client(base_url=str(http.base_url), timeout=60, headers=dict(http.headers)) as c:
                return c.post("/v1/deliberations", json={"role": ROLES[i % 5], "task": f"Burst {i}.", "rounds": 0})

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(post, range(50)))
        statuses = [r.status_code for r in answers]
        assert statuses.count(202) == 6, statuses
        assert set(statuses) == {202, 429}, statuses
        assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)
        assert any("the service is busy" in r.json()["error"]["message"] for r in answers if r.status_code == 429)
    finally:
        ray.get(engine.set_delay.remote(0.0))
    _wait_idle(http)


def test_sse_connection_cap_and_a_stream_past_its_deadline_ends(cluster, http, kv):
    from actors.models.records import DeliberationRecord
    from actors.models.requests import DeliberationRequest

    # A record stuck in_progress long past its deadline (no council runs it): its stream ends by itself.
    stuck = DeliberationRecord(request=DeliberationRequest(role="DEV", task="stuck", constraints={"timeout_s": 1}),
                               status="in_progress", created_at=time.time() - 3600)
    kv.set(f"councils:delib:{stuck.id}", stuck.model_dump_json(), ex=600)
    with httpx.Client(base_url=cluster.url, timeout=httpx.Timeout(30.0), headers=dict(http.headers)) as c:
        started = time.time()
        with c.stream("GET", f"/v1/deliberations/{stuck.id}/events") as r:
            text = "".join(r.iter_text())
        assert r.status_code == 200 and "event: closed" in text and time.time() - started < 20
        # Three open streams per replica (max_sse_connections): the fourth is a 429 with Retry-After.
        stuck.created_at = time.time()
        stuck.request.constraints.timeout_s = 600
        kv.set(f"councils:delib:{stuck.id}", stuck.model_dump_json(), ex=600)
        streams = [c.stream("GET", f"/v1/deliberations/{stuck.id}/events") for _ in range(3)]
        opened = [s.__enter__() for s in streams]
        try:
            assert [o.status_code for o in opened] == [200, 200, 200]
            r = c.get(f"/v1/deliberations/{stuck.id}/events")
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
            assert "max_sse_connections" in r.json()["error"]["message"]
        finally:
            for s in streams:
                s.__exit__(None, None, None)
        kv.delete(f"councils:delib:{stuck.id}")


# -- OpenAI-compatible endpoint, with the official client ---------------------------------------------
def test_openai_client_completion_and_stream(cluster, http):
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=f"{cluster.url}/v1", api_key=TOKEN, max_retries=0, timeout=120)
    assert {f"council-{r}" for r in ("DEV", "QA", "ARCHITECT", "DEVOPS", "DATA")} <= {m.id for m in client.models.list()}
    messages = [{"role": "system", "content": "Prefer the standard library."},
                {"role": "user", "content": "Write a Python function that reverses a list."}]

    completion = client.chat.completions.create(model="council-DEV", messages=messages)
    answer = completion.choices[0].message.content
    assert completion.object == "chat.completion" and completion.model == "council-DEV"
    assert completion.choices[0].finish_reason == "stop" and answer
    record = http.get(f"/v1/deliberations/{completion.id.removeprefix('chatcmpl-')}").json()
    assert record["status"] == "completed" and record["request"]["task"] == messages[1]["content"]
    assert record["request"]["constraints"]["rubric"] == messages[0]["content"]
    result = record["result"]
    assert answer == result["proposals"][0]["content"]
    assert completion.usage.prompt_tokens == result["usage"]["prompt_tokens"] > 0
    assert completion.usage.completion_tokens == result["usage"]["completion_tokens"] > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.model_extra["council"]["winner_id"] == result["winner_id"]

    stream = client.chat.completions.create(model="council-DEV", messages=messages, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"rounds": 1})
    chunks = list(stream)
    with_choice = [c for c in chunks if c.choices]
    assert with_choice[0].choices[0].delta.role == "assistant"
    progress = [(c.choices[0].delta.model_extra or {}).get("council") for c in with_choice]
    first_content = next(i for i, c in enumerate(with_choice) if c.choices[0].delta.content)
    stages = [p for p in progress[:first_content] if p]
    assert stages[0] == {"event": "stage.started", "stage": "propose"}
    assert [p["stage"] for p in stages if p["event"] == "stage.completed"] == ["propose", "critique-1", "revise-1", "rank", "score"]
    assert not any(progress[first_content:-1])  # all progress comes before the answer
    streamed = "".join(c.choices[0].delta.content or "" for c in with_choice)
    assert with_choice[-1].choices[0].finish_reason == "stop"
    record = http.get(f"/v1/deliberations/{chunks[0].id.removeprefix('chatcmpl-')}").json()
    assert streamed == record["result"]["proposals"][0]["content"]
    assert chunks[-1].usage.total_tokens == sum(record["result"]["usage"].values()) > 0

    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="council-NOPE", messages=messages)
    assert exc.value.code == "model_not_found" and exc.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{cluster.url}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.UnprocessableEntityError, match="messages"):
        client.chat.completions.create(model="council-DEV", messages=[{"role": "system", "content": "only a rubric"}])


def json_output(out: str):
    """The CLI's --json document. This test process is a Ray driver of the test cluster, and Ray prints the
    raylet's warnings to a driver's stdout ("(raylet) WARNING: 10 PYTHON worker processes have been started"),
    which capsys captures beside the CLI's own output: the document starts at the first line that opens it, and
    whatever Ray prints after it is left out."""
    lines = out.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.JSONDecoder().raw_decode("".join(lines[start:]))[0]


# -- the CLI -------------------------------------------------------------------------------------------
def test_cli_deliberates_and_prints_the_winner(cluster, http, capsys):
    base = ["--url", cluster.url, "--token", TOKEN]
    rc = cli.main(base + ["deliberate", "DEV", "Write a function that reverses a list.",
                          "--requirement", "reverse the list", "--task-id", "CLI-1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for line in ("propose: started", "proposal by agent-dev-001", "critique-1: done", "revise-1: done",
                 "score: done", "completed: winner agent-dev-"):
        assert line in out, (line, out)
    delib_id = out.split("deliberation ", 1)[1].split()[0]
    record = http.get(f"/v1/deliberations/{delib_id}").json()
    winner = record["result"]["winner_id"]
    assert f"winner: {winner}" in out and record["result"]["proposals"][0]["content"].splitlines()[0] in out
    assert out.index("propose: started") < out.index("rank  author")  # progress first, then the table

    assert cli.main(base + ["--json", "deliberate", "QA", "Plan tests for a login form.", "--rounds", "0"]) == 0
    rec = json_output(capsys.readouterr().out)
    assert rec["status"] == "completed" and rec["stages_done"] in (["propose", "rank", "score"], ["propose", "score"])
    assert "rank" in rec["stages_done"] + rec["stages_skipped"]  # ranked only where the verifiers left a tie

    assert cli.main(base + ["create", "CLITEST", "--agents", "2", "--rounds", "0"]) == 0  # engine: the service's
    assert "created council CLITEST: 2 agents" in capsys.readouterr().out
    assert cli.main(base + ["list"]) == 0 and "CLITEST" in capsys.readouterr().out
    assert cli.main(base + ["show", "CLITEST"]) == 0 and "agent-clitest-002" in capsys.readouterr().out
    assert cli.main(base + ["deliberate", "CLITEST", "Say hi."]) == 0
    assert "winner: agent-clitest-00" in capsys.readouterr().out
    assert cli.main(base + ["delete", "CLITEST"]) == 0 and "deleted council CLITEST" in capsys.readouterr().out
    assert cli.main(base + ["status"]) == 0
    assert "ready" in capsys.readouterr().out
    assert cli.main(base + ["--json", "status"]) == 0
    assert json_output(capsys.readouterr().out)["readyz"]["ready"] is True
    # Errors: one line on stderr, exit status 1, no token in it.
    assert cli.main(["--url", cluster.url, "--token", "wrong", "list"]) == 1
    err = capsys.readouterr().err
    assert "401" in err and TOKEN not in err
    assert cli.main(base + ["show", "NOPE"]) == 1 and "404" in capsys.readouterr().err


# -- fuzz ----------------------------------------------------------------------------------------------
def test_openapi_fuzz_no_server_errors_no_schema_violations(cluster):
    """Schemathesis generates requests from /openapi.json for every operation (positive and negative
    data, bounded): no 5xx, responses match their documented status codes, content types and schemas.
    The one 5xx that is an answer, not a failure: 504 for a deliberation that timed out
    (a request may ask for a deadline of a millisecond)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance, negative_data_rejection, response_schema_conformance, status_code_conformance,
    )

    def no_server_error(ctx, response, case):
        if response.status_code < 500:
            return None
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
        if response.status_code == 504 and "ended timeout" in message:
            return None
        raise AssertionError(f"{response.status_code}: {response.text[:500]}")

    def rejects_negative_data(ctx, response, case):
        if response.status_code == 413:  # too large is a rejection too (schemathesis does not list it)
            return None
        return negative_data_rejection(ctx, response, case)

    def aim_at_existing_council(case, role):
        """Random roles almost never name a council: aim half the cases at a real one, so they go past
        the 404 into deliberations (which really run, on the fake engine)."""
        if isinstance(case.body, dict):
            if "role" in case.body:
                case.body["role"] = role
            if "model" in case.body:
                case.body["model"] = f"council-{role}"
        if case.path_parameters and "role" in case.path_parameters:
            case.path_parameters["role"] = role

    schema = schemathesis.openapi.from_url(f"{cluster.url}/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    failures, calls, started = [], 0, time.time()
    for result in schema.get_all_operations():
        op = result.ok()
        for mode, checks in ((GenerationMode.POSITIVE, [no_server_error, response_schema_conformance,
                                                        status_code_conformance, content_type_conformance]),
                             (GenerationMode.NEGATIVE, [no_server_error, rejects_negative_data])):

            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode), pick=st.integers(0, 9))
            def run(case, pick):
                nonlocal calls
                calls += 1
                if mode == GenerationMode.POSITIVE and pick < len(ROLES) and case.method != "DELETE":
                    aim_at_existing_council(case, ROLES[pick])
                response = case.call(base_url=cluster.url, headers=headers, timeout=90)
                case.validate_response(response, checks=checks)

            try:
                run()
            except Unsatisfiable:  # no invalid input exists for it (no parameters, or unconstrained strings)
                assert mode == GenerationMode.NEGATIVE, op.label
            except Exception as exc:
                failures.append(f"{op.label} [{mode.value}]: {type(exc).__name__}: {str(exc)[:1500]}")
    print(f"fuzz: {calls} requests in {time.time() - started:.0f}s")
    assert calls > 300
    assert not failures, "\n\n".join(failures)


# -- Valkey full (near the end: it changes maxmemory, then restores it) -------------------------------------
def test_valkey_full_answers_503_with_retry_after_and_the_head_stays_up(cluster, http, kv):
    _wait_idle(http)
    original = kv.config_get("maxmemory")["maxmemory"]
    records_before = set(kv.scan_iter("councils:delib:*", count=1000))
    used = int(kv.info("memory")["used_memory"])
    kv.config_set("maxmemory", str(int(used / 0.95)))  # over 90 %: API writes refused, the GCS keeps room
    try:
        time.sleep(1.5)  # the replica reads INFO at most once a second
        for method, path, body in (("POST", "/v1/deliberations", {"role": "DEV", "task": "Fill it up."}),
                                   ("PUT", "/v1/councils/FULL", {"agents": [{"id": "a-1", "engine": "fake"}]})):
            r = http.request(method, path, json=body)
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
            assert "Valkey is nearly full" in r.json()["error"]["message"]
        # Nothing half-written: no new deliberation key (keys with a TTL, e.g. finished runs' leases, may expire).
        assert set(kv.scan_iter("councils:delib:*", count=1000)) <= records_before
        assert http.get("/v1/councils/FULL").status_code == 404
        assert http.get("/v1/councils").status_code == 200  # reads still work
        assert cluster.head.alive() and cluster.head.answers()
        assert ray.get(ray.get_actor("engine-fake", namespace="councils").health.remote(), timeout=30)
    finally:
        kv.config_set("maxmemory", original)
    time.sleep(1.5)
    r = http.post("/v1/deliberations", json={"role": "DEV", "task": "Room again.", "rounds": 0})
    assert r.status_code == 202, r.text
    assert cluster.head.alive()


# -- logs (last: after every request above) ---------------------------------------------------------
def test_token_absent_from_every_log(cluster, http, anon):
    # One more of each, so the replica has logged both kinds just now.
    assert anon.get("/v1/status", headers={"Authorization": f"Bearer {TOKEN[:-1]}"}).status_code == 401
    assert http.get("/v1/status").status_code == 200
    logs = Path(cluster.temp_dir) / "session_latest" / "logs"
    replica_logs = list((logs / "serve").glob("replica_councils_Ingress_*.log"))
    assert replica_logs, sorted(p.name for p in (logs / "serve").iterdir())
    wait_until(lambda: any(b"401" in p.read_bytes() for p in replica_logs), 30, what="the 401s in the replica log")
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert len(files) > 10
    secrets = [s.encode() for s in (TOKEN, READ_TOKEN, cluster.valkey.password)]
    leaked = [str(p) for p in files if any(s in p.read_bytes() for s in secrets)]
    assert not leaked, leaked
