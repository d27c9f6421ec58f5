"""Does a configuration's rank at a small resolution predict its rank at the largest?

IIS's premise (the paper's Sec. 4) is that good hyperparameter values are similar across
resolutions. This module measures it on configurations evaluated at more than one
resolution of the ladder, per data set:

* the ``transfer`` run (``snakemake transfer``; :func:`iishpo.plan.layout.transfer_runs`):
  random search draws ``study.transfer.configurations`` at the smallest resolution and every
  one is trained again at every larger one. A configuration is drawn from the smallest
  resolution's space and kept unchanged, as successive halving promotes one: the space at a
  larger resolution holds it (the resolution bound only raises the number of conv layers
  allowed), so no layer is ever dropped, and no drawn configuration has more conv layers
  than the smallest resolution allows;
* the study's ``halving`` and ``hyperband`` runs, if any: the configurations their rungs
  promoted. These are *selected*: a rung trains again only the best of the one before, so
  they span a narrow, good range, which biases their correlations (range restriction
  attenuates them) and their overlaps.

A configuration is followed from rung to rung through ``promotions.json`` (trial ``j`` of a
stage is the ``j``-th promoted trial of the stage before). For each resolution ``r`` below
the largest ``L`` and each source: Spearman's rho and Kendall's tau-b (scipy.stats; ties
get average ranks) between the validation errors at ``r`` and at ``L``, each with a 95%
bootstrap percentile interval (configurations resampled with replacement, seeded by
``study.transfer.seed`` and ``r``), and the overlap of the best ``top_fraction`` at ``r``
with the best ``top_fraction`` at ``L`` (:func:`top_overlap`). A configuration that failed
at ``r`` or at ``L`` is left out of that pair of resolutions and counted.

Outputs under ``results/<study>/transfer/<dataset>/`` (:class:`iishpo.plan.layout.Layout`):
``transfer.md`` (the table), ``transfer.json`` (every number, the pairs, the configuration
digest and provenance) and the figure ``rank_correlation`` as PNG and SVG. Stage files made
under another configuration are refused, as in the summary. The planning layer: no torch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from iishpo.plan.layout import (
    Layout,
    RunKey,
    digest,
    promotion,
    promotions_config,
    stage_config,
    stages,
    transfer_config,
    transfer_sources,
)
from iishpo.results import figures
from iishpo.results.artifacts import PromotionsRecord, StaleFiles, read_promotions, read_stage
from iishpo.results.provenance import provenance
from iishpo.settings.config import MIN_TRANSFER_CONFIGURATIONS, Settings, Transfer
from iishpo.settings.strategies import TRANSFER
from iishpo.store import Trial, read_trials, write_atomic, write_json_atomic

FORMAT = 1
CONFIDENCE = 0.95
#: the fewest pairs a correlation is computed from (fewer: reported as undefined)
MIN_PAIRS = MIN_TRANSFER_CONFIGURATIONS

Lineage = dict[int, Trial]
Statistic = Callable[[np.ndarray, np.ndarray], float]


class StaleTransfer(StaleFiles):
    """Stage or promotion files were made under another configuration than the current one."""


# -- following configurations from rung to rung ------------------------------------------


def lineages(run_stages: Sequence[tuple[int, Sequence[Trial]]], handoffs: Sequence[PromotionsRecord]) -> list[Lineage]:
    """Each configuration of a run with its trial at every resolution it was evaluated at.

    ``run_stages``: ``(resolution, trials)`` of every stage in order; ``handoffs[k]``: the
    promotions stage ``k`` handed stage ``k + 1``. A stage evaluates exactly what it was
    handed, in order; an empty handoff starts new configurations (a Hyperband bracket).
    """
    if len(handoffs) != len(run_stages) - 1:
        raise ValueError(f"{len(run_stages)} stages need {len(run_stages) - 1} promotions, got {len(handoffs)}")
    resolution, trials = run_stages[0]
    current = [{resolution: t} for t in trials]
    found = list(current)
    for k, ((resolution, trials), handed) in enumerate(zip(run_stages[1:], handoffs, strict=True), start=1):
        if not handed.configs:
            current = [{resolution: t} for t in trials]
            found += current
            continue
        if [t.config for t in trials] != handed.configs:
            raise ValueError(f"stage {k} did not evaluate the configurations stage {k - 1} promoted")
        current = [current[number] for number in handed.trials]
        for lineage, trial in zip(current, trials, strict=True):
            lineage[resolution] = trial
    return found


@dataclass(frozen=True)
class Pairs:
    """Validation errors at two resolutions, one pair per configuration evaluated at both."""

    resolution: int
    largest: int
    small: tuple[float, ...]
    large: tuple[float, ...]
    #: configurations evaluated at both that failed at either, left out
    dropped: int


def pairs(found: Sequence[Lineage], resolution: int, largest: int) -> Pairs:
    """The configurations of ``found`` evaluated at ``resolution`` and at ``largest``."""
    both = [(lin[resolution], lin[largest]) for lin in found if resolution in lin and largest in lin]
    ok = [(a.val_error, b.val_error) for a, b in both if a.ok and b.ok]
    return Pairs(
        resolution, largest, tuple(float(a) for a, _ in ok), tuple(float(b) for _, b in ok),  # type: ignore[arg-type]
        dropped=len(both) - len(ok),
    )


# -- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A rank correlation and its bootstrap percentile interval; ``None``: undefined (fewer
    than :data:`MIN_PAIRS` pairs, or every error on one side equal)."""

    value: float | None
    low: float | None
    high: float | None
    #: resamples in which the statistic was undefined (every resampled error on one side
    #: equal), left out of the interval
    undefined_resamples: int


