"""The input limits and strict input shapes, without Ray or Valkey: the body limit (with and without
Content-Length), the request and council limit checks naming every field, the config's limits bounding its default
councils, roles and ids matched whole (docs/api.md#input-limits). The caps kept in Valkey: tests/test_caps.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actors.models.config import AppConfig
from actors.models.councils import CouncilUpsert
from actors.models.limits import Limits
from actors.models.requests import Constraints, DeliberationRequest
from serve_app import sse, validation
from serve_app.errors import ApiError
from tests.middleware_app import middleware_app

pytestmark = pytest.mark.unit


# -- the body limit --------------------------------------------------------------------------------------
def test_body_limit_with_and_without_content_length():
    client = middleware_app(None, max_body=2048)
    assert client.post("/v1/echo", content=b"x" * 2048).json() == {"bytes": 2048}
    r = client.post("/v1/echo", content=b"x" * 2049)
    assert r.status_code == 413 and "2048" in r.json()["error"]["message"]

    def chunks(n):
        for _ in range(n):
            yield b"y" * 512

    assert client.post("/v1/echo", content=chunks(4)).json() == {"bytes": 2048}  # chunked, at the limit
    r = client.post("/v1/echo", content=chunks(10))  # chunked (no Content-Length), over it
    assert r.status_code == 413 and r.json()["error"]["status"] == 413
    r = client.post("/v1/echo", content=b"x", headers={"content-length": "abc"})
    assert r.status_code == 400


# -- limits ------------------------------------------------------------------------------------------
def test_request_limit_errors_name_the_field():
    lim = Limits(max_task_chars=10, max_rubric_chars=5, max_rounds=1, max_agents=2, max_tokens=64)
    req = DeliberationRequest(role="DEV", task="x" * 11, constraints=Constraints(rubric="r" * 6), rounds=2,
                              num_agents=3, max_tokens=65)
    errors = validation.request_errors(req, lim)
    assert [".".join(map(str, e["loc"])) for e in errors] == [
        "body.task", "body.constraints.rubric", "body.rounds", "body.num_agents", "body.max_tokens"]
    with pytest.raises(ApiError) as exc:
        validation.raise_for(errors)
    assert exc.value.status == 422 and exc.value.message.startswith("body.task: String should have at most 10")
    assert validation.request_errors(DeliberationRequest(role="DEV", task="ok"), lim) == []
    up = CouncilUpsert(agents=[{"id": f"a{i}", "engine": "e", "max_tokens": 100} for i in range(3)], rounds=2)
    assert {".".join(map(str, e["loc"])) for e in validation.council_errors(up.agents, up.rounds, lim)} == {
        "body.agents", "body.rounds", "body.agents.0.max_tokens", "body.agents.1.max_tokens", "body.agents.2.max_tokens"}


def test_roles_fullmatch_and_a_configured_pattern_only_narrows():
    assert validation.role_ok("DEV") and not validation.role_ok("DEV\n") and not validation.role_ok("dev")
    narrow = Limits(role_pattern=r"(DEV|QA)")
    assert validation.role_ok("QA", narrow) and not validation.role_ok("DATA", narrow)
    wide = Limits(role_pattern=r".*")  # cannot widen past ROLE_PATTERN
    assert not validation.role_ok("a/b", wide) and not validation.role_ok("council:x", wide)
    with pytest.raises(ValidationError, match="role_pattern"):
        Limits(role_pattern="([")
    with pytest.raises(ApiError) as exc:
        validation.check_role("DEV\n")
    assert exc.value.status == 422


def test_app_config_limits_bound_the_default_councils():
    base = {"engines": [{"name": "fake", "model": "m"}],
            "default_councils": {"engine": "fake", "agents_per_council": 3, "rounds": 2}}
    assert AppConfig.model_validate(base).limits == Limits()
    with pytest.raises(ValidationError, match="agents_per_council 3 > limits.max_agents 2"):
        AppConfig.model_validate({**base, "limits": {"max_agents": 2}})
    with pytest.raises(ValidationError, match="role 'QA' does not match"):
        AppConfig.model_validate({**base, "limits": {"role_pattern": "DEV|ARCHITECT|DEVOPS|DATA"}})
    with pytest.raises(ValidationError):  # over the hard ceiling
        AppConfig.model_validate({**base, "limits": {"max_agents": 65}})


# -- strict ids ------------------------------------------------------------------------------------------
def test_ids_fullmatch_no_trailing_newline():
    from serve_app.records import check_delib_id

    good = "0123456789abcdef" * 2
    assert check_delib_id(good) == good
    for bad in (good + "\n", good + "\r", "\n" + good, good[:-1]):
        with pytest.raises(ApiError):
            check_delib_id(bad)
    assert sse.valid_stream_id("1700000000000-0")
    assert not sse.valid_stream_id("1700000000000-0\n") and not sse.valid_stream_id("1-0 ")
