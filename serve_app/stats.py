"""Latency percentiles for /v1/status."""

from __future__ import annotations


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
