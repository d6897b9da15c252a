"""The service as the CLI sees it: the HTTP client (JSON calls, the event stream), its bearer token, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from serve_app.settings import EnvSettings

DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    """A failure to report in one line (exit status 1)."""


class Api:
    """One service at `url`, every request with the bearer token (if any) and `timeout` seconds."""

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
                if event.data:  # not the stream's opening `retry:` message, which carries no event
                    yield event.id or None, event.event, json.loads(event.data)


def error_message(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):  # not JSON, or not our error body
        return r.text[:300] or r.reason_phrase


def resolve_token(token: str | None, token_file: str | None, *, admin: bool = False, environ=None) -> str | None:
    """--token, --token-file, then the environment: for council writes (`admin`) the admin token first
    ($COUNCILS_ADMIN_TOKEN_FILE, $COUNCILS_ADMIN_TOKEN), then $COUNCILS_API_TOKEN_FILE, $COUNCILS_API_TOKEN."""
    env = EnvSettings.from_env(environ)
    if token:
        return token
    sources = [("file", token_file)] if token_file else []
    if admin:
        sources += [("file", env.admin_token_file), ("value", env.admin_token)]
    sources += [("file", env.api_token_file), ("value", env.api_token)]
    for kind, value in sources:
        if not value:
            continue
        if kind == "value":
            return value.strip()
        try:
            found = Path(value).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"token file {value} cannot be read: {type(exc).__name__}") from None
        if not found:
            raise CliError(f"token file {value} is empty")
        return found
    return None
