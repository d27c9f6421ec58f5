"""Summarize a study like the paper: time per strategy (Table 1), quality, statistics over
seeds, progress (Fig. 5).

Outputs, all under ``results/<study>/``: ``runs.csv`` (one row per run), ``summary.csv``
and ``summary.md`` (mean and std over seeds, the time reductions, and every compared
strategy against ``standard``, and ``iis`` against ``halving``, paired by seed),
``comparisons.csv`` (those comparisons, one row per data set, optimizer, pair of
strategies and metric, with the t-tests' p-values raw and Holm-adjusted over all rows of
the study; :mod:`iishpo.results.comparison`),
``table1.md`` (Table 1 in minutes, the paper's numbers beside ours in the ``paper``
study), ``metrics.json`` (for ``dvc metrics diff``), ``progress/<dataset>.csv`` (best
validation error so far per evaluation, mean over seeds, one row per evaluation and
``<optimizer>-<strategy>`` series, for ``dvc plots diff``), Fig. 5 and each strategy's
mean rank over wall time (:mod:`iishpo.results.ranking`) per data set under ``figures/``. Paths
come from :class:`iishpo.plan.layout.Layout`.

``independent`` runs (Experiment 1) have no test score and are not summarized here; see
:mod:`iishpo.results.analysis`. A study whose stage or test files were made under another
configuration than the current one (their recorded ``config_digest`` differs) is not
summarized: the error names the files (:class:`StaleResults`).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iishpo.plan.layout import (
    Layout,
    RunKey,
    digest,
    evaluated_runs,
    evaluation_config,
    result_stages,
    stage_config,
    stages,
)
from iishpo.results import figures, ranking
from iishpo.results.artifacts import StaleFiles, read_evaluation, read_stage
from iishpo.results.comparison import MIN_SEEDS, PairedComparison, compare_paired, holm
from iishpo.settings.config import Settings
from iishpo.settings.strategies import BASELINE, STRATEGIES
from iishpo.store import read_trials, write_atomic, write_json_atomic

#: what the comparisons compare, in the order of the summary
COMPARED_METRICS = ("wall_time", "best_val_error", "test_score")
COMPARISON_FIELDS = [
    "dataset", "optimizer", "strategy", "baseline", "metric", "n_seeds", "mean_difference",
    "std", "ci_low", "ci_high", "p_ttest", "p_holm", "p_wilcoxon", "beyond_noise", "verdict",
]


@dataclass(frozen=True)
class RunResult:
    dataset: str
    optimizer: str
    strategy: str
    seed: int
    wall_time: float
    n_evaluations: int
    n_failed: int
    best_val_error: float
    test_score: float
    test_metric: str
    progress: list[tuple[int, float, float]]  # (evaluation, elapsed, best val error in stage)
    trials: figures.RunTrials
    result_curve: ranking.Curve  # the run's result (best_val_error) as it grew, for the mean ranks


class StaleResults(StaleFiles):
    """Result files were made under another configuration than the current one."""


def stale_files(settings: Settings, layout: Layout) -> list[Path]:
    """The stage and test files whose recorded configuration digest is not the current one's."""
    stale = []
    for run in evaluated_runs(settings.study):
        for plan in stages(settings.study, run):
            path = layout.stage_record(plan.key)
            if read_stage(path).config_digest != digest(stage_config(settings, plan.key)):
                stale.append(path)
        if read_evaluation(layout.test(run)).config_digest != digest(evaluation_config(settings, run.dataset)):
            stale.append(layout.test(run))
    return stale


