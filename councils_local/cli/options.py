"""The options every command takes, before or after its name (each declared once), and how a command runs with them."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from serve_app.security import terminal_safe
from serve_app.settings import EnvSettings

from .client import DEFAULT_URL, Api, CliError, resolve_token

KW = inspect.Parameter.KEYWORD_ONLY
# Added to the top level and to every command: `councils --json list` and `councils list --json` are the same;
# given in both places, the command's wins. None means "not given here".
COMMON = (
    inspect.Parameter("url", KW, default=None, annotation=Annotated[str | None, typer.Option(
        "--url", help=f"service URL (default: $COUNCILS_URL or {DEFAULT_URL})", show_default=False)]),
    inspect.Parameter("token_file", KW, default=None, annotation=Annotated[str | None, typer.Option(
        "--token-file", help="file holding the API token (default: $COUNCILS_API_TOKEN_FILE; not shown in ps)")]),
    inspect.Parameter("token", KW, default=None, annotation=Annotated[str | None, typer.Option(
        "--token", help="API token (default: $COUNCILS_API_TOKEN; visible in ps: prefer --token-file)")]),
    inspect.Parameter("json", KW, default=False, annotation=Annotated[bool, typer.Option(
        "--json", help="print JSON only")]),
    inspect.Parameter("http_timeout", KW, default=None, annotation=Annotated[float | None, typer.Option(
        "--http-timeout", help="seconds per request (default 30)", show_default=False)]),
)


@dataclass
class Options:
    """The common options of one run, top level and command merged."""

    url: str
    token: str | None = None
    token_file: str | None = None
    json: bool = False
    http_timeout: float = 30.0


def given_here(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the common options out of a command's keyword arguments: those given (not None, not False)."""
    return {p.name: v for p in COMMON if (v := kwargs.pop(p.name)) is not None and v is not False}


def top_level(ctx: typer.Context, **kwargs: Any) -> None:
    """Councils on Ray from the command line: councils, deliberations with live progress, the local service."""
    ctx.obj = given_here(kwargs)


CONTEXT = inspect.Parameter("ctx", KW, annotation=typer.Context)
top_level.__signature__ = inspect.Signature([CONTEXT, *COMMON])


def fail(exc: CliError) -> None:
    print(f"councils: error: {terminal_safe(exc)}", file=sys.stderr, flush=True)


def command(fn: Callable[..., int], *, remote: bool = True, admin: bool = False) -> Callable[..., None]:
    """`fn` as a typer command with the common options added: fn(api, opts, ...) for a command that talks to the
    service (`admin`: a council write, which prefers the admin token), fn(opts, ...) for one that does not.
    Its return value is the exit status; a CliError is one line on stderr and status 1 (2 for an unusable token)."""
    own = list(inspect.signature(fn, eval_str=True).parameters.values())[2 if remote else 1:]

    def run(ctx: typer.Context, **kwargs: Any) -> None:
        settings = {**(ctx.obj or {}), **given_here(kwargs)}
        opts = Options(url=settings.pop("url", None) or EnvSettings().url, **settings)
        api = None
        try:
            if remote:
                try:
                    token = resolve_token(opts.token, opts.token_file, admin=admin)
                except CliError as exc:
                    fail(exc)
                    raise typer.Exit(2) from None
                api = Api(opts.url, token, opts.http_timeout)
            code = fn(api, opts, **kwargs) if remote else fn(opts, **kwargs)
        except CliError as exc:
            fail(exc)
            code = 1
        finally:
            if api is not None:
                api.close()
        if code:
            raise typer.Exit(code)

    run.__signature__ = inspect.Signature([*own, CONTEXT, *COMMON])
    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run
