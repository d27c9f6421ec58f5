"""IIS range extraction: from one stage's trials to the next stage's narrowed space.

The good trials are the best ``top_fraction`` of the successful ones (at least
``min_trials``). Two rules turn them into ranges (``study.ranges.rule``):

* ``evidence`` (the default, :func:`narrow_by_evidence`): a parameter is narrowed only
  as far as the good trials' values differ from the others' (:mod:`iishpo.narrowing.evidence`).
* ``hull`` (:func:`narrow_to_best`, the rule of earlier versions): numeric parameters get ``[min, max]``
of those trials, widened by ``margin`` times the width (in log space for log-scaled ones)
and clipped to the full range; categorical parameters keep only the values those trials
used. The layer count that the space's ``resolution_bound`` caps is re-derived for the new
resolution, as the paper found that it depends on the input size: its lower bound comes
from the best trials, its upper bound is what the larger input allows. Layers no good
trial had keep their full ranges. The best ``n_initial`` configurations, projected into
the narrowed space, start the next stage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from iishpo.narrowing.evidence import keep_choices, narrow_numeric
from iishpo.search.space import CATEGORICAL, INT, Config, Param, SearchSpace, build_space
from iishpo.settings.config import RangeExtraction
from iishpo.store import Trial, ranked


def best_trials(trials: Sequence[Trial], settings: RangeExtraction) -> list[Trial]:
    ok = ranked(trials)
    if not ok:
        raise ValueError("no successful trial to extract ranges from: every trial failed")
    count = max(settings.min_trials, math.ceil(settings.top_fraction * len(ok)))
    return ok[: min(count, len(ok))]


def extract(
    trials: Sequence[Trial],
    settings: RangeExtraction,
    space_spec: Mapping[str, Any],
    next_resolution: int,
) -> tuple[SearchSpace, list[Config]]:
    """The narrowed space at ``next_resolution`` and the configurations that start it."""
    top = best_trials(trials, settings)
    full = build_space(space_spec, next_resolution)
    if settings.rule == "hull":
        space = narrow_to_best(full, top, settings.margin)
    else:
        chosen = {t.number for t in top}
        others = [t for t in trials if t.number not in chosen]
        space = narrow_by_evidence(full, top, others, settings)
    initial = [space.project(t.config) for t in top[: settings.n_initial]]
    return space, initial


def narrow_to_best(full: SearchSpace, top: Sequence[Trial], margin: float) -> SearchSpace:
    """``full`` narrowed to the values of the ``top`` trials (the rule of the module doc)."""
    bounded = full.resolution_bound.param if full.resolution_bound is not None else None
    params = []
    for p in full.params:
        values = [t.config[p.name] for t in top if p.name in t.config]
        if not values:
            params.append(p)
        elif p.name == bounded:
            params.append(replace(p, low=min(max(int(min(values)), p.low), p.high)))  # type: ignore[type-var]
        else:
            params.append(_narrow(p, values, margin))
    return full.with_params(params)


def narrow_by_evidence(
    full: SearchSpace, top: Sequence[Trial], others: Sequence[Trial], settings: RangeExtraction
) -> SearchSpace:
    """``full`` narrowed where the ``top`` trials differ from the ``others`` (failed ones
    included: a region where training fails is evidence too). The resolution-bounded
    layer count keeps the upper bound the next resolution allows."""
    bounded = full.resolution_bound.param if full.resolution_bound is not None else None
    params = []
    for p in full.params:
        good = [t.config[p.name] for t in top if p.name in t.config]
        rest = [t.config[p.name] for t in others if p.name in t.config]
        if not good:
            params.append(p)
        elif p.kind == CATEGORICAL:
            params.append(keep_choices(p, good, rest, alpha=settings.alpha, best=good[0]))
        else:
            narrowed = narrow_numeric(
                p, good, rest, alpha=settings.alpha, confidence=settings.confidence,
                min_width=settings.min_width,
            )
            params.append(replace(narrowed, high=p.high) if p.name == bounded else narrowed)
    return full.with_params(params)


def _narrow(full: Param, values: list[Any], margin: float) -> Param:
    if full.kind == CATEGORICAL:
        used = [c for c in full.choices if c in values]  # type: ignore[union-attr]
        return replace(full, choices=tuple(used))
    assert full.low is not None and full.high is not None
    lo, hi = float(min(values)), float(max(values))
    if full.log:
        lo_t, hi_t = math.log(lo), math.log(hi)
        pad = margin * (hi_t - lo_t)
        lo, hi = math.exp(lo_t - pad), math.exp(hi_t + pad)
    else:
        pad = margin * (hi - lo)
        lo, hi = lo - pad, hi + pad
    lo, hi = max(lo, full.low), min(hi, full.high)
    if full.kind == INT:
        return replace(full, low=math.floor(lo + 1e-9), high=math.ceil(hi - 1e-9))
    return replace(full, low=lo, high=hi)


def describe(space: SearchSpace) -> dict[str, Any]:
    """Human-readable ranges, for the ranges file and the log."""
    out: dict[str, Any] = {}
    for p in space.params:
        out[p.name] = list(p.choices) if p.kind == CATEGORICAL else [p.low, p.high]  # type: ignore[arg-type]
    return out
