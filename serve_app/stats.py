"""Latency percentiles for /v1/status."""

from __future__ import annotations

from actors.models.records import FINISHED_STATUSES


def percentiles(samples: list[float], qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | int | None]:
    """Nearest-rank percentiles of the samples; None when there are none."""
    ordered = sorted(samples)
    out: dict[str, float | int | None] = {"count": len(ordered)}
    for q in qs:
        if not ordered:
            out[f"p{q}"] = None
        else:
            rank = max(1, -(-q * len(ordered) // 100))  # ceil(q/100 * n)
            out[f"p{q}"] = round(ordered[rank - 1], 3)
    return out




def role_summary(role: str, counters: dict[str, int], active: int, latency: dict) -> dict:
    """One council's figures for /v1/status, from the flat counters hash (`accepted.<role>`,
    `deliberations.<role>.<status>`, `tokens.<role>.<kind>`, `orchestrations.<role>.<decided_by>`)."""
    prompt = counters.get(f"tokens.{role}.prompt", 0)
    completion = counters.get(f"tokens.{role}.completion", 0)
    return {
        "accepted": counters.get(f"accepted.{role}", 0),
        "active": active,  # pending or in progress right now
        "by_status": {s: counters.get(f"deliberations.{role}.{s}", 0) for s in FINISHED_STATUSES},
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "orchestrations": {d: counters.get(f"orchestrations.{role}.{d}", 0) for d in ("architect", "fallback")},
        "duration_s": latency,
    }


def stage_percentiles(samples: list[dict]) -> dict[str, dict]:
    """Per stage kind (propose, critique, revise, rank, ...), percentiles of the stage's wall time over the
    duration samples of Store.duration_samples (every stage instance is one sample)."""
    by_kind: dict[str, list[float]] = {}
    for sample in samples:
        for kind, seconds in sample["stages"]:
            by_kind.setdefault(kind, []).append(seconds)
    return {kind: percentiles(seconds) for kind, seconds in by_kind.items()}
