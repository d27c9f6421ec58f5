"""Paired comparison over seeds, checked against values from statistical tables."""

from __future__ import annotations

import pytest

from iishpo.comparison import compare_paired


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
    assert result.verdict().startswith(f"iis minus standard, test_score: mean +{[0.5, 0.6][n - 1]:.4g} over {n} seed")
    assert result.verdict().endswith("fewer than 3 seeds, so no interval or test is possible")


def test_identical_differences() -> None:
    zero = compare_paired("m", "a", "b", pairs_from([0.0, 0.0, 0.0]))
    assert zero.beyond_noise is False and zero.p_wilcoxon is None and zero.metric == "m"
    assert "Wilcoxon p=n/a" in zero.verdict() and zero.std == 0.0
    shift = compare_paired("m", "a", "b", pairs_from([1.0, 1.0, 1.0]))
    assert shift.beyond_noise is True and shift.ci_low == shift.ci_high == 1.0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="no paired seeds"):
        compare_paired("m", "a", "b", {})
    with pytest.raises(ValueError, match="non-finite"):
        compare_paired("m", "a", "b", {0: (float("nan"), 1.0), 1: (1.0, 1.0), 2: (1.0, 1.0)})