@dataclass(frozen=True)
class Overlap:
    """How many of the best ``k`` at one resolution are among the best ``k`` at the largest."""

    k: int
    #: the fraction of the ``k`` shared (expected value when ties straddle the cut)
    overlap: float
    #: the expected fraction for two unrelated rankings: ``k / n``
    chance: float


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.spearmanr(x, y).statistic)


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    return float(stats.kendalltau(x, y).statistic)  # tau-b: corrected for ties


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value


def estimate(x: np.ndarray, y: np.ndarray, statistic: Statistic, resamples: np.ndarray) -> Estimate:
    """``statistic`` of the pairs and its 95% percentile interval over ``resamples`` (rows
    of indices into the pairs, drawn with replacement)."""
    if len(x) < MIN_PAIRS:
        return Estimate(None, None, None, 0)
    with warnings.catch_warnings():  # a constant side: scipy warns and returns NaN
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        value = _defined(statistic(x, y))
        values = np.array([statistic(x[rows], y[rows]) for rows in resamples])
    defined = values[~np.isnan(values)]
    if value is None or not len(defined):
        return Estimate(value, None, None, len(values) - len(defined))
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Estimate(value, float(low), float(high), len(values) - len(defined))


def resample_rows(n: int, resamples: int, seed: int, resolution: int) -> np.ndarray:
    """``resamples`` rows of ``n`` indices drawn with replacement, the same for a seed and
    resolution wherever they are drawn."""
    return np.random.default_rng([seed, resolution]).integers(0, n, size=(resamples, n))


def top_size(n: int, fraction: float) -> int:
    """How many configurations the best ``fraction`` of ``n`` is: at least one."""
    return max(1, math.floor(fraction * n + 1e-9))


def top_membership(errors: Sequence[float], k: int) -> np.ndarray:
    """Each configuration's chance to be among the ``k`` lowest errors when ties are broken
    at random: 1 below the ``k``-th lowest, 0 above it, and the places left shared equally
    among those equal to it."""
    values = np.asarray(errors, dtype=float)
    cut = np.sort(values)[k - 1]
    below, at = values < cut, values == cut
    return np.where(below, 1.0, np.where(at, (k - below.sum()) / at.sum(), 0.0))


def top_overlap(small: Sequence[float], large: Sequence[float], fraction: float) -> Overlap | None:
    """The expected share of the best ``fraction`` at one resolution that is also among the
    best ``fraction`` at the other (ties broken at random, independently at each); ``None``
    without pairs."""
    if not small:
        return None
    k = top_size(len(small), fraction)
    shared = float(np.dot(top_membership(small, k), top_membership(large, k)))
    return Overlap(k, shared / k, k / len(small))


@dataclass(frozen=True)
class Comparison:
    """One resolution against the largest, for one source of configurations."""

    pairs: Pairs
    spearman: Estimate
    kendall: Estimate
    top: Overlap | None


def compare(found: Pairs, settings: Transfer) -> Comparison:
    x, y = np.array(found.small), np.array(found.large)
    rows = resample_rows(len(x), settings.resamples, settings.seed, found.resolution)
    return Comparison(
        found, estimate(x, y, spearman, rows), estimate(x, y, kendall, rows),
        top_overlap(found.small, found.large, settings.top_fraction),
    )


@dataclass(frozen=True)
class Source:
    """The configurations of one strategy's runs of a data set, compared per resolution."""

    strategy: str
    #: promoted by a halving rung, so chosen for being good (not a random sample)
    selected: bool
    runs: tuple[RunKey, ...]
    comparisons: tuple[Comparison, ...]

    @property
    def label(self) -> str:
        return f"{self.strategy} (promoted)" if self.selected else f"{self.strategy} (random)"


# -- reading a study and writing the outputs ------------------------------------------------


def _run_lineages(settings: Settings, layout: Layout, run: RunKey, stale: list[Path]) -> list[Lineage]:
    plans = stages(settings.study, run)
    run_stages, handoffs = [], []
    for plan in plans:
        record = layout.stage_record(plan.key)
        if read_stage(record).config_digest != digest(stage_config(settings, plan.key)):
            stale.append(record)
        run_stages.append((plan.resolution, read_trials(layout.trials(plan.key))))
        if plan is not plans[-1]:
            handed = read_promotions(layout.handoff(plan.key))
            if handed.config_digest != digest(promotions_config(*promotion(settings.study, plan.key))):
                stale.append(layout.handoff(plan.key))
            handoffs.append(handed)
    return lineages(run_stages, handoffs)


