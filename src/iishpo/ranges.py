"""IIS range extraction: from one stage's best trials to the next stage's narrowed space.

Good value ranges come from the best ``top_fraction`` of the successful trials (at least
``min_trials``). :func:`narrow_to_best` is the rule: numeric parameters get ``[min, max]``
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

from iishpo.config import RangeExtraction
from iishpo.space import CATEGORICAL, INT, Config, Param, SearchSpace, build_space
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
    space = narrow_to_best(build_space(space_spec, next_resolution), top, settings.margin)
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
