"""Runs SQL against an in-memory SQLite database: a stand-alone script (stdlib only) run in the sandbox.

Reads job.json ({"nonce", "schema", "statements"}) and deletes it, runs the schema as a script, then each
statement in order, stopping at the first that fails (a CREATE of something the schema already made is
noted and passed over). Reports one line "<nonce>{json}" per step on stdout.
"""

from __future__ import annotations

import json
import os
import sqlite3


def main() -> None:
    with open("job.json", encoding="utf-8") as f:
        job = json.load(f)
    os.remove("job.json")

    def emit(**event) -> None:
        print(job["nonce"] + json.dumps(event), flush=True)

    db = sqlite3.connect(":memory:")
    try:
        db.executescript(job["schema"])
    except sqlite3.Error as e:
        emit(event="schema", error=f"{type(e).__name__}: {e}")
        return
    for i, statement in enumerate(job["statements"]):
        try:
            rows = db.execute(statement).fetchmany(1000)
        except sqlite3.Error as e:
            existed = "already exists" in str(e) and statement.lstrip().upper().startswith("CREATE")
            emit(event="statement", index=i, ok=existed, rows=0, error=f"{type(e).__name__}: {e}")
            if existed:
                continue
            return
        emit(event="statement", index=i, ok=True, rows=len(rows), error="")
    emit(event="done")


if __name__ == "__main__":
    main()
