"""SQL blocks: sql.parse (sqlglot) and sql.execute (constraints.sql_schema, then the proposal's statements,
on an in-memory SQLite database in the sandbox).

The dialect read is the block's tag (sqlite, postgres, mysql, tsql...), else constraints.metadata
["sql_dialect"], else SQLite; statements are transpiled to SQLite to run. sql_schema is SQLite SQL.
Execution runs in the sandbox rather than in-process: SQL can ATTACH files, grow without bound through
recursive CTEs, and only an rlimit'ed process of its own bounds memory as well as time.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from .base import Job
from .base import events as runner_events
from .blocks import CodeBlock

DEFAULT_DIALECT = "sqlite"
_TAG_DIALECT = {"sqlite3": "sqlite", "postgresql": "postgres", "psql": "postgres", "mssql": "tsql"}
RUNNER_SOURCE = Path(__file__).with_name("sql_runner.py").read_text(encoding="utf-8")
# sqlglot logs a warning for every statement it keeps as an opaque command: the check reports it instead.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


def dialect_of(block: CodeBlock, job: Job) -> str:
    tag = _TAG_DIALECT.get(block.lang, block.lang)
    if tag not in ("", "sql") and Dialect.get(tag) is not None:
        return tag
    configured = job.constraints.metadata.get("sql_dialect")
    return configured if isinstance(configured, str) and Dialect.get(configured) is not None else DEFAULT_DIALECT


def statements(block: CodeBlock, dialect: str) -> list[exp.Expression]:
    """The block's statements; ValueError saying why it does not parse."""
    if not block.code.strip():
        raise ValueError("empty")
    try:
        parsed = [e for e in sqlglot.parse(block.code, read=dialect) if e is not None]
    except sqlglot.errors.SqlglotError as e:
        raise ValueError(str(e).splitlines()[0]) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    for e in parsed:
        if isinstance(e, (exp.Condition, exp.Alias)) or isinstance(e, exp.Command) and e.name.upper() not in (
                "EXPLAIN", "VACUUM", "ANALYZE", "REINDEX"):
            raise ValueError(f"not an SQL statement: {e.sql()[:80]!r}")
    if not parsed:
        raise ValueError("no statement")
    return parsed


def verify(job: Job) -> None:
    blocks = job.blocks("sql")
    if not blocks:
        job.check("sql.parse", "skipped", "no SQL block")
        job.check("sql.execute", "skipped", "no SQL block")
        return
    parsed, errors = [], []
    for b in blocks:
        try:
            parsed += statements(b, dialect_of(b, job))
        except ValueError as e:
            errors.append(f"block at line {b.line}: {e}")
    if errors:
        job.check("sql.parse", "failed", f"{len(errors)} of {len(blocks)} SQL block(s) do not parse: {errors[0]}")
    else:
        job.check("sql.parse", "passed", f"{len(parsed)} statement(s) in {len(blocks)} block(s) parse")
    _execute(job, parsed)


def _execute(job: Job, parsed: list[exp.Expression]) -> None:
    schema = job.constraints.sql_schema
    if not schema or not schema.strip():
        job.check("sql.execute", "skipped", "no constraints.sql_schema to run the statements on")
        return
    if not parsed:
        job.check("sql.execute", "failed", "no SQL statement that parses, to run")
        return
    try:
        sqlite = [e.sql(dialect="sqlite") for e in parsed]
    except sqlglot.errors.SqlglotError as e:
        job.check("sql.execute", "failed", f"cannot be written as SQLite: {str(e).splitlines()[0]}")
        return
    nonce = secrets.token_hex(8)
    job_file = json.dumps({"nonce": nonce, "schema": schema, "statements": sqlite})
    r = job.sandbox([sys.executable, "-I", "-B", "runner.py"], {"runner.py": RUNNER_SOURCE, "job.json": job_file})
    events = runner_events(r.stdout, nonce)
    schema_error = next((e["error"] for e in events if e["event"] == "schema"), None)
    if schema_error:
        job.check("sql.execute", "skipped", f"constraints.sql_schema does not run on SQLite: {schema_error}",
                  duration_s=r.duration_s)
        return
    failed = next((e for e in events if e["event"] == "statement" and not e["ok"]), None)
    done = [e for e in events if e["event"] == "statement" and e["ok"]]
    if failed is None and any(e["event"] == "done" for e in events):
        job.check("sql.execute", "passed", f"{len(done)} statement(s) ran on the schema; the last returned "
                  f"{done[-1]['rows']} row(s)", duration_s=r.duration_s)
    elif failed is not None:
        job.check("sql.execute", "failed", f"statement {failed['index'] + 1} of {len(sqlite)} failed: "
                  f"{failed['error']}: {sqlite[failed['index']][:100]}", duration_s=r.duration_s)
    else:
        job.check("sql.execute", "failed", f"statement {len(done) + 1} of {len(sqlite)} did not finish: {r.message}",
                  duration_s=r.duration_s)
