"""Keep secrets (the API token, Valkey passwords) out of logs, errors and responses."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
_secrets: set[str] = set()


def register(secret: str | None) -> None:
    """A value that `scrub` removes from any text from now on (in this process)."""
    if secret and len(secret) >= 4:
        _secrets.add(secret)


def scrub(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_url(url: str) -> str:
    """`rediss://user:pw@host:6380/0` -> `rediss://user:***@host:6380/0` (the user name stays: not a secret)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{hostport}" if ":" in userinfo else netloc
    if "password=" in query:  # redis URLs may carry it as a query argument too
        query = "&".join(f"password={MASK}" if q.startswith("password=") else q for q in query.split("&"))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def register_url(url: str | None) -> None:
    """Register the password of a Valkey URL (as written and URL-decoded)."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return
    passwords = [password] if password else []
    passwords += [q.partition("=")[2] for q in parts.query.split("&") if q.startswith("password=")]
    for p in passwords:
        register(p)
        register(unquote(p))
