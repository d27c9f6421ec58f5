"""The paper's figures (2-5) and Table 1 beside ours, drawn from plain data.

Every function takes trials and numbers, not a study or a results tree, so that it can be
tested on hand-made data and called by whatever reads the results. Figures are written as
PNG and SVG (``<stem>.png``, ``<stem>.svg``) with matplotlib's Agg backend; every optimizer
has one colour in every figure (:func:`palette`).

Fig. 5 plots the best validation error *within the current stage*: errors at different
resolutions are not comparable, so an IIS curve starts again at each stage boundary (the
paper: "when the image size is increased ... we often observe a drop in performance").
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from iishpo.results.importance import Importance, subset_name
from iishpo.settings.strategies import BASELINE, STRATEGIES
from iishpo.store import Trial

if TYPE_CHECKING:  # iishpo.results.transfer draws its figure here
    from iishpo.results.transfer import Estimate, Source

#: Fixed colours of the known optimizers (matplotlib's tab10); others follow in name order.
OPTIMIZER_COLOURS = {"random": "#1f77b4", "tpe": "#ff7f0e", "ga": "#2ca02c", "smac": "#d62728"}
SPARE_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
FORMATS = ("png", "svg")

#: Table 1 of Hinz et al. 2018 (minutes, mean and std over 3 runs on 102 Flowers).
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "random": {"standard": (2974, 77), "iis": (2396, 335)},
    "tpe": {"standard": (3822, 294), "iis": (2230, 46)},
    "smac": {"standard": (3197, 885), "iis": (2069, 103)},
    "ga": {"standard": (4043, 199), "iis": (3662, 386)},
}
#: The time reductions as printed in the paper's Table 1.
PAPER_REDUCTIONS = {"random": 0.19, "tpe": 0.42, "smac": 0.35, "ga": 0.09}


def palette(optimizers: Sequence[str]) -> dict[str, str]:
    """One colour per optimizer, the same in every figure for the known ones."""
    unknown = sorted(set(optimizers) - set(OPTIMIZER_COLOURS))
    if len(unknown) > len(SPARE_COLOURS):
        raise ValueError(f"{len(unknown)} unknown optimizers {unknown}: at most {len(SPARE_COLOURS)} have colours")
    colours = {**OPTIMIZER_COLOURS, **dict(zip(unknown, SPARE_COLOURS))}
    return {name: colours[name] for name in optimizers}


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` (each via a temporary file) and close it."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = stem.with_name(f"{stem.name}.{fmt}")
        tmp = stem.with_name(f".{stem.name}.tmp.{fmt}")
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format=fmt)
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def _note_panel(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9)
    ax.set_axis_off()


# -- Fig. 2 ------------------------------------------------------------------------------


def importance_figure(importances: Sequence[Importance], title: str, stem: Path, n_subsets: int = 18) -> list[Path]:
    """Fig. 2: explained variance of the validation error (%) of the ``n_subsets`` subsets
    with the largest mean share over the analysed resolutions, one bar per resolution.
    Resolutions without an analysis are listed with their note under the chart."""
    analysed = [imp for imp in importances if imp.note is None]
    notes = [f"{imp.resolution} px not analysed: {imp.note}" for imp in importances if imp.note is not None]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.35 * n_subsets))
    if not analysed:
        _note_panel(ax, "No resolution has enough successful trials for fANOVA.\n" + "\n".join(notes))
        ax.set_title(title)
        return save(fig, stem)
    shares = [dict(imp.subsets()) for imp in analysed]
    subsets = sorted(shares[0], key=lambda s: (-statistics.fmean(sh.get(s, 0.0) for sh in shares), len(s), s))
    subsets = subsets[:n_subsets][::-1]  # largest at the top
    height = 0.8 / len(analysed)
    cmap = plt.get_cmap("viridis")
    for k, (imp, share) in enumerate(zip(analysed, shares, strict=True)):
        ys = np.arange(len(subsets)) + (k - (len(analysed) - 1) / 2) * height
        ax.barh(ys, [100 * share.get(s, 0.0) for s in subsets], height=height,
                color=cmap(k / max(len(analysed) - 1, 1)), label=f"{imp.resolution} px ({imp.n_trials} trials)")
    ax.set_yticks(np.arange(len(subsets)), [subset_name(s) for s in subsets], fontsize=8)
    ax.set_xlabel("explained variance of the validation error (%)")
    ax.set_ylabel("hyperparameter subset")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8, title="input size")
    if notes:
        fig.text(0.01, -0.02, "\n".join(notes), fontsize=8, va="top")
    return save(fig, stem)


# -- Figs. 3 and 4 -----------------------------------------------------------------------

TrialsByResolution = Mapping[int, Mapping[str, Sequence[Trial]]]


def _ok(trials: Sequence[Trial]) -> list[Trial]:
    return [t for t in trials if t.ok and t.val_error is not None]


def learning_rate_figure(trials: TrialsByResolution, title: str, stem: Path) -> list[Path]:
    """Fig. 3: validation error against learning rate, one panel per resolution, one colour
    per optimizer; the black line is the mean over all optimizers in log-spaced bins."""
    resolutions = sorted(trials)
    optimizers = sorted({o for by_optimizer in trials.values() for o in by_optimizer})
    colours = palette(optimizers)
    fig, axes = plt.subplots(1, len(resolutions), figsize=(4 * len(resolutions), 3.6), squeeze=False, sharey=True, layout="constrained")
    for ax, resolution in zip(axes[0], resolutions, strict=True):
        pooled = []
        for optimizer in optimizers:
            ok = _ok(trials[resolution].get(optimizer, ()))
            pooled += ok
            ax.scatter([t.config["learning_rate"] for t in ok], [t.val_error for t in ok],
                       s=12, alpha=0.6, color=colours[optimizer], label=optimizer)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_title(f"{resolution} px ({len(pooled)} trials)")
        if not pooled:
            ax.text(0.5, 0.5, "no successful trials", ha="center", transform=ax.transAxes)
            continue
        centres, means = binned_means([t.config["learning_rate"] for t in pooled], [t.val_error for t in pooled])  # type: ignore[misc]
        ax.plot(centres, means, color="black", lw=1.5, label="mean (all optimizers)")
    axes[0][0].set_ylabel("validation error (fraction misclassified)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), fontsize=8)
    fig.suptitle(title)
    return save(fig, stem)


def binned_means(xs: Sequence[float], ys: Sequence[float], n_bins: int = 8) -> tuple[list[float], list[float]]:
    """Mean of ``ys`` in ``n_bins`` log-spaced bins of ``xs`` (empty bins left out); bin
    centres are geometric."""
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"binned_means needs equally long non-empty data, got {len(xs)} and {len(ys)}")
    edges = np.logspace(math.log10(min(xs)), math.log10(max(xs)), n_bins + 1)
    index = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, n_bins - 1)
    centres, means = [], []
    for b in range(n_bins):
        members = [y for y, i in zip(ys, index, strict=True) if i == b]
        if members:
            centres.append(float(math.sqrt(edges[b] * edges[b + 1])))
            means.append(statistics.fmean(members))
    return centres, means


def learning_rate_fc_figure(trials: TrialsByResolution, title: str, stem: Path, n_bins: int = 6) -> list[Path]:
    """Fig. 4: mean validation error over learning rate (log bins) x number of fc layers,
    one panel per resolution, all optimizers pooled; empty cells stay blank."""
    resolutions = sorted(trials)
    pooled = {r: [t for ts in trials[r].values() for t in _ok(ts)] for r in resolutions}
    every = [t for ts in pooled.values() for t in ts]
    fig, axes = plt.subplots(1, len(resolutions), figsize=(4 * len(resolutions), 3.4), squeeze=False, layout="constrained")
    if not every:
        for ax in axes[0]:
            _note_panel(ax, "no successful trials")
        fig.suptitle(title)
        return save(fig, stem)
    rates = [t.config["learning_rate"] for t in every]
    edges = np.logspace(math.log10(min(rates)), math.log10(max(rates)), n_bins + 1)
    layers = sorted({int(t.config["n_fc"]) for t in every})
    errors = [t.val_error for t in every]
    image = None
    for ax, resolution in zip(axes[0], resolutions, strict=True):
        grid = mean_error_grid(pooled[resolution], edges, layers)
        image = ax.pcolormesh(edges, np.arange(len(layers) + 1) - 0.5, grid, cmap="viridis_r",
                              vmin=min(errors), vmax=max(errors))  # type: ignore[type-var]
        ax.set_xscale("log")
        ax.set_yticks(range(len(layers)), [str(n) for n in layers])
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("fully connected layers")
        ax.set_title(f"{resolution} px ({len(pooled[resolution])} trials)")
    fig.colorbar(image, ax=list(axes[0]), label="mean validation error (fraction)")
    fig.suptitle(title)
    return save(fig, stem)


def mean_error_grid(trials: Sequence[Trial], rate_edges: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """Mean validation error per (fc layers, learning-rate bin); NaN where no trial fell."""
    sums = np.zeros((len(layers), len(rate_edges) - 1))
    counts = np.zeros_like(sums)
    for t in _ok(trials):
        column = int(np.clip(np.searchsorted(rate_edges, t.config["learning_rate"], side="right") - 1, 0, len(rate_edges) - 2))
        row = list(layers).index(int(t.config["n_fc"]))
        sums[row, column] += t.val_error  # type: ignore[operator]
        counts[row, column] += 1
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# -- Fig. 5 ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTrials:
    """One optimization run: its stages' trials in order (one stage for ``standard``)."""

    optimizer: str
    strategy: str
    seed: int
    stages: tuple[tuple[Trial, ...], ...]

    def progress(self) -> tuple[list[float], list[float]]:
        """Per evaluation: seconds since the run started, best validation error so far in
        the current stage (NaN until the stage has a success)."""
        times, best = [], []
        offset = 0.0
        for stage in self.stages:
            current = math.nan
            for t in stage:
                if t.ok and t.val_error is not None and not current <= t.val_error:
                    current = t.val_error
                times.append(offset + t.elapsed)
                best.append(current)
            offset += stage[-1].elapsed if stage else 0.0
        return times, best

    def boundaries(self) -> list[tuple[int, float]]:
        """(evaluations, seconds) at which every stage after the first begins."""
        out, evaluations, seconds = [], 0, 0.0
        for stage in self.stages[:-1]:
            evaluations += len(stage)
            seconds += stage[-1].elapsed if stage else 0.0
            out.append((evaluations, seconds))
        return out


