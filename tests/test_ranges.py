"""IIS range extraction narrows the space around the best trials and re-derives n_conv."""

from __future__ import annotations

import math
import random

import pytest

from helpers import compose
from iishpo.config import RangeExtraction
from iishpo.ranges import best_trials, extract
from iishpo.space import build_space
from iishpo.store import Trial


def _trials(space_spec: dict, resolution: int, n: int) -> list[Trial]:
    space = build_space(space_spec, resolution)
    rng = random.Random(0)
    trials = []
    for i in range(n):
        config = space.sample(rng)
        # the known structure: errors grow with the distance of log10(lr) from -2
        error = min(0.99, abs(math.log10(config["learning_rate"]) + 2) / 3)
        trials.append(Trial(i, config, "ok", error, error, 3, 1, 0.1, 0.1 * i, None, i, "t"))
    trials.append(Trial(n, trials[0].config, "failed", None, 1.0, 0, -1, 0.1, 0.1 * n, "x", n, "t"))
    return trials


@pytest.fixture
def spec() -> dict:
    return compose().space


def test_ranges_cover_the_best_trials_and_shrink(spec: dict) -> None:
    settings = RangeExtraction(top_fraction=0.2, min_trials=3, margin=0.0, n_initial=2)
    trials = _trials(spec, 16, 40)
    top = best_trials(trials, settings)
    assert len(top) == 8 and all(t.ok for t in top)
    space, initial = extract(trials, settings, spec, 32)
    lr = space["learning_rate"]
    assert lr.low == pytest.approx(min(t.config["learning_rate"] for t in top))
    assert lr.high == pytest.approx(max(t.config["learning_rate"] for t in top))
    full = build_space(spec, 32)
    assert lr.high / lr.low < full["learning_rate"].high / full["learning_rate"].low
    assert set(space["batch_size"].choices) == {t.config["batch_size"] for t in top}
    assert initial == [space.project(t.config) for t in top[:2]]
    for point in initial:
        space.validate(point)


def test_layer_count_is_re_derived_for_the_larger_resolution(spec: dict) -> None:
    settings = RangeExtraction(top_fraction=0.2, min_trials=3, margin=0.0, n_initial=1)
    trials = _trials(spec, 16, 40)
    top = best_trials(trials, settings)
    space, _ = extract(trials, settings, spec, 64)
    assert space["n_conv"].low == min(t.config["n_conv"] for t in top)
    assert space["n_conv"].high == build_space(spec, 64).max_conv > build_space(spec, 16).max_conv
    # filters of layers the small images could not have keep the full range
    deepest = f"conv_filters_{space.max_conv - 1}"
    assert space[deepest] == build_space(spec, 64)[deepest]


def test_margin_widens_in_log_space_within_bounds(spec: dict) -> None:
    trials = _trials(spec, 16, 40)
    narrow, _ = extract(trials, RangeExtraction(0.2, 3, 0.0, 1), spec, 32)
    wide, _ = extract(trials, RangeExtraction(0.2, 3, 0.5, 1), spec, 32)
    assert wide["learning_rate"].low < narrow["learning_rate"].low
    assert wide["learning_rate"].high > narrow["learning_rate"].high
    assert wide["learning_rate"].low >= build_space(spec, 32)["learning_rate"].low


def test_all_failed_stage_cannot_give_ranges(spec: dict) -> None:
    failed = [Trial(0, {}, "failed", None, 1.0, 0, -1, 0.1, 0.1, "boom", 0, "t")]
    with pytest.raises(ValueError, match="every trial failed"):
        extract(failed, RangeExtraction(0.2, 3, 0.0, 1), spec, 32)
