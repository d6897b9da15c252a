"""The council viewer's server side, in-process (FastAPI's TestClient over the real routes and CouncilService on the
in-memory store, tests/memory_store.py): /ui serves exactly its static files, without a token and with a strict
Content-Security-Policy; /v1/whoami tells the caller's scope behind the same auth as every /v1 route; the API
itself still answers 401 without a token. Also static checks of the files: no HTML is ever built from data
(no innerHTML), no inline script, style or handler, and the package data ships every file. The page in a
browser: tests/test_ui_browser.py."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from serve_app import ui
from serve_app.api import build_api
from serve_app.auth import ADMIN, READ, TokenAuth
from tests.memory_store import memory_service

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
READ_TOKEN, ADMIN_TOKEN = "ui-read-token-0123456789", "ui-admin-token-9876543210"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client():
    with TestClient(build_api(memory_service(), TokenAuth({ADMIN: ADMIN_TOKEN, READ: READ_TOKEN}))) as c:
        yield c


@pytest.fixture
def open_client():
    with TestClient(build_api(memory_service(), TokenAuth({}))) as c:
        yield c


def csp_directives(header: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


# -- /ui ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ui", "/ui/", *(f"/ui/{name}" for name in ui.FILES)])
def test_ui_files_are_served_without_a_token_with_a_strict_csp(client, path):
    r = client.get(path)
    assert r.status_code == 200, r.text
    name = path.removeprefix("/ui").strip("/") or ui.INDEX
    assert r.content == (ui.HERE / name).read_bytes()
    assert r.headers["content-type"] == ui.FILES[name]
    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"] and csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert "unsafe-eval" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"


def test_only_the_listed_files_are_reachable(client):
    # Anything else under /ui is closed like every other path (401 without a token), and 404 with one.
    for path in ("/ui/__init__.py", "/ui/../auth.py", "/ui/%2e%2e/auth.py", "/ui/nope.js", "/ui/app.js/x"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer(READ_TOKEN)).status_code == 404, path
    # Only GET is open: any other method on a UI path needs the token like everything else.
    assert client.post("/ui").status_code == 401 and client.head("/ui").status_code == 401
    assert client.post("/ui", headers=bearer(READ_TOKEN)).status_code == 405


def test_the_api_still_needs_the_token(client):
    for method, path in (("GET", "/v1/councils"), ("GET", "/v1/status"), ("GET", "/v1/whoami"),
                         ("POST", "/v1/deliberations"), ("GET", "/v1/deliberations/" + "0" * 32),
                         ("GET", f"/v1/deliberations/{'0' * 32}/events"), ("DELETE", "/v1/councils/DEV"),
                         ("GET", "/v1/models")):
        r = client.request(method, path, json={"role": "DEV", "task": "x"} if method == "POST" else None)
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"].startswith("Bearer")
    # A read token still cannot write councils, whatever the page shows.
    assert client.delete("/v1/councils/DEV", headers=bearer(READ_TOKEN)).status_code == 403


# -- /v1/whoami ---------------------------------------------------------------------------------------------------
def test_whoami_tells_the_scope(client, open_client):
    assert client.get("/v1/whoami", headers=bearer(READ_TOKEN)).json() == {"scope": "read"}
    assert client.get("/v1/whoami", headers=bearer(ADMIN_TOKEN)).json() == {"scope": "admin"}
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {READ_TOKEN}"}):
        r = client.get("/v1/whoami", headers=headers)
        assert r.status_code == 401 and READ_TOKEN not in r.text and ADMIN_TOKEN not in r.text
    assert open_client.get("/v1/whoami").json() == {"scope": "open"}  # no token configured at all


def test_one_token_alone_is_admin():
    with TestClient(build_api(memory_service(), TokenAuth({ADMIN: READ_TOKEN}))) as c:
        assert c.get("/v1/whoami", headers=bearer(READ_TOKEN)).json() == {"scope": "admin"}


def test_openapi_documents_whoami_not_the_static_files(client):
    doc = client.get("/openapi.json", headers=bearer(READ_TOKEN)).json()
    op = doc["paths"]["/v1/whoami"]["get"]
    assert op["security"] and {"401", "503"} <= set(op["responses"])
    assert not any(path.startswith("/ui") for path in doc["paths"])


# -- the files themselves -----------------------------------------------------------------------------------------
def test_every_file_of_the_page_is_listed_and_shipped():
    on_disk = {p.name for p in ui.HERE.iterdir() if p.suffix in (".html", ".js", ".css")}
    assert on_disk == set(ui.FILES)
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["serve_app.ui"]
    assert all(any(Path(name).match(g) for g in globs) for name in ui.FILES)
    # Every module the page imports is one of the files.
    for name in ui.FILES:
        text = (ui.HERE / name).read_text()
        for imported in re.findall(r"""from\s+["']\./([\w.]+)["']""", text):
            assert imported in ui.FILES, (name, imported)
        for src in re.findall(r"""(?:src|href)="/ui/([\w.]+)\"""", text):
            assert src in ui.FILES, (name, src)


def test_no_html_is_built_from_strings_and_nothing_is_inline():
    for name in ui.FILES:
        text = (ui.HERE / name).read_text()
        if name.endswith(".js"):
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                         "setAttribute(\"on", "srcdoc"):
                assert sink not in text, (name, sink)
    html = (ui.HERE / ui.INDEX).read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert "<style" not in html and not re.search(r"\sstyle=", html), "an inline style"
    assert not re.search(r"\son\w+=", html), "an inline handler"
