"""The council viewer's static files (docs/ui.md): a page at /ui in plain JavaScript modules, no build step,
shipped as package data. They hold no data, so they are served without a token (serve_app/auth.py's UI_PATHS);
every call the page makes goes to the public API with the token the user types in.

`FILES` is the whole list of what /ui serves (name -> content type): nothing else in this folder is reachable."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
INDEX = "index.html"
FILES = {
    INDEX: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "sse.js": "text/javascript; charset=utf-8",
    "render.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PREFIX = "/ui"
# The URL paths of the page: /ui and /ui/ are the index; /ui/<name> each file.
PATHS = frozenset({PREFIX, PREFIX + "/"} | {f"{PREFIX}/{name}" for name in FILES})

# Strict: only this origin's scripts, styles and connections; no inline script or style, no plugin, no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def read(name: str) -> bytes:
    """A file of the page (KeyError for anything not in FILES)."""
    if name not in FILES:
        raise KeyError(name)
    return (HERE / name).read_bytes()