def sources(settings: Settings, layout: Layout, dataset: str) -> list[Source]:
    """The transfer run of ``dataset`` and the study's promoting runs, per strategy (runs
    of one strategy pooled over optimizers and seeds), compared at every resolution."""
    study = settings.study
    by_strategy: dict[str, tuple[list[RunKey], list[Lineage]]] = {}
    stale: list[Path] = []
    for run in transfer_sources(study, dataset):
        runs, found = by_strategy.setdefault(run.strategy, ([], []))
        runs.append(run)
        found += _run_lineages(settings, layout, run, stale)
    if stale:
        raise StaleTransfer(
            f"{len(stale)} files were made under another configuration than the current one: "
            + ", ".join(map(str, stale)) + "; run snakemake with the current configuration to redo them"
        )
    largest = study.ladder[-1]
    return [
        Source(
            strategy, strategy != TRANSFER, tuple(runs),
            tuple(compare(pairs(found, r, largest), study.transfer) for r in study.ladder[:-1]),
        )
        for strategy, (runs, found) in by_strategy.items()
    ]


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _with_interval(e: Estimate) -> str:
    if e.value is None:
        return "n/a"
    interval = "" if e.low is None else f" [{_number(e.low)}, {_number(e.high)}]"
    return f"{_number(e.value)}{interval}"


def markdown(found: Sequence[Source], dataset: str, settings: Settings) -> str:
    """The table of ``transfer.md``: one row per source and resolution."""
    study = settings.study
    largest = study.ladder[-1]
    percent = f"{100 * study.transfer.top_fraction:g}%"
    lines = [
        f"# Rank correlation across resolutions ({dataset}, study {study.name})",
        "",
        (
            f"Validation errors of the same configurations at each resolution and at {largest} px: "
            f"Spearman's rho and Kendall's tau-b with {100 * CONFIDENCE:g}% bootstrap percentile "
            f"intervals ({study.transfer.resamples} resamples of configurations), and the share of "
            f"the best {percent} at the resolution that is among the best {percent} at {largest} px "
            "(chance: what two unrelated rankings share). A configuration that failed at either "
            "resolution is left out. 1 is the same ranking, 0 none, -1 the reverse."
        ),
        "",
        (
            f"| configurations | resolution | pairs | left out (failed) | Spearman's rho | Kendall's tau | "
            f"best {percent} shared | chance |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for source in found:
        for c in source.comparisons:
            top = "n/a" if c.top is None else f"{c.top.overlap:.2f} (best {c.top.k})"
            chance = "n/a" if c.top is None else f"{c.top.chance:.2f}"
            lines.append(
                f"| {source.label} | {c.pairs.resolution} px | {len(c.pairs.small)} | {c.pairs.dropped} | "
                f"{_with_interval(c.spearman)} | {_with_interval(c.kendall)} | {top} | {chance} |"
            )
    lines += ["", *_notes(found)]
    return "\n".join(lines) + "\n"


def _notes(found: Sequence[Source]) -> list[str]:
    notes = []
    for source in found:
        optimizers = sorted({run.optimizer for run in source.runs})
        seeds = sorted({run.seed for run in source.runs})
        what = (
            "configurations its rungs promoted: chosen for being good at the rung before, "
            "so a narrow, good range, not a random sample; their correlations are attenuated "
            "by that restriction and their overlap is not comparable with the random ones"
            if source.selected
            else "random configurations drawn at the smallest resolution, every one trained at every resolution"
        )
        notes.append(
            f"- {source.label}: {len(source.runs)} run(s) (optimizers {', '.join(optimizers)}; "
            f"seeds {', '.join(map(str, seeds))}): {what}."
        )
    return notes


def analyze_transfer(settings: Settings, results: Path, dataset: str) -> list[Path]:
    """Write ``transfer.md``, ``transfer.json`` and the figure of ``dataset``; return their paths."""
    layout = Layout(results)
    found = sources(settings, layout, dataset)
    study = settings.study
    write_atomic(layout.transfer_markdown(dataset), markdown(found, dataset, settings))
    record = provenance(settings.resolved, settings.overrides, device="", seed=study.transfer.seed)
    write_json_atomic(layout.transfer_record(dataset), {
        "format": FORMAT, "dataset": dataset, "study": study.name, "largest": study.ladder[-1],
        "confidence": CONFIDENCE, "transfer": asdict(study.transfer),
        "sources": [{**asdict(source), "label": source.label} for source in found],
        "config_digest": digest(transfer_config(settings)),
        "provenance": {k: v for k, v in asdict(record).items() if k != "device"},
    })
    title = f"Rank correlation with {study.ladder[-1]} px ({dataset}, study {study.name})"
    written = figures.rank_correlation_figure(found, title, layout.transfer_figure(dataset))
    return [layout.transfer_markdown(dataset), layout.transfer_record(dataset), *written]
