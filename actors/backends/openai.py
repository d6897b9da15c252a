"""The OpenAI backend: an OpenAI-compatible HTTP server (e.g. an external `vllm serve`), via `openai.AsyncOpenAI`.

The client retries what may pass on a second try (connection errors, timeouts, 408, 409, 429, 5xx; a Retry-After
header is honoured) `retries` times with exponential backoff. What is left when it gives up becomes a domain error:
`EngineUnavailable` when the server is unreachable, overloaded or failing (408, 429, 500, 502, 503, 504), so
councils wait for it; `EngineError` for any other refusal and for an answer that is not a chat completion.

The API key is read from the spec's `api_key_env` variable on every call; without `api_key_env` no Authorization
header is sent. The openai package is imported only inside the methods.
"""

from __future__ import annotations

import os
from typing import Any

from ..models.councils import EngineSpec
from ..models.records import Completion
from .base import EngineError, EngineUnavailable

# Statuses that mean "unavailable right now" once the client's retries are spent (any other is an EngineError).
UNAVAILABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# The client needs some key; it is never sent: every request sets its own Authorization header, or omits it.
UNUSED_KEY = "unused"


class OpenAIBackend:
    dead = False  # an HTTP client never needs replacing; the server behind it restarts on its own

    def __init__(self, spec: EngineSpec, retries: int = 3, timeout_s: float = 600.0):
        self.spec = spec
        self.retries = retries
        self.timeout_s = timeout_s
        self.client: Any = None
        self.base_url = (spec.base_url or "").rstrip("/")
        self.model = spec.served_model_name or spec.model

    def auth_headers(self) -> dict[str, Any]:
        from openai import Omit

        if not self.spec.api_key_env:
            return {"Authorization": Omit()}
        key = os.environ.get(self.spec.api_key_env)
        if not key:
            raise EngineUnavailable(f"environment variable {self.spec.api_key_env} (api key) is not set")
        return {"Authorization": f"Bearer {key}"}

    async def start(self) -> None:
        import httpx
        from openai import AsyncOpenAI, Omit

        timeout = httpx.Timeout(self.timeout_s, connect=10.0)
        self.client = AsyncOpenAI(
            api_key=UNUSED_KEY,
            base_url=self.base_url,
            max_retries=self.retries,
            timeout=timeout,
            # Nothing from the process's OPENAI_* environment reaches a server that is not OpenAI's.
            organization=None, project=None,
            default_headers={"OpenAI-Organization": Omit(), "OpenAI-Project": Omit()},
            http_client=httpx.AsyncClient(
                timeout=timeout, limits=httpx.Limits(max_connections=max(16, self.spec.max_num_seqs))),
        )

    async def shutdown(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def health(self) -> dict[str, Any]:
        import openai

        try:
            await self.client.with_options(max_retries=0, timeout=10.0).models.list(extra_headers=self.auth_headers())
        except openai.APIStatusError as exc:
            raise EngineUnavailable(f"GET {self.base_url}/models -> {exc.status_code}") from exc
        return {"base_url": self.base_url}

    async def generate(self, messages, temperature, max_tokens, seed, json_schema=None) -> Completion:
        import openai

        optional: dict[str, Any] = {}
        if seed is not None:
            optional["seed"] = seed
        if json_schema:
            optional["response_format"] = {"type": "json_schema",
                                           "json_schema": {"name": "answer", "schema": json_schema, "strict": True}}
        attempts = self.retries + 1
        try:
            answer = await self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=temperature, max_tokens=max_tokens,
                extra_headers=self.auth_headers(), **optional)
        except openai.APIConnectionError as exc:  # also a timeout
            cause = exc.__cause__ or exc
            raise EngineUnavailable(f"{self.base_url} unavailable after {attempts} attempts: "
                                    f"{type(cause).__name__}: {cause}") from exc
        except openai.APIStatusError as exc:
            status, text = exc.status_code, exc.response.text
            if status in UNAVAILABLE_STATUS:
                raise EngineUnavailable(
                    f"{self.base_url} unavailable after {attempts} attempts: HTTP {status}: {text[:300]}") from exc
            raise EngineError(f"POST {self.base_url}/chat/completions -> {status}: {text[:500]}") from exc
        except openai.APIError as exc:  # a 2xx whose body is not a chat completion
            raise EngineError(f"malformed chat completion from {self.base_url}: {exc}") from exc
        try:
            choice = answer.choices[0]
            usage = answer.usage
            return Completion(
                text=choice.message.content or "",
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                # vLLM's server reports it with --enable-prompt-tokens-details; others may leave it out.
                cached_tokens=int(getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                finish_reason=getattr(choice, "finish_reason", None),
            )
        except (AttributeError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise EngineError(f"malformed chat completion from {self.base_url}: {exc}") from exc
