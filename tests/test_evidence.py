"""Evidence-aware narrowing on synthetic objectives whose effects are known by design."""

from __future__ import annotations

import random
import statistics

import pytest

from iishpo.narrowing.evidence import (
    concentration_p,
    extent_factor,
    from_unit,
    keep_choices,
    narrow_numeric,
    unit,
)
from iishpo.search.space import CATEGORICAL, FLOAT, INT, Param

X = Param("x", FLOAT, low=1e-4, high=1.0, log=True)
Y = Param("y", FLOAT, low=0.0, high=10.0)
N = Param("n", INT, low=1, high=6)
C = Param("c", CATEGORICAL, choices=(16, 32, 64, 128))
SETTINGS = {"alpha": 0.05, "confidence": 0.9, "min_width": 0.2}
TOP = 0.25


def width(narrowed: Param, full: Param) -> float:
    """Retained fraction of the full (log) width."""
    return unit(full, narrowed.high) - unit(full, narrowed.low)  # type: ignore[arg-type]


def draws(n: int, seed: int, loss) -> list[dict]:
    """``n`` uniform draws (in unit space) with their losses, in drawing order (so smaller
    samples of a run nest in larger ones)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        point = {"x": from_unit(X, rng.random()), "y": from_unit(Y, rng.random()),
                 "n": rng.randint(1, 6), "c": rng.choice(C.choices)}
        point["loss"] = loss(point) + rng.gauss(0, 0.05)
        out.append(point)
    return out


def trials(n: int, seed: int, loss) -> list[dict]:
    """``n`` draws, best first."""
    return sorted(draws(n, seed, loss), key=lambda t: t["loss"])


def split(ranked: list[dict], name: str) -> tuple[list, list]:
    k = max(3, round(TOP * len(ranked)))
    return [t[name] for t in ranked[:k]], [t[name] for t in ranked[k:]]


def x_matters(t: dict) -> float:
    """Only x matters: optimum at 10**-2 (unit position 0.5), error grows on both sides."""
    return (unit(X, t["x"]) - 0.5) ** 2 * 8


def test_a_parameter_without_effect_keeps_most_of_its_width() -> None:
    # y has no effect: a test at alpha 0.05 narrows it by chance in about 1 run of 20,
    # and then only to the good trials' hull, which is wide for a random subset
    widths = [width(narrow_numeric(Y, *split(trials(30, s, x_matters), "y"), **SETTINGS), Y) for s in range(20)]
    assert sum(w >= 0.8 for w in widths) >= 18, widths
    assert statistics.mean(widths) >= 0.9, widths


def test_a_parameter_that_matters_is_narrowed_around_its_optimum() -> None:
    for seed in range(5):
        narrowed = narrow_numeric(X, *split(trials(40, seed, x_matters), "x"), **SETTINGS)
        assert narrowed.low < 1e-2 < narrowed.high
        assert width(narrowed, X) < 0.6


def test_more_trials_never_widen_an_informative_parameter() -> None:
    # nested samples of 20, 40 and 80 trials of the same runs; mean over 10 runs
    means = []
    for n in (20, 40, 80):
        runs = []
        for seed in range(10):
            ranked = sorted(draws(80, seed, x_matters)[:n], key=lambda t: t["loss"])
            runs.append(width(narrow_numeric(X, *split(ranked, "x"), **SETTINGS), X))
        means.append(statistics.mean(runs))
    assert means[0] >= means[1] >= means[2], means
    assert means[2] < 0.5, means


def test_three_trials_narrow_nothing() -> None:
    for seed in range(10):
        ranked = trials(3, seed, x_matters)
        good, rest = [ranked[0]["x"]], [t["x"] for t in ranked[1:]]
        narrowed = narrow_numeric(X, good, rest, **SETTINGS)
        assert narrowed == X  # no test of 1 against 2 values reaches 0.05


def test_the_minimum_width_holds_and_stays_inside_the_range() -> None:
    # good values crowded at the lower end: the floor of 0.2 is kept, shifted inside
    good = [1e-4, 1.1e-4, 1.2e-4, 1.3e-4, 1.2e-4]
    rest = [from_unit(X, u) for u in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.55, 0.65, 0.75)]
    narrowed = narrow_numeric(X, good, rest, **SETTINGS)
    assert narrowed.low == X.low
    assert width(narrowed, X) == pytest.approx(0.2)


def test_integer_parameters_round_outward() -> None:
    good, rest = [5, 6, 6, 5, 6], [1, 1, 2, 2, 3, 1, 2, 3, 1, 2]
    narrowed = narrow_numeric(N, good, rest, **SETTINGS)
    # hull 5..6 is unit 0.8..1.0; 5 values: 2.40 times as wide, 0.48, shifted inside:
    # unit 0.52..1.0, i.e. 3.6..6, rounded outward to 3..6
    assert (narrowed.low, narrowed.high) == (3, 6)


def test_the_extent_factor_solves_the_hull_distribution() -> None:
    # k t^(k-1) - (k-1) t^k = 0.1 at t = 1 / factor (values by hand: k=2: 2t - t^2 = 0.1)
    assert extent_factor(2, 0.9) == pytest.approx(1 / (1 - 0.9**0.5))
    for k in (3, 5, 10, 40):
        t = 1 / extent_factor(k, 0.9)
        assert k * t ** (k - 1) - (k - 1) * t**k == pytest.approx(0.1, abs=1e-9)
    factors = [extent_factor(k, 0.9) for k in (3, 5, 10, 20, 40)]
    assert factors == sorted(factors, reverse=True) and factors[-1] > 1


def test_concentration_p_counts_subsets_exactly() -> None:
    # 4 values, subsets of 2: spreads 1,2,3,1,2,1 (values 0,1,2,3); good {1,2} spread 1
    assert concentration_p([1.0, 2.0], [0.0, 3.0]) == pytest.approx(3 / 6)
    assert concentration_p([0.0, 3.0], [1.0, 2.0]) == 1.0
    assert concentration_p([5.0], [1.0, 2.0]) == 1.0  # one value: no spread to test


def test_a_bad_choice_is_dropped_and_the_rest_kept() -> None:
    def c16_bad(t: dict) -> float:
        return 1.0 if t["c"] == 16 else 0.0
    ranked = trials(40, 0, c16_bad)
    good, rest = split(ranked, "c")
    narrowed = keep_choices(C, good, rest, alpha=0.05, best=ranked[0]["c"])
    assert narrowed.choices == (32, 64, 128)


def test_choices_without_evidence_are_kept() -> None:
    kept = 0
    for seed in range(20):
        ranked = trials(30, seed, x_matters)  # c has no effect
        good, rest = split(ranked, "c")
        kept += keep_choices(C, good, rest, alpha=0.05, best=ranked[0]["c"]).choices == C.choices
    assert kept >= 18
    # a choice no trial used stays (16, 128); one always in the rest goes (64)
    assert keep_choices(C, [32, 32, 32], [64] * 20, alpha=0.05, best=32).choices == (16, 32, 128)
    # the best trial's choice stays even against the evidence
    assert 64 in keep_choices(C, [64, 32, 32, 32, 32], [64] * 30, alpha=0.05, best=64).choices


def test_unit_positions_by_hand() -> None:
    assert unit(Param("z", FLOAT, low=2.0, high=10.0), 4.0) == 0.25  # (4 - 2) / (10 - 2)
    assert unit(Param("z", FLOAT, low=2.0, high=2.0), 2.0) == 0.0  # no width: the low end


def test_a_range_reaching_the_top_keeps_the_exact_upper_bound() -> None:
    # five equal good values at the top: the minimum width 0.2 centred on unit 1.0, shifted
    # down to 0.8..1.0; the upper bound is the full one exactly, not exp(log(0.2)) (an ulp off)
    p = Param("p", FLOAT, low=1e-4, high=0.2, log=True)
    narrowed = narrow_numeric(p, [0.2] * 5, [from_unit(p, u / 20) for u in range(10)], **SETTINGS)
    assert narrowed.high == 0.2
    assert narrowed.low == pytest.approx(from_unit(p, 0.8))


def test_integer_parameters_at_the_low_end_round_outward() -> None:
    good, rest = [1, 2, 1, 2, 1], [5, 6, 6, 5, 4, 6, 5, 4, 6, 5]
    narrowed = narrow_numeric(N, good, rest, **SETTINGS)
    # hull 1..2 is unit 0..0.2; 2.40 times as wide, 0.48, centred on 0.1 and shifted inside:
    # unit 0..0.48, i.e. 1..3.4, rounded outward to 1..4
    assert (narrowed.low, narrowed.high) == (1, 4)


def test_a_p_value_equal_to_alpha_is_no_evidence() -> None:
    # unit values 0.1, 0.2 good, 0, 0.3 the rest: 3 of the 6 pairs are as close, p = 0.5
    assert narrow_numeric(Y, [1.0, 2.0], [0.0, 3.0], alpha=0.5, confidence=0.9, min_width=0.2) == Y
    # three close good values among five far ones: only the good triple is as close, p = 1/56
    good, rest = [1.0, 1.1, 1.2], [5.0, 6.0, 7.0, 8.0, 9.0]
    assert narrow_numeric(Y, good, rest, alpha=1 / 56, confidence=0.9, min_width=0.2) == Y
    assert narrow_numeric(Y, good, rest, alpha=1 / 55, confidence=0.9, min_width=0.2) != Y
    # 64 in 1 of 2 good and both others: one-sided Fisher P(X <= 1) = 3/6 (X = 2: 3/6)
    assert keep_choices(C, [64, 32], [64, 64], alpha=0.5, best=32).choices == C.choices


def test_a_choice_only_the_good_trials_used_is_kept() -> None:
    # one-sided: 32 in 4 of 5 good and none of 20 others is no evidence against it (p = 1),
    # while 64 (0 of 5, 20 of 20: p = 1 / C(25, 5)) goes
    kept = keep_choices(C, [32, 32, 32, 32, 128], [64] * 20, alpha=0.05, best=128).choices
    assert kept == (16, 32, 128)
