"""A chat completion request as a deliberation (serve_app/openai_compat.py, docs/openai.md), no service: the
messages as task and rubric, the newest earlier turns that fit, errors naming the chat fields, the request model's
bounds. The chat routes themselves: tests/test_routes.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.errors import ApiError
from serve_app.openai_compat import ChatCompletionRequest, to_deliberation

pytestmark = pytest.mark.unit


def _chat(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "council-DEV", **kw})


def test_chat_request_maps_to_a_deliberation():
    req = to_deliberation(_chat(messages=[
        {"role": "system", "content": "Prefer the standard library."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "developer", "content": [{"type": "text", "text": "Explain briefly."}]},
        {"role": "user", "content": [{"type": "text", "text": "Write a"}, {"type": "text", "text": "palindrome check."}]},
    ], max_completion_tokens=64, rounds=0, requirements=["handle empty strings"], metadata={"task_id": "T-9"},
        temperature=0.3, top_p=0.9, some_unknown_field=1), "DEV")
    assert req.role == "DEV" and req.task == ("Conversation so far:\nuser: first question\n\nassistant: an earlier answer"
                                              "\n\nThe request now:\nWrite a\npalindrome check.")
    assert req.constraints.rubric == "Prefer the standard library.\n\nExplain briefly."
    assert req.max_tokens == 64 and req.rounds == 0 and req.constraints.requirements == ["handle empty strings"]
    assert req.constraints.metadata == {"task_id": "T-9"}


def test_chat_keeps_the_newest_earlier_turns_that_fit_and_the_request_whole():
    from actors.protocol import TASK_CHARS

    history = []
    for i in range(40):
        history += [{"role": "user", "content": f"question {i} " + "q" * 80},
                    {"role": "assistant", "content": f"answer {i} " + "a" * 80}]
    req = to_deliberation(_chat(messages=[*history, {"role": "tool", "content": "tool output"},
                                          {"role": "user", "content": "Now add tests."}]), "DEV")
    assert req.task.endswith("The request now:\nNow add tests.") and len(req.task) <= TASK_CHARS
    assert "answer 39" in req.task and "question 0 " not in req.task and "tool output" not in req.task
    left_out = int(req.task.split("(", 1)[1].split(" ", 1)[0])
    assert 0 < left_out < 80 and req.task.count("\nuser: ") + req.task.count("\nassistant: ") == 80 - left_out
    # A request with no earlier turns is the last message alone; an empty last message is still a 422.
    assert to_deliberation(_chat(messages=[{"role": "user", "content": "just this"}]), "DEV").task == "just this"
    with pytest.raises(ApiError) as exc:
        to_deliberation(_chat(messages=[*history[:2], {"role": "user", "content": ""}]), "DEV")
    assert exc.value.status == 422 and "body.messages.2.content" in exc.value.message


@pytest.mark.parametrize("kw,needle", [
    ({"messages": [{"role": "system", "content": "rubric only"}]}, "body.messages: at least one message with role 'user'"),
    ({"messages": [{"role": "user", "content": ""}]}, "body.messages.0.content"),
    ({"messages": [{"role": "user", "content": "x" * 9000}]}, "body.messages.0.content: String should have at most 8000"),
    ({"messages": [{"role": "system", "content": "r" * 5000}, {"role": "user", "content": "x"}]}, "body.messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "only text content"),
    ({"messages": [{"role": "user", "content": "x"}], "rounds": 9}, "body.rounds"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 4096}, "body.max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "timeout_s": -1}, "body.timeout_s"),
])
def test_chat_request_errors_name_the_chat_fields(kw, needle):
    with pytest.raises(ApiError) as exc:
        to_deliberation(_chat(**kw), "DEV")
    assert exc.value.status == 422 and needle in exc.value.message, exc.value.message


def test_chat_request_model_bounds():
    with pytest.raises(ValidationError):
        _chat(messages=[{"role": "user", "content": "x"}], n=2)
    with pytest.raises(ValidationError):
        _chat(messages=[])
