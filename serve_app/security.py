"""Secure by default (docs/security.md): the checks an ingress replica makes about its own exposure, and
terminal-safe text.

- An API bound to a non-loopback address with no token is refused at start-up, unless the deployed
  config says `allow_unauthenticated: true` (open on purpose): the message says why.
- Model text is printed by the CLI through `terminal_safe`, so an escape sequence a model (or a prompt
  injection) wrote never reaches the operator's terminal.
"""

from __future__ import annotations

import ipaddress
import logging
import re

log = logging.getLogger("councils.security")


class ExposureError(RuntimeError):
    """The replica would serve an open API on a network interface."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_http_host(timeout_s: float = 10) -> str | None:
    """The address Serve's HTTP proxies bind (`http_options.host` of the running Serve instance), or None
    when it cannot be told (then the replica treats the API as exposed)."""
    try:
        import ray
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return ray.get(controller.get_http_config.remote(), timeout=timeout_s).host
    except Exception as exc:  # not in a Serve cluster (unit tests), or the controller is restarting
        log.warning("cannot read Serve's http_options.host: %s", exc)
        return None


def check_exposure(host: str | None, auth_on: bool, allow_unauthenticated: bool) -> None:
    """Raise ExposureError (which stops the replica: the deploy fails with this message) for an API
    that would be open to the network: no token, a non-loopback bind address, and no opt-in."""
    if auth_on or is_loopback(host):
        return
    where = f"bound to {host}" if host else "bound to an address that could not be read (treated as public)"
    if allow_unauthenticated:
        log.warning("the HTTP API is %s with no token: open on purpose (allow_unauthenticated: true)", where)
        return
    raise ExposureError(
        f"refusing to start: the HTTP API is {where} (Serve http_options.host), which is not a loopback "
        "address, and no API token is set, so anyone who can reach the port could delete councils, rewrite "
        "personas and read every record. Set COUNCILS_API_TOKEN_FILE (and COUNCILS_ADMIN_TOKEN_FILE) on the "
        "replicas, bind http_options.host to 127.0.0.1, or set `allow_unauthenticated: true` in the "
        "application's args to open it on purpose (docs/security.md)")


# CSI / OSC / other escape sequences, then any C0/C1 control character but newline and tab, and the
# bidirectional overrides (text that displays in another order than it reads).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: object) -> str:
    """`text` without terminal escape sequences or control characters (newlines and tabs stay)."""
    text = "" if text is None else str(text)
    text = text.replace("\r\n", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))
