"""A council's shape, what a benchmark ran: agents, drafts per agent, critique/revise rounds and tokens per
generation. Each phase records it beside its figures (`shape` in its run JSON, the keys quality.py's Shape uses),
and docs/benchmarks.md names it in the header of the section (benchmarks/report_doc.py)."""

from __future__ import annotations

NOT_RECORDED = "shape not recorded"
KEYS = ("agents", "drafts", "rounds", "max_tokens")


def council_shape(council, request=None) -> dict:
    """The shape a deliberation of `request` runs with on `council` (a CouncilSpec): the request's num_agents,
    rounds and max_tokens where it sets them, the council's where not (as actors/protocol.py seats and
    generates). Drafts are the council's drafts_per_agent, a ceiling: the propose stage may stop drafting early."""
    n = len(council.agents)
    agents = min(request.num_agents or n, n) if request is not None else n
    rounds = request.rounds if request is not None and request.rounds is not None else council.rounds
    if request is not None and request.max_tokens:
        max_tokens = request.max_tokens
    else:
        max_tokens = _one_or_all({a.max_tokens for a in council.agents[:agents]})
    return {"agents": agents, "drafts": council.drafts_per_agent, "rounds": rounds, "max_tokens": max_tokens}


def merged(shapes: list[dict]) -> dict:
    """One shape for several (a benchmark over 1, 3 and 5 agents): a value they share, or every value, sorted."""
    out = {}
    for key in KEYS:
        values: set = set()
        for shape in shapes:
            v = shape[key]
            values.update(v if isinstance(v, list) else [v])
        out[key] = _one_or_all(values)
    return out


def shape_label(shape: dict | None) -> str:
    """'3 agents, up to 4 drafts, 1 round, max_tokens 96'; NOT_RECORDED when a run did not record its shape."""
    if not shape or any(shape.get(k) is None for k in KEYS):
        return NOT_RECORDED
    drafts = shape["drafts"]
    return ", ".join([_count(shape["agents"], "agent"),
                      _count(drafts, "draft") if drafts == 1 else f"up to {_count(drafts, 'draft')}",
                      _count(shape["rounds"], "round"), f"max_tokens {_values(shape['max_tokens'])}"])


def _one_or_all(values: set):
    ordered = sorted(values)
    return ordered[0] if len(ordered) == 1 else ordered


def _values(value) -> str:
    return "/".join(map(str, value)) if isinstance(value, list) else str(value)


def _count(value, word: str) -> str:
    return f"{_values(value)} {word}" + ("" if value == 1 else "s")
