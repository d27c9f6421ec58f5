"""Paired comparison of two strategies over seeds: is a difference beyond seed noise?

The runs of one seed share their data split and training seeds across strategies (see
:mod:`iishpo.seeds`), so each seed gives one *paired* difference (strategy minus
baseline) per metric. Over the seeds: the mean difference, its spread, a 95% confidence
interval from Student's t distribution, a paired t-test (whose verdict the interval
mirrors: it excludes 0 exactly when p < 0.05) and, as a check that needs no normality,
Wilcoxon's signed-rank test. With fewer than ``MIN_SEEDS`` seeds no test is made and the
comparison says so. The words only say whether a difference is beyond seed noise; what
it means is for the reader to judge.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats

#: fewest paired seeds for a confidence interval and a test
MIN_SEEDS = 3
#: two-sided level of the tests (the interval is 1 - ALPHA)
ALPHA = 0.05


@dataclass(frozen=True)
class PairedComparison:
    """``strategy`` minus ``baseline`` for one metric, paired by seed."""

    metric: str
    strategy: str
    baseline: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    p_ttest: float | None
    p_wilcoxon: float | None

    @property
    def testable(self) -> bool:
        return self.p_ttest is not None

    @property
    def beyond_noise(self) -> bool | None:
        """True/False when tested at level ``ALPHA``; None when too few seeds."""
        return None if self.p_ttest is None else self.p_ttest < ALPHA

    def verdict(self) -> str:
        """One sentence: the mean difference, its interval and test, in words."""
        n = len(self.seeds)
        head = f"{self.strategy} minus {self.baseline}, {self.metric}: mean {self.mean:+.4g}"
        if not self.testable:
            return (
                f"{head} over {n} seed{'s' if n != 1 else ''}; fewer than {MIN_SEEDS} seeds, "
                "so no interval or test is possible"
            )
        assert self.ci_low is not None and self.ci_high is not None and self.p_ttest is not None
        wilcoxon = "n/a" if self.p_wilcoxon is None else f"{self.p_wilcoxon:.3g}"
        words = "beyond seed noise" if self.beyond_noise else "within seed noise"
        return (
            f"{head} (95% CI {self.ci_low:+.4g} .. {self.ci_high:+.4g}; paired t-test "
            f"p={self.p_ttest:.3g}, Wilcoxon p={wilcoxon}; n={n}): {words}"
        )


def compare_paired(
    metric: str, strategy: str, baseline: str, pairs: Mapping[int, tuple[float, float]]
) -> PairedComparison:
    """Compare ``pairs`` (seed -> (strategy's value, baseline's value)), seeds in order."""
    if not pairs:
        raise ValueError(f"no paired seeds to compare {strategy} with {baseline} on {metric}")
    seeds = tuple(sorted(pairs))
    differences = tuple(float(pairs[s][0]) - float(pairs[s][1]) for s in seeds)
    if not all(math.isfinite(d) for d in differences):
        raise ValueError(f"{metric}: non-finite values in {dict(pairs)}")
    mean = statistics.fmean(differences)
    n = len(differences)
    if n < MIN_SEEDS:
        return PairedComparison(metric, strategy, baseline, seeds, differences, mean, None, None, None, None, None)
    std = statistics.stdev(differences)
    if std == 0:  # identical differences: the interval is a point, a test is certain or void
        p = 1.0 if mean == 0 else 0.0
        return PairedComparison(
            metric, strategy, baseline, seeds, differences, mean, 0.0, mean, mean, p, _wilcoxon(differences)
        )
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
    p_ttest = float(stats.ttest_1samp(differences, 0.0).pvalue)
    return PairedComparison(
        metric, strategy, baseline, seeds, differences, mean, std,
        mean - half, mean + half, p_ttest, _wilcoxon(differences),
    )


def _wilcoxon(differences: tuple[float, ...]) -> float | None:
    """Two-sided signed-rank p-value; None when every difference is zero (no ranks)."""
    if not any(differences):
        return None
    return float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)