def load_run(settings: Settings, layout: Layout, run: RunKey) -> RunResult:
    """One run's numbers from its stage, trial and test files."""
    wall, progress, n_failed, evaluations = 0.0, [], 0, 0
    stage_trials, curve = [], []
    result = {plan.key.stage for plan in result_stages(settings.study, run)}
    best_result = float("inf")  # the best validation error of the stages the result is chosen from
    for plan in stages(settings.study, run):
        record = read_stage(layout.stage_record(plan.key))
        best = float("inf")  # within the stage: errors at different resolutions do not compare
        trials = read_trials(layout.trials(plan.key))
        stage_trials.append(tuple(trials))
        for t in trials:
            if t.ok and t.val_error is not None:
                best = min(best, t.val_error)
            evaluations += 1
            progress.append((evaluations, wall + t.elapsed, best))
            if plan.key.stage in result:
                best_result = min(best_result, best)
                curve.append((wall + t.elapsed, best_result))
        wall += record.wall_time
        n_failed += record.n_failed
    if best_result == float("inf"):
        raise ValueError(f"{layout.trials(plan.key)}: the result stages of {run} have no successful trial")
    test = read_evaluation(layout.test(run))
    return RunResult(
        run.dataset, run.optimizer, run.strategy, run.seed, wall, evaluations, n_failed,
        best_result, test.test_score, test.metric, progress,
        figures.RunTrials(run.optimizer, run.strategy, run.seed, tuple(stage_trials)),
        ranking.Curve(run.optimizer, run.strategy, run.seed, tuple(curve)),
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: Iterable[RunResult]) -> list[dict]:
    groups: dict[tuple[str, str, str], list[RunResult]] = {}
    for run in runs:
        groups.setdefault((run.dataset, run.optimizer, run.strategy), []).append(run)
    rows = []
    for (dataset, optimizer, strategy), members in groups.items():
        row: dict = {"dataset": dataset, "optimizer": optimizer, "strategy": strategy, "n_seeds": len(members)}
        for field in ("wall_time", "best_val_error", "test_score"):
            mean, std = _mean_std([getattr(r, field) for r in members])
            row[f"{field}_mean"], row[f"{field}_std"] = mean, std
        row["n_evaluations"] = members[0].n_evaluations
        row["n_failed"] = sum(r.n_failed for r in members)
        row["test_metric"] = members[0].test_metric
        rows.append(row)
    return rows


def time_reduction(rows: list[dict], dataset: str, optimizer: str, strategy: str = "iis") -> float | None:
    """1 - time(strategy) / time(standard), as in the paper's Table 1."""
    times = {r["strategy"]: r["wall_time_mean"] for r in rows if r["dataset"] == dataset and r["optimizer"] == optimizer}
    if BASELINE in times and strategy in times and times[BASELINE] > 0:
        return 1.0 - times[strategy] / times[BASELINE]
    return None


def compared_strategies(strategies: Sequence[str]) -> list[str]:
    """The strategies of ``strategies`` that are compared with the baseline (none without
    it), in the order of :data:`~iishpo.settings.strategies.STRATEGIES`."""
    if BASELINE not in strategies:
        return []
    return [name for name, strategy in STRATEGIES.items() if strategy.compared and name in strategies]


def compared_pairs(strategies: Sequence[str]) -> list[tuple[str, str]]:
    """``(strategy, baseline)`` of every comparison the summary makes among ``strategies``:
    each compared one against :data:`~iishpo.settings.strategies.BASELINE`, then the direct
    comparisons of the strategy table (``compared_with``) whose strategies are both there."""
    direct = [
        (name, other) for name, strategy in STRATEGIES.items() if name in strategies
        for other in strategy.compared_with if other in strategies
    ]
    return [(strategy, BASELINE) for strategy in compared_strategies(strategies)] + direct


