"""Evidence-aware narrowing: a range shrinks only as far as a stage's trials show it matters.

The hull rule ("keep [min, max] of the best trials") narrows every parameter, whether the
trials say anything about it or not: three poor trials that happened to share a batch
size fix the batch size for every later stage. Here each parameter is narrowed only when
its values separate the good trials from the rest:

* numeric (and integer) parameters: are the good trials' values more concentrated than
  as many values drawn at random from all the stage's trials? The statistic is the good
  values' spread (max - min, on the log scale where the parameter has one), the p-value
  the exact share of equally large subsets of all trials whose spread is at most as
  small (a permutation test, conditional on the values the optimizer happened to try, so
  a stage that already searched narrowly is not mistaken for evidence). A shift to one
  end and an optimum in the middle both concentrate the good values. Without evidence
  (``p >= alpha``) the full range is kept. With it, the range is an upper confidence
  bound (level ``confidence``) on the extent of the region the good values come from,
  centred on their hull: k values spread uniformly over a region of width W have a hull
  of width H with P(H <= t W) = k t^(k-1) - (k-1) t^k, so W is at most H / t at that
  confidence. Few good trials leave a wide range, more trials a narrower one, never
  narrower than ``min_width`` of the full (log) width; the range is shifted to stay
  inside the full one.
* categorical parameters: a choice is dropped only when the trials show it is bad: a
  one-sided Fisher exact test that trials with this choice are good less often than the
  others (``p < alpha``). Choices no trial used are kept (no evidence against them), and
  the best trial's choice is always kept.

Failed trials count among "the others": a region where trainings diverge is evidence. A
test with few trials cannot reach ``alpha``, so small stages keep their full ranges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from scipy import stats

from iishpo.search.space import INT, Param


def unit(p: Param, value: float) -> float:
    """``value``'s position in ``p``'s full range, 0..1 (log scale where ``p`` has one)."""
    low, high = float(p.low), float(p.high)  # type: ignore[arg-type]
    if high == low:
        return 0.0
    if p.log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (float(value) - low) / (high - low)


def from_unit(p: Param, u: float) -> float:
    low, high = float(p.low), float(p.high)  # type: ignore[arg-type]
    if p.log:
        return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return low + u * (high - low)


def concentration_p(good: Sequence[float], rest: Sequence[float]) -> float:
    """P(spread of a random subset of len(good) of all values <= spread of ``good``).

    Exact: sorted, a subset with its smallest value at index i and its largest at j has
    spread v[j] - v[i], and there are C(j - i - 1, k - 2) such subsets.
    """
    k, values = len(good), sorted([*good, *rest])
    n = len(values)
    if k < 2 or k >= n:
        return 1.0
    observed = max(good) - min(good)
    count = 0
    for i in range(n):
        for j in range(i + k - 1, n):
            if values[j] - values[i] > observed + 1e-12:
                break
            count += math.comb(j - i - 1, k - 2)
    return count / math.comb(n, k)


def extent_factor(k: int, confidence: float) -> float:
    """1 / t with k t^(k-1) - (k-1) t^k = 1 - confidence: the hull's upper-bound multiplier."""
    if k < 2:
        return math.inf
    beta = 1.0 - confidence
    low, high = 0.0, 1.0
    for _ in range(60):  # bisection: the left side rises from 0 at t=0 to 1 at t=1
        t = (low + high) / 2
        low, high = (t, high) if k * t ** (k - 1) - (k - 1) * t**k < beta else (low, t)
    return 1.0 / high


def narrow_numeric(
    full: Param, good: Sequence[float], rest: Sequence[float], *, alpha: float, confidence: float,
    min_width: float,
) -> Param:
    """``full`` narrowed around ``good`` when they are concentrated (module doc)."""
    good_u = [unit(full, v) for v in good]
    if concentration_p(good_u, [unit(full, v) for v in rest]) >= alpha:
        return full
    lo, hi = min(good_u), max(good_u)
    centre = (lo + hi) / 2
    half = max(min_width, (hi - lo) * extent_factor(len(good_u), confidence)) / 2
    lo, hi = centre - half, centre + half
    shift = max(0.0, -lo) - max(0.0, hi - 1.0)
    lo, hi = max(0.0, lo + shift), min(1.0, hi + shift)
    low = full.low if lo <= 0 else max(from_unit(full, lo), full.low)  # type: ignore[type-var]
    high = full.high if hi >= 1 else min(from_unit(full, hi), full.high)  # type: ignore[type-var]
    if full.kind == INT:
        return replace(full, low=math.floor(low + 1e-9), high=math.ceil(high - 1e-9))
    return replace(full, low=low, high=high)


def keep_choices(full: Param, good: Sequence[Any], rest: Sequence[Any], *, alpha: float, best: Any) -> Param:
    """``full`` without the choices the trials show to be bad (module doc)."""
    kept = []
    for choice in full.choices:  # type: ignore[union-attr]
        good_with, rest_with = good.count(choice), rest.count(choice)
        good_without, rest_without = len(good) - good_with, len(rest) - rest_with
        if choice == best or good_with + rest_with == 0:
            kept.append(choice)
            continue
        table = [[good_with, rest_with], [good_without, rest_without]]
        p = float(stats.fisher_exact(table, alternative="less").pvalue)
        if p >= alpha:
            kept.append(choice)
    return replace(full, choices=tuple(kept))
