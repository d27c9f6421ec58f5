"""Each strategy's mean rank over wall time, per optimizer, as HPO benchmarks report it
(HPOBench, YAHPO Gym): which strategy is ahead after a given time, not only at the end.

A run's result at time t is the best validation error among the trials of its result
stages that finished by t: what the summary reports as the run's best validation error,
at the largest resolution (:func:`iishpo.plan.layout.result_stages`), as it grew. At each
point of a time grid, the runs of one optimizer and seed are ranked by their results
(1: the lowest error), and each strategy's rank is averaged over the seeds that ran it.

Conventions:

* a run without a result yet (its result stages have not begun, or none of their trials
  has succeeded) ranks below every run with one: HPOBench's "worst rank" for a method
  that has not reported yet. IIS and halving, whose result comes from their last stage,
  are therefore last until that stage has a success;
* ties, among them runs that all lack a result, share the mean of the ranks they span
  (``scipy.stats.rankdata(method="average")``), so that n strategies' ranks always sum to
  n(n+1)/2 and a panel's mean ranks average (n+1)/2 at every time;
* a finished run keeps its final result; the time axis of an optimizer runs to the end of
  its longest run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from iishpo.results.figures import on_time_grid, save
from iishpo.settings.strategies import STRATEGIES


@dataclass(frozen=True)
class Curve:
    """One run's result as it grew: ``(seconds since the run began, best validation error
    so far in its result stages)`` at each evaluation of those stages (inf before a success)."""

    optimizer: str
    strategy: str
    seed: int
    points: tuple[tuple[float, float], ...]

    def at(self, times: np.ndarray) -> np.ndarray:
        """The result at each of ``times``; inf where the run has none yet."""
        if not self.points:
            return np.full(len(times), math.inf)
        seconds, errors = zip(*self.points, strict=True)
        sampled = on_time_grid(seconds, errors, times)
        return np.where(np.isnan(sampled), math.inf, sampled)


def mean_ranks(curves: Sequence[Curve], times: np.ndarray) -> dict[str, np.ndarray]:
    """Each strategy's rank at each of ``times`` (1: best), averaged over seeds; ``curves``
    are the runs of one optimizer, at most one per strategy and seed. Strategies in the
    order of :data:`~iishpo.settings.strategies.STRATEGIES`."""
    if len({c.optimizer for c in curves}) != 1:
        raise ValueError(f"mean_ranks ranks the runs of one optimizer, got {sorted({c.optimizer for c in curves})}")
    by_seed: dict[int, list[Curve]] = {}
    for curve in curves:
        by_seed.setdefault(curve.seed, []).append(curve)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for seed, members in by_seed.items():
        strategies = [c.strategy for c in members]
        if len(set(strategies)) != len(strategies):
            raise ValueError(f"seed {seed} of {members[0].optimizer} has more than one run of a strategy: {strategies}")
        ranks = stats.rankdata(np.vstack([c.at(times) for c in members]), method="average", axis=0)
        for curve, rank in zip(members, ranks, strict=True):
            sums[curve.strategy] = sums.get(curve.strategy, 0.0) + rank
            counts[curve.strategy] = counts.get(curve.strategy, 0) + 1
    return {s: sums[s] / counts[s] for s in STRATEGIES if s in sums}


def rank_figure(curves: Sequence[Curve], title: str, stem: Path, n_time_points: int = 200) -> list[Path]:
    """One panel per optimizer: each strategy's mean rank over seeds (1: best) against wall
    time, in its colour and Fig. 5's line style (module doc for ties and runs without a result)."""
    if not curves:
        raise ValueError("rank_figure needs at least one run")
    optimizers = sorted({c.optimizer for c in curves})
    fig, axes = plt.subplots(1, len(optimizers), figsize=(4.5 * len(optimizers), 3.6), squeeze=False,
                             sharey=True, layout="constrained")
    colours = plt.get_cmap("tab10")
    for ax, optimizer in zip(axes[0], optimizers, strict=True):
        members = [c for c in curves if c.optimizer == optimizer]
        end = max((c.points[-1][0] for c in members if c.points), default=0.0)
        grid = np.linspace(0.0, end, n_time_points)
        for strategy, ranks in mean_ranks(members, grid).items():
            seeds = sum(c.strategy == strategy for c in members)
            ax.plot(grid / 60, ranks, drawstyle="steps-post", linestyle=STRATEGIES[strategy].line_style,
                    color=colours(list(STRATEGIES).index(strategy)), label=f"{strategy} ({seeds} seeds)")
        ax.set(xlabel="wall time (minutes)", title=optimizer)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("mean rank over seeds (1: best)")
    fig.suptitle(title)
    return save(fig, stem)