def comparisons(runs: Sequence[RunResult], strategies: Sequence[str]) -> list[tuple[str, str, PairedComparison]]:
    """``(dataset, optimizer, comparison)`` of every pair of :func:`compared_pairs` per
    metric, paired by seed (seeds that lack either run are left out), the t-tests'
    p-values Holm-adjusted over all of them (the study's family of tests)."""
    by_key = {(r.dataset, r.optimizer, r.strategy, r.seed): r for r in runs}
    keys = []
    out = []
    for dataset, optimizer in dict.fromkeys((r.dataset, r.optimizer) for r in runs):
        for strategy, baseline in compared_pairs(strategies):
            seeds = sorted(
                seed for (d, o, s, seed) in by_key
                if (d, o, s) == (dataset, optimizer, strategy) and (d, o, baseline, seed) in by_key
            )
            if not seeds:
                continue
            for metric in COMPARED_METRICS:
                pairs = {
                    seed: (getattr(by_key[(dataset, optimizer, strategy, seed)], metric),
                           getattr(by_key[(dataset, optimizer, baseline, seed)], metric))
                    for seed in seeds
                }
                keys.append((dataset, optimizer))
                out.append(compare_paired(metric, strategy, baseline, pairs))
    return [(dataset, optimizer, c) for (dataset, optimizer), c in zip(keys, holm(out), strict=True)]


def comparison_row(dataset: str, optimizer: str, c: PairedComparison) -> dict[str, Any]:
    return {
        "dataset": dataset, "optimizer": optimizer, "strategy": c.strategy, "baseline": c.baseline,
        "metric": c.metric, "n_seeds": len(c.seeds), "mean_difference": c.mean, "std": _blank(c.std),
        "ci_low": _blank(c.ci_low), "ci_high": _blank(c.ci_high), "p_ttest": _blank(c.p_ttest),
        "p_holm": _blank(c.p_holm), "p_wilcoxon": _blank(c.p_wilcoxon), "beyond_noise": _blank(c.beyond_noise),
        "verdict": c.verdict(),
    }


def _blank(value: Any) -> Any:
    """CSV cell: empty where a comparison has no value (too few seeds, no Wilcoxon ranks)."""
    return "" if value is None else value


PROGRESS_FIELDS = ["evaluation", "series", "best_val_error"]


def _write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fieldnames or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


METRIC_WORDS = {
    "wall_time": ("wall time (s)", "{:+.1f}"),
    "best_val_error": ("best validation error", "{:+.4f}"),
    "test_score": ("test score", "{:+.4f}"),
}


def markdown(settings: Settings, rows: list[dict], compared: Sequence[tuple[str, str, PairedComparison]]) -> str:
    study = settings.study
    strategies = [s for s in study.strategies if STRATEGIES[s].evaluated]
    lines = [f"# Study `{study.name}`", ""]
    lines.append(
        f"{study.budget} evaluations per run; "
        + "; ".join(f"{s}: {STRATEGIES[s].describe(study)}" for s in strategies)
        + f"; seeds {list(study.seeds)} (mean ± std over seeds)."
    )
    by_key = {(r["dataset"], r["optimizer"], r["strategy"]): r for r in rows}
    for dataset in study.datasets:
        header = "| | " + " | ".join(study.optimizers) + " |"
        rule = "|---|" + "---|" * len(study.optimizers)
        for title, field, fmt in (
            ("Time (seconds, as in Table 1 of the paper)", "wall_time", "{:.1f} ± {:.1f}"),
            ("Best validation error (last stage)", "best_val_error", "{:.4f} ± {:.4f}"),
            (f"Test score ({settings.datasets[dataset]['test_metric']}, mean of the retrainings)", "test_score", "{:.4f} ± {:.4f}"),
        ):
            lines += ["", f"## {dataset}: {title}", "", header, rule]
            for strategy in strategies:
                cells = []
                for optimizer in study.optimizers:
                    r = by_key.get((dataset, optimizer, strategy))
                    cells.append(fmt.format(r[f"{field}_mean"], r[f"{field}_std"]) if r else "–")
                lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
            if field == "wall_time":
                for strategy in compared_strategies(strategies):
                    cells = []
                    for optimizer in study.optimizers:
                        reduction = time_reduction(rows, dataset, optimizer, strategy)
                        cells.append("–" if reduction is None else f"{reduction:.0%}")
                    lines.append(f"| {STRATEGIES[strategy].reduction_label} | " + " | ".join(cells) + " |")
        lines += _comparison_markdown(dataset, [(o, c) for d, o, c in compared if d == dataset])
    return "\n".join(lines) + "\n"


