"""Paired comparison over seeds, checked against values from statistical tables; Holm's
adjustment against hand-computed values and his sequential procedure."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from iishpo.results.comparison import compare_paired, holm, holm_adjust


def pairs_from(differences: list[float], baseline: float = 10.0) -> dict[int, tuple[float, float]]:
    return {seed: (baseline + d, baseline) for seed, d in enumerate(differences)}


def test_consistent_difference_is_beyond_noise() -> None:
    # differences 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); t = 4.243 on 4 df
    result = compare_paired("wall_time", "iis", "standard", pairs_from([1, 2, 3, 4, 5]))
    assert result.differences == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert result.mean == pytest.approx(3.0)
    assert result.std == pytest.approx(2.5**0.5)
    # t(0.975, 4) = 2.776445: 3 -/+ 2.776445 * sqrt(0.5)
    assert result.ci_low == pytest.approx(1.036757, abs=1e-5)
    assert result.ci_high == pytest.approx(4.963243, abs=1e-5)
    assert result.p_ttest == pytest.approx(0.013236, abs=1e-5)
    # exact signed-rank: all 5 ranks positive, 2 of 2**5 sign patterns as extreme
    assert result.p_wilcoxon == pytest.approx(2 / 32)
    assert (result.metric, result.strategy, result.baseline) == ("wall_time", "iis", "standard")
    assert result.beyond_noise is True
    assert (result.p_holm, result.family) == (result.p_ttest, 1)  # judged alone: a family of one
    assert result.verdict() == (
        "iis minus standard, wall_time: mean +3 (95% CI +1.037 .. +4.963; paired t-test "
        "p=0.0132, Wilcoxon p=0.0625; n=5): beyond seed noise"
    )


def test_mixed_differences_are_within_noise() -> None:
    result = compare_paired("best_val_error", "iis", "standard", pairs_from([0.3, -0.2, 0.1, -0.1]))
    assert result.mean == pytest.approx(0.025)
    assert result.ci_low < 0 < result.ci_high
    assert result.beyond_noise is False
    assert "within seed noise" in result.verdict()


def test_pairs_are_matched_by_seed_not_by_order() -> None:
    pairs = {2: (5.0, 4.0), 0: (3.0, 1.0), 1: (7.0, 4.0)}
    result = compare_paired("m", "a", "b", pairs)
    assert result.seeds == (0, 1, 2)
    assert result.differences == (2.0, 3.0, 1.0)


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_seeds_gives_no_test(n: int) -> None:
    result = compare_paired("test_score", "iis", "standard", pairs_from([0.5, 0.7][:n]))
    assert result.p_ttest is None and result.ci_low is None and result.beyond_noise is None
    assert result.std is None and result.p_wilcoxon is None and result.ci_high is None
    assert result.metric == "test_score" and result.seeds == tuple(range(n))
    assert result.differences == pytest.approx([0.5, 0.7][:n])
    mean, seeds = ("+0.5", "1 seed") if n == 1 else ("+0.6", "2 seeds")
    assert result.verdict() == (
        f"iis minus standard, test_score: mean {mean} over {seeds}; fewer than 3 seeds, "
        "so no interval or test is possible"
    )


def test_identical_differences() -> None:
    """No spread: no difference is certainly none (p = 1), any other certainly one (p = 0).
    Signed ranks of three positive differences: 1 of the 2**3 sign patterns is as extreme
    on either side, p = 2/8."""
    zero = compare_paired("m", "a", "b", pairs_from([0.0, 0.0, 0.0]))
    assert zero.beyond_noise is False and zero.p_wilcoxon is None and zero.metric == "m"
    assert zero.differences == (0.0, 0.0, 0.0) and zero.p_ttest == 1.0 and zero.std == 0.0
    assert zero.verdict() == (
        "a minus b, m: mean +0 (95% CI +0 .. +0; paired t-test p=1, Wilcoxon p=n/a; n=3): within seed noise"
    )
    shift = compare_paired("m", "a", "b", pairs_from([1.0, 1.0, 1.0]))
    assert shift.beyond_noise is True and shift.ci_low == shift.ci_high == 1.0
    assert shift.p_ttest == 0.0 and shift.p_wilcoxon == pytest.approx(2 / 8)


def test_a_spread_of_exactly_one_is_a_spread() -> None:
    """Differences 1, 2, 3: mean 2, sd exactly 1; t(0.975, 2) = 4.302653 from the tables,
    so 2 -/+ 4.302653 / sqrt(3); t = 2 sqrt(3) on 2 df, whose two-sided p is
    1 - t / sqrt(2 + t**2) = 1 - sqrt(12/14)."""
    result = compare_paired("m", "a", "b", pairs_from([1.0, 2.0, 3.0]))
    assert result.std == 1.0
    assert (result.ci_low, result.ci_high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    assert result.p_ttest == pytest.approx(1 - (12 / 14) ** 0.5)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="no paired seeds"):
        compare_paired("m", "a", "b", {})
    with pytest.raises(ValueError, match="non-finite"):
        compare_paired("m", "a", "b", {0: (float("nan"), 1.0), 1: (1.0, 1.0), 2: (1.0, 1.0)})


def test_differences_pair_each_seed_with_its_own_baseline() -> None:
    """A baseline out of seed order (and a mapping out of seed order): sorting either side
    before subtracting would pair one seed's strategy with another seed's baseline.
    Differences by hand 2, -1, 4, 3, 5: mean 2.6, squared deviations sum to 21.2, so the
    sample variance is 5.3; the paired t-test and the t quantile from scipy on the raw
    values; signed ranks by hand: only rank 1 is negative, and 2 of the 2**5 sign patterns
    have a negative rank sum of at most 1, two-sided p = 2 * 2/32."""
    baseline = {0: 9.0, 1: 3.0, 2: 7.0, 3: 1.0, 4: 5.0}
    strategy = {0: 11.0, 1: 2.0, 2: 11.0, 3: 4.0, 4: 10.0}
    pairs = {seed: (strategy[seed], baseline[seed]) for seed in (3, 0, 4, 1, 2)}
    result = compare_paired("m", "a", "b", pairs)
    assert result.seeds == (0, 1, 2, 3, 4)
    assert result.differences == (2.0, -1.0, 4.0, 3.0, 5.0)
    assert result.mean == pytest.approx(2.6)
    assert result.std == pytest.approx(5.3**0.5)
    half = stats.t.ppf(0.975, 4) * (5.3 / 5) ** 0.5
    assert (result.ci_low, result.ci_high) == pytest.approx((2.6 - half, 2.6 + half))
    expected_p = stats.ttest_rel([strategy[s] for s in range(5)], [baseline[s] for s in range(5)]).pvalue
    assert result.p_ttest == pytest.approx(expected_p)
    assert result.p_wilcoxon == pytest.approx(4 / 32)
    assert result.verdict() == (
        "a minus b, m: mean +2.6 (95% CI -0.2585 .. +5.459; paired t-test p=0.065, Wilcoxon "
        "p=0.125; n=5): within seed noise"
    )


def test_holm_adjustment_by_hand() -> None:
    """Four p-values 0.01, 0.04, 0.03, 0.005: sorted, 4 x 0.005 = 0.02, 3 x 0.01 = 0.03,
    2 x 0.03 = 0.06, 1 x 0.04 = 0.04 raised to the 0.06 before it; at 5% Holm rejects the
    first and the fourth hypothesis only (0.005 < 0.05/4, 0.01 < 0.05/3, 0.03 > 0.05/2)."""
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.6, 0.9]) == [1.0, 1.0]  # 2 x 0.6 capped at 1, and 0.9 raised to it
    assert holm_adjust([0.7, 0.2]) == pytest.approx([0.7, 0.4])
    assert holm_adjust([0.5, 0.02, 0.02]) == pytest.approx([0.5, 0.06, 0.06])  # ties share the larger factor
    assert holm_adjust([0.03]) == [0.03] and holm_adjust([]) == []
    assert holm_adjust([0.5, 0.0]) == [0.5, 0.0]  # p = 0: identical non-zero differences


def sequential_holm(p_values: list[float], alpha: float) -> set[int]:
    """Holm's procedure as he stated it: test the k-th smallest p-value against
    alpha / (m - k + 1), and stop at the first that is not below it."""
    rejected = set()
    for k, i in enumerate(sorted(range(len(p_values)), key=lambda i: p_values[i])):
        if p_values[i] >= alpha / (len(p_values) - k):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_p_below_alpha_exactly_where_the_sequential_procedure_rejects() -> None:
    rng = random.Random(3)
    for _ in range(200):
        p_values = [rng.choice([rng.random() * 0.02, rng.random()]) for _ in range(rng.randint(1, 12))]
        adjusted = holm_adjust(p_values)
        assert all(a >= p for a, p in zip(adjusted, p_values, strict=True))
        for alpha in (0.01, 0.05, 0.1):
            assert {i for i, a in enumerate(adjusted) if a < alpha} == sequential_holm(p_values, alpha)


@pytest.mark.parametrize("bad", [[0.5, 1.5], [-0.1], [math.nan]])
def test_holm_refuses_what_is_not_a_p_value(bad: list[float]) -> None:
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\], got"):
        holm_adjust(bad)


def test_holm_over_comparisons_decides_their_verdicts() -> None:
    """Three testable comparisons and one with too few seeds: the family is the three. Raw
    p-values 0.0132 (differences 1..5), 0.0650 (differences 2, -1, 4, 3, 5) and 1 (none):
    adjusted 3 x 0.0132 = 0.0397, then 2 x 0.0650 = 0.130, then 1."""
    strong = compare_paired("wall_time", "iis", "standard", pairs_from([1, 2, 3, 4, 5]))
    weak = compare_paired("m", "a", "b", pairs_from([2, -1, 4, 3, 5]))
    none = compare_paired("m", "a", "b", pairs_from([0.0, 0.0, 0.0]))
    alone = compare_paired("m", "a", "b", pairs_from([0.5]))
    out = holm([strong, alone, weak, none])
    assert [c.family for c in out] == [3, 1, 3, 3]
    assert out[1] == alone and out[1].p_holm is None and out[1].beyond_noise is None
    assert out[0].p_holm == pytest.approx(3 * strong.p_ttest)
    assert weak.p_ttest == pytest.approx(0.065, abs=5e-4) and out[2].p_holm == pytest.approx(2 * weak.p_ttest)
    assert out[3].p_holm == 1.0
    assert [c.p_ttest for c in out] == [strong.p_ttest, None, weak.p_ttest, 1.0]  # raw ones kept
    assert out[0].beyond_noise is True and out[2].beyond_noise is False
    assert out[0].verdict() == (
        "iis minus standard, wall_time: mean +3 (95% CI +1.037 .. +4.963; paired t-test p=0.0132 "
        "(Holm-adjusted over 3 tests: 0.0397), Wilcoxon p=0.0625; n=5): beyond seed noise"
    )


def test_a_raw_p_below_alpha_can_be_within_noise_after_holm() -> None:
    strong = compare_paired("wall_time", "iis", "standard", pairs_from([1, 2, 3, 4, 5]))
    family = holm([strong] + [compare_paired("m", "a", "b", pairs_from([0.0, 0.0, 0.0]))] * 3)
    assert strong.p_ttest < 0.05 < family[0].p_holm
    assert family[0].p_holm == pytest.approx(4 * strong.p_ttest)
    assert family[0].beyond_noise is False and family[0].verdict().endswith("within seed noise")