def mean_band(series: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, mean - std and mean + std over runs, per position (runs may differ in length;
    NaN entries are left out; std is 0 with one value)."""
    length = max(len(s) for s in series)
    grid = np.full((len(series), length), np.nan)
    for i, s in enumerate(series):
        grid[i, : len(s)] = s
    counts = np.sum(~np.isnan(grid), axis=0)
    with warnings.catch_warnings():  # an all-NaN position (no success yet) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(grid, axis=0)
        std = np.where(counts > 1, np.nanstd(grid, axis=0, ddof=1), 0.0)
    return mean, mean - std, mean + std


def on_time_grid(times: Sequence[float], values: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """The step function ``values`` (each holding from its time on) sampled at ``grid``;
    NaN before the first time."""
    index = np.searchsorted(np.asarray(times), grid, side="right") - 1
    out = np.asarray(values, dtype=float)[np.clip(index, 0, None)]
    return np.where(index >= 0, out, np.nan)


def progress_figure(runs: Sequence[RunTrials], title: str, stem: Path, n_time_points: int = 200) -> list[Path]:
    """Fig. 5: best validation error so far (current stage) against evaluations (left) and
    wall time (right), one row per optimizer, each strategy in its line style
    (:data:`iishpo.settings.strategies.STRATEGIES`), mean over seeds with a +-1 std band; dotted
    vertical lines mark where IIS stages begin (mean time over seeds on the right)."""
    if not runs:
        raise ValueError("progress_figure needs at least one run")
    optimizers = sorted({r.optimizer for r in runs})
    strategies = sorted({r.strategy for r in runs})
    colours = palette(optimizers)
    fig, axes = plt.subplots(len(optimizers), 2, figsize=(11, 3.2 * len(optimizers)), squeeze=False)
    for row, optimizer in zip(axes, optimizers, strict=True):
        for strategy in strategies:
            members = [r for r in runs if r.optimizer == optimizer and r.strategy == strategy]
            if not members:
                continue
            progress = [r.progress() for r in members]
            label = f"{strategy} ({len(members)} seeds)"
            mean, low, high = mean_band([best for _, best in progress])
            evaluations = np.arange(1, len(mean) + 1)
            style = STRATEGIES[strategy].line_style
            row[0].plot(evaluations, mean, linestyle=style, color=colours[optimizer], label=label, drawstyle="steps-post")
            row[0].fill_between(evaluations, low, high, color=colours[optimizer], alpha=0.15, step="post")
            end = max(times[-1] for times, _ in progress if times)
            grid = np.linspace(0.0, end, n_time_points)
            sampled = [on_time_grid(times, best, grid) for times, best in progress]
            mean, low, high = mean_band(sampled)
            row[1].plot(grid / 60, mean, linestyle=style, color=colours[optimizer], label=label, drawstyle="steps-post")
            row[1].fill_between(grid / 60, low, high, color=colours[optimizer], alpha=0.15, step="post")
            for k, marks in enumerate(zip(*(r.boundaries() for r in members))):
                first = k == 0
                row[0].axvline(marks[0][0] + 0.5, color=colours[optimizer], ls=":", lw=1,
                               label=f"{strategy}: next stage" if first else None)
                row[1].axvline(statistics.fmean(m[1] for m in marks) / 60, color=colours[optimizer], ls=":", lw=1)
        row[0].set(xlabel="evaluations", ylabel="best validation error so far (fraction)", title=f"{optimizer}: by evaluations")
        row[1].set(xlabel="wall time (minutes)", ylabel="best validation error so far (fraction)", title=f"{optimizer}: by wall time")
        row[0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)


# -- Table 1 -----------------------------------------------------------------------------


def time_reduction(standard: float, iis: float) -> float:
    """1 - time(IIS) / time(standard), as in the paper's Table 1."""
    if standard <= 0:
        raise ValueError(f"the standard strategy's time must be positive, got {standard}")
    return 1.0 - iis / standard


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        raise ValueError("no run times")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table1(times: Mapping[tuple[str, str], Sequence[float]], optimizers: Sequence[str], with_paper: bool) -> str:
    """Table 1 as Markdown: minutes (mean +- std over seeds) per strategy and optimizer,
    and the IIS time reduction; ``with_paper`` puts the paper's numbers beside ours
    (optimizers the paper did not run get a dash).

    ``times[(optimizer, strategy)]``: the wall time in seconds of every seed's run.
    """
    present = {strategy for _, strategy in times}
    strategies = [s for s in STRATEGIES if s in present]
    columns = []
    for optimizer in optimizers:
        columns.append(f"{optimizer} (ours)")
        if with_paper:
            columns.append(f"{optimizer} (paper)")
    lines = ["| strategy (minutes, mean ± std) | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for strategy in strategies:
        cells = []
        for optimizer in optimizers:
            ours = times.get((optimizer, strategy))
            cells.append("–" if not ours else "{:.1f} ± {:.1f}".format(*(v / 60 for v in _mean_std(ours))))
            if with_paper:
                paper = PAPER_TABLE1.get(optimizer, {}).get(strategy)
                cells.append("–" if paper is None else f"{paper[0]:.0f} ± {paper[1]:.0f}")
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    if {BASELINE, "iis"} <= set(strategies):
        cells = []
        for optimizer in optimizers:
            standard, iis = times.get((optimizer, BASELINE)), times.get((optimizer, "iis"))
            ours = time_reduction(_mean_std(standard)[0], _mean_std(iis)[0]) if standard and iis else None
            cells.append("–" if ours is None else f"{ours:.0%}")
            if with_paper:
                paper = PAPER_REDUCTIONS.get(optimizer)
                cells.append("–" if paper is None else f"{paper:.0%}")
        lines.append("| time reduction | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- rank correlation across resolutions ---------------------------------------------------


def rank_correlation_figure(sources: Sequence[Source], title: str, stem: Path) -> list[Path]:
    """The transfer analysis: one scatter per resolution below the largest (validation error
    there against at the largest, one point per configuration, a colour per source), and
    Spearman's rho and Kendall's tau per resolution with their 95% intervals."""
    resolutions = [c.pairs.resolution for c in sources[0].comparisons] if sources else []
    if not resolutions:
        raise ValueError("rank_correlation_figure needs at least one source with a resolution below the largest")
    largest = sources[0].comparisons[0].pairs.largest
    colours = {source.label: f"C{i}" for i, source in enumerate(sources)}
    fig, axes = plt.subplots(1, len(resolutions) + 1, figsize=(4 * (len(resolutions) + 1), 3.8), squeeze=False,
                             layout="constrained")
    for ax, resolution in zip(axes[0][:-1], resolutions, strict=True):
        for source in sources:
            found = next(c.pairs for c in source.comparisons if c.pairs.resolution == resolution)
            ax.scatter(found.small, found.large, s=14, alpha=0.7, color=colours[source.label],
                       label=f"{source.label} ({len(found.small)})")
        ax.set(xlabel=f"validation error at {resolution} px", ylabel=f"validation error at {largest} px",
               title=f"{resolution} px against {largest} px")
        ax.legend(fontsize=7, loc="best")
    ax = axes[0][-1]
    width = 0.8 / len(sources)
    for i, source in enumerate(sources):
        for j, (name, marker) in enumerate((("spearman", "o"), ("kendall", "s"))):
            xs: list[float] = []
            values: list[float] = []
            errors: list[list[float]] = [[], []]
            for k, c in enumerate(source.comparisons):
                e: Estimate = getattr(c, name)
                if e.value is None:
                    continue
                xs.append(k + (i - (len(sources) - 1) / 2) * width + (j - 0.5) * width / 2)
                values.append(e.value)
                errors[0].append(e.value - e.low if e.low is not None else 0.0)
                errors[1].append(e.high - e.value if e.high is not None else 0.0)
            ax.errorbar(xs, values, yerr=errors, fmt=marker, color=colours[source.label], capsize=3,
                        fillstyle="full" if name == "spearman" else "none",
                        label=f"{source.label}: {'Spearman' if name == 'spearman' else 'Kendall'}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(resolutions)), [f"{r} px" for r in resolutions])
    ax.set(ylim=(-1.05, 1.05), ylabel=f"rank correlation with {largest} px (95% interval)",
           title="rank correlation")
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    return save(fig, stem)
