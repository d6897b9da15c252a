"""The `councils` typer app: the top-level options and every command, by name, in the order --help lists them."""

from __future__ import annotations

import typer

from . import commands_councils as councils
from . import commands_deliberate, commands_local
from .options import command, top_level

EPILOG = (
    "Every command but up/down talks HTTP to --url with a bearer token from --token-file, $COUNCILS_API_TOKEN_FILE "
    "or $COUNCILS_API_TOKEN (create and delete prefer $COUNCILS_ADMIN_TOKEN_FILE / $COUNCILS_ADMIN_TOKEN). "
    "Options work before or after the command. Everything printed is terminal-safe; --json prints JSON only.\n\n"
    "Exit status: 0 success, 1 a failed request or deliberation, 2 bad usage."
)

app = typer.Typer(name="councils", help="The command line of Councils on Ray.", epilog=EPILOG,
                  add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
app.callback()(top_level)
app.command("up")(command(commands_local.up, remote=False))
app.command("down")(command(commands_local.down, remote=False))
app.command("status")(command(councils.status))
app.command("list")(command(councils.list_councils))
app.command("show")(command(councils.show))
app.command("create")(command(councils.create, admin=True))
app.command("delete")(command(councils.delete, admin=True))
app.command("deliberate")(command(commands_deliberate.deliberate))
