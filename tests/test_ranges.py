"""IIS range extraction, checked against ranges computed by hand from hand-made trials."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import compose
from iishpo.narrowing.ranges import best_trials, describe, extract
from iishpo.search.space import CATEGORICAL, build_space
from iishpo.settings.config import RangeExtraction
from iishpo.store import WORST_LOSS, Trial

#: A small space whose ranges are easy to compute by hand: at 16 px n_conv <= 3, at 64 px <= 5.
SPEC: dict[str, Any] = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 1.0},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128]},
    "n_conv": {"type": "int", "low": 1, "high": 6},
    "n_fc": {"type": "int", "low": 1, "high": 3},
    "filters": {"type": "int", "low": 4, "high": 256, "log": True, "per_layer_of": "n_conv"},
    "resolution_bound": {"param": "n_conv", "min_feature_size": 2},
}


def config(lr: float, momentum: float, batch: int, n_fc: int, filters: list[int]) -> dict[str, Any]:
    return {
        "lr": lr, "momentum": momentum, "batch_size": batch, "n_conv": len(filters), "n_fc": n_fc,
        **{f"filters_{i}": f for i, f in enumerate(filters)},
    }


#: number -> (validation error, configuration) of a finished 16 px stage; None: failed
STAGE = {
    0: (0.50, config(1e-1, 0.10, 16, 3, [4])),
    1: (0.20, config(1e-3, 0.50, 32, 2, [16, 32])),
    2: (0.90, config(1e-5, 0.95, 128, 3, [256, 256, 256])),
    3: (0.10, config(1e-2, 0.90, 64, 1, [32, 64, 128])),
    4: (0.60, config(5e-1, 0.00, 16, 1, [200])),
    5: (0.20, config(1e-3, 0.70, 32, 1, [64, 8])),
    6: (0.30, config(3e-5, 1.00, 128, 3, [4])),
    7: (0.15, config(1e-4, 0.30, 64, 2, [16, 16])),
    8: (None, config(1.0, 0.99, 16, 3, [4, 4, 4])),
}
#: sorted by hand: lowest error first, ties (1 and 5) by number; the failed 8 last of all
BY_ERROR = [3, 7, 1, 5, 6, 0, 4, 2]


def trial(number: int) -> Trial:
    error, cfg = STAGE[number]
    if error is None:
        return Trial(number, cfg, "failed", None, WORST_LOSS, 0, -1, 0.1, 0.1, "boom", number, "t")
    return Trial(number, cfg, "ok", error, error, 3, 1, 0.1, 0.1 * number, None, number, "t")


TRIALS = [trial(n) for n in (4, 8, 0, 7, 2, 5, 3, 6, 1)]  # the store's order does not matter


def hull(top_fraction: float, min_trials: int, margin: float, n_initial: int) -> RangeExtraction:
    """The hull rule with these settings (the evidence rule's own settings unused)."""
    return RangeExtraction("hull", top_fraction, min_trials, n_initial, margin, 0.05, 0.9, 0.2)


def evidence(top_fraction: float = 0.25, min_trials: int = 3, n_initial: int = 2) -> RangeExtraction:
    return RangeExtraction("evidence", top_fraction, min_trials, n_initial, 0.1, 0.05, 0.9, 0.2)


def lr_stage(n: int) -> list[Trial]:
    """``n`` trials in which only the learning rate matters (best at 1e-3): lr on an even
    log grid, the other parameters cycling with no bearing on the error; the last failed."""
    trials = []
    for i in range(n):
        lr = 10 ** (-5 + 5 * i / (n - 1))
        cfg = config(lr, (i * 7 % n) / n, (16, 32, 64, 128)[i % 4], 1 + i % 3, [4 * 2 ** (i % 3)] * (1 + i % 2))
        error = abs(-5 + 5 * i / (n - 1) + 3) / 5 + 0.001 * (i % 5)
        if i == n - 1:
            trials.append(Trial(i, cfg, "failed", None, WORST_LOSS, 0, -1, 0.1, 0.1, "boom", i, "t"))
        else:
            trials.append(Trial(i, cfg, "ok", error, error, 3, 1, 0.1, 0.1 * i, None, i, "t"))
    return trials


def test_evidence_rule_narrows_only_what_matters() -> None:
    trials = lr_stage(24)
    space, initial = extract(trials, evidence(), SPEC, 64)
    full = build_space(SPEC, 64)
    # 23 successes, the top 6 are the lr grid points nearest 1e-3
    lr = space["lr"]
    assert lr.low < 1e-3 < lr.high and (lr.low, lr.high) != (full["lr"].low, full["lr"].high)
    # momentum, batch size and the per-layer widths cycle independently of the error: kept
    assert (space["momentum"].low, space["momentum"].high) == (0.0, 1.0)
    assert space["batch_size"].choices == (16, 32, 64, 128)
    assert space["n_fc"] == full["n_fc"]
    # the bounded layer count keeps what 64 px allows
    assert space["n_conv"].high == full["n_conv"].high == 5
    # the best: i = 9 (lr 10**-3.04, error 0.0087 + 0.004), then i = 10 (10**-2.83, 0.0348)
    assert initial == [space.project(trials[9].config), space.project(trials[10].config)]


def test_evidence_rule_with_three_trials_keeps_the_full_space() -> None:
    trials = lr_stage(24)[:3]
    space, _ = extract(trials, evidence(), SPEC, 64)
    assert space.params == build_space(SPEC, 64).params


@pytest.mark.parametrize(
    ("top_fraction", "min_trials", "expected"),
    [
        (0.4, 3, BY_ERROR[:4]),  # ceil(0.4 * 8 successful) = 4
        (0.1, 3, BY_ERROR[:3]),  # ceil(0.8) = 1, raised to min_trials
        (0.3, 20, BY_ERROR),  # more than there are: every successful trial
        (1.0, 1, BY_ERROR),
    ],
)
def test_best_trials_are_the_lowest_errors(top_fraction: float, min_trials: int, expected: list[int]) -> None:
    top = best_trials(TRIALS, hull(top_fraction, min_trials, 0.0, 1))
    assert [t.number for t in top] == expected


def test_ranges_are_the_span_of_the_best_trials_at_the_next_resolution() -> None:
    space, initial = extract(TRIALS, hull(0.4, 3, 0.0, 2), SPEC, 64)
    ranges = {p.name: p.choices if p.kind == CATEGORICAL else (p.low, p.high) for p in space.params}
    # the best four are trials 3, 7, 1, 5; a log range's bounds pass through exp(log(x))
    assert ranges.pop("lr") == pytest.approx((1e-4, 1e-2), rel=1e-12)
    assert ranges == {
        "momentum": (0.3, 0.9),
        "batch_size": (32, 64),
        "n_conv": (2, 5),  # lower bound from the best trials, upper bound from 64 px
        "n_fc": (1, 2),
        "filters_0": (16, 64),
        "filters_1": (8, 64),
        "filters_2": (128, 128),  # only trial 3 had a third layer
        "filters_3": (4, 256),  # layers no good trial had (16 px allowed 3): the full range
        "filters_4": (4, 256),
    }
    assert space.resolution == 64
    assert [p.log for p in space.params] == [True, False, False, False, False] + [True] * 5
    assert [p.active_if for p in space.params[5:]] == [("n_conv", i) for i in range(5)]
    # the best two start the next stage, best first, projected into the new space (where
    # exp(log(x)) bounds may miss a trial's value by an ulp)
    assert initial == [space.project(STAGE[3][1]), space.project(STAGE[7][1])]
    for point, (_, expected) in zip(initial, [STAGE[3], STAGE[7]], strict=True):
        assert point == pytest.approx(expected, rel=1e-12)
        space.validate(point)
    assert [type(v) for v in initial[0].values()] == [float, float, int, int, int, int, int, int]


def test_margin_widens_numeric_ranges_within_the_full_range() -> None:
    space, _ = extract(TRIALS, hull(0.4, 3, 0.25, 1), SPEC, 64)
    # lr: 1e-4..1e-2 spans 2 decades; a quarter of that, half a decade, on either side
    assert space["lr"].low == pytest.approx(10**-4.5)
    assert space["lr"].high == pytest.approx(10**-1.5)
    # momentum: 0.3..0.9 widened by 0.15 on either side, clipped to the full [0, 1]
    assert space["momentum"].low == pytest.approx(0.15)
    assert space["momentum"].high == 1.0
    # filters_0: 16..64 (a factor 4) widened by the factor 4**0.25 = sqrt(2), then to integers
    assert (space["filters_0"].low, space["filters_0"].high) == (11, 91)  # 11.31.., 90.50..
    assert (space["filters_1"].low, space["filters_1"].high) == (4, 108)  # 8/1.68.., 64*1.68..
    assert (space["filters_2"].low, space["filters_2"].high) == (128, 128)  # no width to widen
    # n_fc: 1..2 widened by 0.25 -> 0.75..2.25, clipped to 1, rounded outwards to 3
    assert (space["n_fc"].low, space["n_fc"].high) == (1, 3)
    assert (space["n_conv"].low, space["n_conv"].high) == (2, 5)  # no margin on the bound count
    assert space["batch_size"].choices == (32, 64)


def test_shipped_space_re_derives_the_conv_bound() -> None:
    spec = compose("space=cnn").space
    shallow = config(1e-3, 0.5, 32, 1, [16])
    stage = []
    for number in range(4):
        cfg = {k: v for k, v in shallow.items() if k != "momentum" and not k.startswith("filters")}
        cfg.update(learning_rate=cfg.pop("lr"), l1=1e-6, l2=1e-4, filter_size=3,
                   conv_filters_0=16 + number, fc_units_0=64)
        stage.append(Trial(number, cfg, "ok", 0.1 * number, 0.1 * number, 3, 1, 0.1, 0.1, None, number, "t"))
    build_space(spec, 16).validate(stage[0].config)
    space, _ = extract(stage, hull(0.5, 1, 0.0, 1), spec, 128)
    assert (space["n_conv"].low, space["n_conv"].high) == (1, 6)  # 128 px: 6 conv layers
    assert (space["conv_filters_0"].low, space["conv_filters_0"].high) == (16, 17)
    assert space["conv_filters_5"] == build_space(spec, 128)["conv_filters_5"]


def test_all_failed_stage_cannot_give_ranges() -> None:
    failed = [trial(8)]
    with pytest.raises(ValueError, match="every trial failed"):
        extract(failed, hull(0.2, 3, 0.0, 1), SPEC, 32)


def evidence_stage() -> list[Trial]:
    """20 trials: the best five (errors 0.10..0.14) all have one conv layer and momentum 0.5,
    the best of them batch size 128 and the other four 32; the 15 others (errors 0.5..) have
    two or three conv layers, momenta 0, 0.06, .., 0.84 and batch size 128 (twelve) or 64."""
    trials = []
    for i in range(20):
        if i < 5:
            cfg = config(1e-3, 0.5, 128 if i == 0 else 32, 1, [8])
            error = 0.10 + 0.01 * i
        else:
            cfg = config(1e-3, (i - 5) * 0.06, 128 if i < 17 else 64, 1, [8] * (2 + i % 2))
            error = 0.5 + 0.01 * i
        trials.append(Trial(i, cfg, "ok", error, error, 3, 1, 0.1, 0.1 * i, None, i, "t"))
    return trials


def test_evidence_rule_narrows_the_concentrated_and_keeps_the_bound_and_the_best_choice() -> None:
    space, _ = extract(evidence_stage(), evidence(top_fraction=0.25, min_trials=3), SPEC, 64)
    # momentum: the five good values coincide (p = 1 / C(20, 5)): min_width 0.2 of [0, 1]
    # centred on 0.5
    assert (space["momentum"].low, space["momentum"].high) == pytest.approx((0.4, 0.6))
    # n_conv: the good values all 1 (unit 0 of [1, 5]) would give [1, 1 + 0.2 * 4 -> 2]; the
    # bounded layer count keeps the 5 that 64 px allows
    assert (space["n_conv"].low, space["n_conv"].high) == (1, 5)
    # batch size 128 is in 1 of the 5 good and 12 of the 15 others: one-sided Fisher
    # p = (C(13,0) C(7,5) + C(13,1) C(7,4)) / C(20,5) = 476 / 15504 = 0.031 < 0.05, but the
    # best trial used it; 64 (0 of 5, 3 of 15): p = C(17,5) / C(20,5) = 0.40, kept
    assert space["batch_size"].choices == (16, 32, 64, 128)
    # the same for every trial: no evidence, the full ranges
    assert space["lr"] == build_space(SPEC, 64)["lr"]
    assert space["n_fc"] == build_space(SPEC, 64)["n_fc"]


@pytest.mark.parametrize(("rule", "n_conv"), [(evidence(), (1, 2)), (hull(0.25, 3, 0.0, 1), (1, 1))])
def test_a_space_without_resolution_bound_narrows_the_layer_count_like_any_int(
    rule: RangeExtraction, n_conv: tuple[int, int]
) -> None:
    spec = {k: v for k, v in SPEC.items() if k != "resolution_bound"}
    space, _ = extract(evidence_stage(), rule, spec, 64)
    # evidence: unit 0 of the full [1, 6] widened to 0.2 -> 1 + 0.2 * 5 = 2; hull: [1, 1]
    assert (space["n_conv"].low, space["n_conv"].high) == n_conv


def test_describe_lists_choices_and_bounds() -> None:
    assert describe(build_space(SPEC, 16)) == {
        "lr": [1e-5, 1.0], "momentum": [0.0, 1.0], "batch_size": [16, 32, 64, 128],
        "n_conv": [1, 3],  # 16 px: three halvings leave 2 px
        "n_fc": [1, 3], "filters_0": [4, 256], "filters_1": [4, 256], "filters_2": [4, 256],
    }
