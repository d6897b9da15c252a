"""The statistics of the quality benchmark (benchmarks/quality.py): pure functions, no engine, no I/O.

  wilson(k, n)                     95 % Wilson score interval of a pass rate;
  mcnemar_exact(b, c)              paired exact McNemar test: two-sided exact binomial test on the discordant
                                   pairs (b: only the first arm passed; c: only the second), p = 1 without any;
  discordant(a, b)                 (b, c) of two arms' paired outcomes (dicts: attempt key -> passed);
  random_pick_expectation(pools)   expected passes of a uniformly random pick from each attempt's pool, exact
                                   (a Fraction): the sum over attempts of passing / size;
  samples_within(budget, each)     how many self-consistency samples of `each` tokens fit in `budget` tokens
                                   (at least 1, at most `cap`): the equal-token budget;
  median(xs)                       the median, None for no values.
Tested in tests/test_quality_stats.py.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from fractions import Fraction

from .common import wilson

__all__ = ["wilson", "mcnemar_exact", "discordant", "random_pick_expectation", "samples_within", "median"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under the null each of the b + c discordant pairs falls either way with
    probability 1/2, so p = min(1, 2 * P(X <= min(b, c))) for X ~ Binomial(b + c, 1/2)."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts are not negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))


def discordant(first: Mapping, second: Mapping) -> tuple[int, int]:
    """(attempts only `first` passed, attempts only `second` passed), over the attempt keys both arms have."""
    keys = first.keys() & second.keys()
    b = sum(1 for k in keys if first[k] and not second[k])
    c = sum(1 for k in keys if second[k] and not first[k])
    return b, c


def random_pick_expectation(pools: Iterable[tuple[int, int]]) -> Fraction:
    """Expected number of attempts a uniformly random pick from each pool gets right, exactly: the sum of
    passing / size over the (passing, size) pools; an empty pool contributes nothing."""
    total = Fraction(0)
    for passing, size in pools:
        if not 0 <= passing <= size:
            raise ValueError(f"a pool of {size} cannot hold {passing} passing candidates")
        if size:
            total += Fraction(passing, size)
    return total


def samples_within(budget_tokens: float, per_sample_tokens: float, cap: int = 64) -> int:
    """How many samples of `per_sample_tokens` (prompt + completion) fit in `budget_tokens`: the floor of the
    ratio, at least 1 (the baseline always answers) and at most `cap` (a council's agent ceiling)."""
    if per_sample_tokens <= 0:
        return max(1, min(cap, 1))
    return max(1, min(cap, int(budget_tokens // per_sample_tokens)))


def median(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return statistics.median(xs) if xs else None
