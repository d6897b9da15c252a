"""Shell blocks (sh, bash, ksh; untagged ones guessed as shell): shell.parse (`bash -n`, or `dash -n`
for sh blocks) and shell.shellcheck (findings of severity error fail; warnings do not).

The dialect comes from the tag (sh and dash blocks are checked as dash, the POSIX shell here) or the
block's shebang; zsh blocks are not checked (neither tool reads zsh). Nothing is executed: both tools
only read the script, in the sandbox all the same.
"""

from __future__ import annotations

import json

from .base import Job
from .blocks import CodeBlock
from .isolation import tool

_EXTENSION = {"sh": "dash", "dash": "dash", "ksh": "ksh"}  # everything else is bash
_PARSE = 'for f; do case "$f" in *.dash) dash -n "$f";; *) bash -n "$f";; esac; done'


def verify(job: Job) -> None:
    blocks = [b for b in job.blocks("shell") if b.lang != "zsh"]
    if not blocks:
        zsh = any(b.lang == "zsh" for b in job.blocks("shell"))
        why = "zsh blocks are not checked" if zsh else "no shell code block"
        job.check("shell.parse", "skipped", why)
        job.check("shell.shellcheck", "skipped", why)
        return
    empty = [b for b in blocks if not b.code.strip()]
    if empty:
        job.check("shell.parse", "failed", f"block at line {empty[0].line} is empty")
    blocks = [b for b in blocks if b.code.strip()]
    if not blocks:
        job.check("shell.shellcheck", "skipped", "no non-empty shell block")
        return
    files = {f"b{b.line}.{_EXTENSION.get(b.lang, 'bash')}": b.code + "\n" for b in blocks}
    by_file = dict(zip(files, blocks, strict=True))
    if not empty:
        _parse(job, files, by_file)
    _shellcheck(job, files, by_file)


def _parse(job: Job, files: dict[str, str], by_file: dict[str, CodeBlock]) -> None:
    r = job.sandbox([tool("bash") or "bash", "-c", _PARSE, "bash", *files], files)
    errors = r.stderr.strip()
    if r.status == "ok" and r.returncode == 0 and not errors:
        job.check("shell.parse", "passed", f"{len(files)} shell block(s) parse", duration_s=r.duration_s)
        return
    first = errors.splitlines()[0] if errors else r.message
    name = first.split(":", 1)[0]
    where = f"block at line {by_file[name].line}: " if name in by_file else ""
    job.check("shell.parse", "failed", f"{where}{first.split(':', 1)[-1].strip() if where else first}",
              duration_s=r.duration_s)


def _shellcheck(job: Job, files: dict[str, str], by_file: dict[str, CodeBlock]) -> None:
    r = job.sandbox([tool("shellcheck") or "shellcheck", "--norc", "-S", "error", "-f", "json1", *files], files)
    try:
        comments = json.loads(r.stdout)["comments"]
    except (ValueError, KeyError, TypeError):
        job.check("shell.shellcheck", "failed", f"shellcheck did not run: {r.message}: {r.stderr[-200:]}",
                  duration_s=r.duration_s)
        return
    if not comments:
        job.check("shell.shellcheck", "passed", f"no error in {len(files)} block(s)", duration_s=r.duration_s)
        return
    c = comments[0]
    block = by_file.get(c.get("file"))
    where = f"block at line {block.line}, line {c['line']}" if block else f"line {c.get('line')}"
    job.check("shell.shellcheck", "failed", f"{len(comments)} error(s); {where}: SC{c['code']} {c['message']}",
              duration_s=r.duration_s)
