"""`councils`, the command line of Councils on Ray (docs/cli.md): `main` runs it; app.py lists its commands."""

from __future__ import annotations

import typer

from .app import app


def main(argv: list[str] | None = None) -> int:
    """Run `councils` with `argv` (default: sys.argv[1:]); the exit status: 0, 1 a failed request or deliberation,
    2 bad usage, 130 interrupted."""
    try:
        typer.main.get_command(app).main(args=argv, prog_name="councils", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0