def _comparison_markdown(dataset: str, compared: Sequence[tuple[str, PairedComparison]]) -> list[str]:
    if not compared:
        return []
    family = max((c.family for _, c in compared if c.testable), default=0)
    direct = "".join(dict.fromkeys(f", {c.strategy} against {c.baseline}" for _, c in compared if c.baseline != BASELINE))
    lines = [
        "", f"## {dataset}: each strategy against {BASELINE}{direct}, paired by seed", "",
        (f"Differences are strategy minus {BASELINE} of the same seed (`a vs b`: a minus b; "
        "negative: less time, lower error; positive test score: better). 95% confidence interval "
        "from Student's t, paired t-test and Wilcoxon signed-rank test. Beyond seed noise: the "
        "t-test's p-value, Holm-adjusted over every test of the study (the rows with a p-value in "
        f"every data set's table, {family} here), below 5%; the intervals and raw p-values are "
        "not adjusted."),
    ]
    if any(not c.testable for _, c in compared):
        lines += ["", (f"**Fewer than {MIN_SEEDS} seeds: no interval or test is possible**; the "
                  "differences below are single observations, not evidence.")]
    lines += [
        "", "| optimizer | strategy | metric | seeds | mean difference | 95% CI | t-test p | Holm p | Wilcoxon p | beyond seed noise |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for optimizer, c in compared:
        words, fmt = METRIC_WORDS[c.metric]
        ci = "–" if c.ci_low is None else f"{fmt.format(c.ci_low)} .. {fmt.format(c.ci_high)}"
        p_t, p_h, p_w = ("–" if p is None else f"{p:.3g}" for p in (c.p_ttest, c.p_holm, c.p_wilcoxon))
        noise = {None: "no test", True: "yes", False: "no"}[c.beyond_noise]
        pair = c.strategy if c.baseline == BASELINE else f"{c.strategy} vs {c.baseline}"
        lines.append(
            f"| {optimizer} | {pair} | {words} | {len(c.seeds)} | {fmt.format(c.mean)} | {ci} | {p_t} | {p_h} | {p_w} | {noise} |"
        )
    lines.append("")
    lines += [f"- {optimizer}: {c.verdict()}." for optimizer, c in compared]
    return lines


def progress_table(runs: list[RunResult], dataset: str) -> list[dict]:
    """Best validation error so far (within the current stage), mean over seeds, per
    evaluation: one row per (evaluation, optimizer, strategy), so that one plot definition
    fits any study. Evaluations before the first successful one have no row."""
    series: dict[tuple[str, str], list[list[float]]] = {}
    for run in runs:
        if run.dataset == dataset:
            series.setdefault((run.optimizer, run.strategy), []).append([p[2] for p in run.progress])
    rows = []
    for (optimizer, strategy), group in sorted(series.items()):
        for i in range(max(len(s) for s in group)):
            values = [s[i] for s in group if i < len(s) and s[i] != float("inf")]
            if values:
                rows.append({
                    "evaluation": i + 1, "series": f"{optimizer}-{strategy}",
                    "best_val_error": round(statistics.fmean(values), 6),
                })
    return rows


def table1_markdown(settings: Settings, runs: Sequence[RunResult]) -> str:
    """Table 1 per data set (minutes), with the paper's numbers beside ours in ``paper``."""
    lines = [f"# Table 1: time per strategy, study `{settings.study.name}`"]
    for dataset in settings.study.datasets:
        times: dict[tuple[str, str], list[float]] = {}
        for run in runs:
            if run.dataset == dataset:
                times.setdefault((run.optimizer, run.strategy), []).append(run.wall_time)
        table = figures.table1(times, settings.study.optimizers, with_paper=settings.study.name == "paper")
        lines += ["", f"## {dataset}", "", table]
    return "\n".join(lines)


def comparison_metrics(compared: Sequence[tuple[str, str, PairedComparison]]) -> dict[str, Any]:
    """``{dataset: {optimizer: {"<strategy>_vs_standard": {metric: numbers}}}}`` for metrics.json."""
    out: dict[str, Any] = {}
    for dataset, optimizer, c in compared:
        entry = out.setdefault(dataset, {}).setdefault(optimizer, {}).setdefault(f"{c.strategy}_vs_{c.baseline}", {})
        entry[c.metric] = {
            "mean_difference": round(c.mean, 6),
            "ci_low": None if c.ci_low is None else round(c.ci_low, 6),
            "ci_high": None if c.ci_high is None else round(c.ci_high, 6),
            "p_ttest": None if c.p_ttest is None else round(c.p_ttest, 6),
            "p_holm": None if c.p_holm is None else round(c.p_holm, 6),
            "n_seeds": len(c.seeds),
        }
    return out


def summarize(settings: Settings, results: Path) -> list[dict]:
    """Write every summary output under ``results``; refuse results of another configuration."""
    study = settings.study
    layout = Layout(results)
    stale = stale_files(settings, layout)
    if stale:
        raise StaleResults(
            f"{len(stale)} result files were made under another configuration than the current "
            "one (their config_digest differs): " + ", ".join(str(p) for p in stale)
            + "; run snakemake with the current configuration to redo them"
        )
    loaded = [load_run(settings, layout, run) for run in evaluated_runs(settings.study)]
    if not loaded:
        raise ValueError(
            f"study {study.name!r} has only the strategies {list(study.strategies)}: nothing to "
            "summarize (the summary reads the strategies other than "
            f"{[name for name, strategy in STRATEGIES.items() if not strategy.evaluated and strategy.target is None]})"
        )
    _write_csv(layout.runs_table, [
        {k: v for k, v in run.__dict__.items() if k not in ("progress", "trials", "result_curve")} for run in loaded
    ])
    rows = aggregate(loaded)
    for row in rows:
        reduction = time_reduction(rows, row["dataset"], row["optimizer"], row["strategy"])
        row["time_reduction"] = "" if not STRATEGIES[row["strategy"]].compared or reduction is None else reduction
    _write_csv(layout.summary_table, rows)
    compared = comparisons(loaded, study.strategies)
    _write_csv(layout.comparisons, [comparison_row(d, o, c) for d, o, c in compared], COMPARISON_FIELDS)
    write_atomic(layout.summary_markdown, markdown(settings, rows, compared))
    write_atomic(layout.table1, table1_markdown(settings, loaded))
    metrics: dict = {}
    for row in rows:
        metrics.setdefault(row["dataset"], {}).setdefault(row["optimizer"], {})[row["strategy"]] = {
            "wall_time": round(row["wall_time_mean"], 3),
            "best_val_error": round(row["best_val_error_mean"], 6),
            "test_score": round(row["test_score_mean"], 6),
        }
    for dataset, by_optimizer in comparison_metrics(compared).items():
        for optimizer, entries in by_optimizer.items():
            metrics[dataset][optimizer].update(entries)
    write_json_atomic(layout.metrics, metrics)
    for dataset in study.datasets:
        _write_csv(layout.progress(dataset), progress_table(loaded, dataset), PROGRESS_FIELDS)
        figures.progress_figure(
            [run.trials for run in loaded if run.dataset == dataset],
            f"{dataset}, study {study.name}: best validation error so far (within each stage)",
            layout.progress_figure(dataset),
        )
        ranking.rank_figure(
            [run.result_curve for run in loaded if run.dataset == dataset],
            f"{dataset}, study {study.name}: mean rank of each strategy's best validation error so far",
            layout.rank_figure(dataset),
        )
    return rows
