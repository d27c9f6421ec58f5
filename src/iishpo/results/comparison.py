"""Paired comparison of two strategies over seeds: is a difference beyond seed noise?

The runs of one seed share their data split and training seeds across strategies (see
:mod:`iishpo.seeds`), so each seed gives one *paired* difference (strategy minus
baseline) per metric. Over the seeds: the mean difference, its spread, a 95% confidence
interval from Student's t distribution, a paired t-test (the interval excludes 0 exactly
when its raw p < 0.05) and, as a check that needs no normality,
Wilcoxon's signed-rank test. With fewer than ``MIN_SEEDS`` seeds no test is made and the
comparison says so. The words only say whether a difference is beyond seed noise; what
it means is for the reader to judge.

A study makes many such tests (optimizers x strategies x metrics x data sets), and at the
5% level about one in twenty of them is "beyond seed noise" by chance alone. :func:`holm`
adjusts the t-tests' p-values over the whole family by Holm's step-down method (which
holds the chance of any false "beyond" at 5%, without assuming the tests independent),
and the verdict uses the adjusted p-value; a comparison judged alone is a family of one,
whose adjusted p-value is the raw one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

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
    #: ``p_ttest`` adjusted by Holm's method over the ``family`` of tests it is judged in
    p_holm: float | None
    family: int = 1

    @property
    def testable(self) -> bool:
        return self.p_ttest is not None

    @property
    def beyond_noise(self) -> bool | None:
        """True/False when tested (Holm-adjusted p-value below ``ALPHA``); None when too few seeds."""
        return None if self.p_holm is None else self.p_holm < ALPHA

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
        holm = "" if self.family == 1 else f" (Holm-adjusted over {self.family} tests: {self.p_holm:.3g})"
        return (
            f"{head} (95% CI {self.ci_low:+.4g} .. {self.ci_high:+.4g}; paired t-test "
            f"p={self.p_ttest:.3g}{holm}, Wilcoxon p={wilcoxon}; n={n}): {words}"
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
        return PairedComparison(
            metric, strategy, baseline, seeds, differences, mean, None, None, None, None, None, None
        )
    std = statistics.stdev(differences)
    if std == 0:  # identical differences: the interval is a point, a test is certain or void
        p = 1.0 if mean == 0 else 0.0
        return PairedComparison(
            metric, strategy, baseline, seeds, differences, mean, 0.0, mean, mean, p, _wilcoxon(differences), p
        )
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
    p_ttest = float(stats.ttest_1samp(differences, 0.0).pvalue)
    return PairedComparison(
        metric, strategy, baseline, seeds, differences, mean, std,
        mean - half, mean + half, p_ttest, _wilcoxon(differences), p_ttest,
    )


def _wilcoxon(differences: tuple[float, ...]) -> float | None:
    """Two-sided signed-rank p-value; None when every difference is zero (no ranks)."""
    if not any(differences):
        return None
    return float(stats.wilcoxon(differences, zero_method="wilcox").pvalue)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest of m
    p-values times (m - i + 1), capped at 1, and never below an adjusted smaller one."""
    if not all(0.0 <= p <= 1.0 for p in p_values):
        raise ValueError(f"p-values must lie in [0, 1], got {list(p_values)}")
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm(comparisons: Sequence[PairedComparison]) -> list[PairedComparison]:
    """``comparisons`` with their t-tests' p-values Holm-adjusted over all of them that
    are testable (the family); the untestable ones are returned as they are."""
    tested = [k for k, c in enumerate(comparisons) if c.p_ttest is not None]
    adjusted = holm_adjust([comparisons[k].p_ttest for k in tested])  # type: ignore[misc]
    out = list(comparisons)
    for k, p in zip(tested, adjusted, strict=True):
        out[k] = replace(out[k], p_holm=p, family=len(tested))
    return out
