"""Summarize a study like the paper: time per strategy (Table 1), quality, progress (Fig. 5).

Outputs, all under ``results/<study>/``: ``runs.csv`` (one row per run), ``summary.csv``
and ``summary.md`` (mean and std over seeds, and the IIS time reduction), ``metrics.json``
(for ``dvc metrics diff``), ``progress/<dataset>.csv`` (best validation error so far per
evaluation, mean over seeds, one row per evaluation and ``<optimizer>-<strategy>`` series,
for ``dvc plots diff``) and ``progress.png``. Paths come from :class:`iishpo.layout.Layout`.

A study whose stage or test files were made under another configuration than the
current one (their recorded ``config_digest`` differs) is not summarized: the error names
the files (:class:`StaleResults`).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from iishpo.artifacts import read_evaluation, read_stage
from iishpo.config import Settings
from iishpo.layout import Layout, RunKey, digest, evaluation_config, runs, stage_config, stages
from iishpo.store import read_trials, write_atomic, write_json_atomic


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


class StaleResults(ValueError):
    """Result files were made under another configuration than the current one."""


def stale_files(settings: Settings, layout: Layout) -> list[Path]:
    """The stage and test files whose recorded configuration digest is not the current one's."""
    stale = []
    for run in runs(settings.study):
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
    for plan in stages(settings.study, run):
        record = read_stage(layout.stage_record(plan.key))
        best = float("inf")
        for t in read_trials(layout.trials(plan.key)):
            if t.ok and t.val_error is not None:
                best = min(best, t.val_error)
            evaluations += 1
            progress.append((evaluations, wall + t.elapsed, best))
        wall += record.wall_time
        n_failed += record.n_failed
    test = read_evaluation(layout.test(run))
    return RunResult(
        run.dataset, run.optimizer, run.strategy, run.seed, wall, evaluations, n_failed,
        test.val_error, test.test_score, test.metric, progress,
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


def time_reduction(rows: list[dict], dataset: str, optimizer: str) -> float | None:
    """1 - time(IIS) / time(standard), as in the paper's Table 1."""
    times = {r["strategy"]: r["wall_time_mean"] for r in rows if r["dataset"] == dataset and r["optimizer"] == optimizer}
    if "standard" in times and "iis" in times and times["standard"] > 0:
        return 1.0 - times["iis"] / times["standard"]
    return None


PROGRESS_FIELDS = ["evaluation", "series", "best_val_error"]


def _write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fieldnames or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def markdown(settings: Settings, rows: list[dict]) -> str:
    study = settings.study
    lines = [f"# Study `{study.name}`", ""]
    lines.append(
        f"{study.budget} evaluations per run; standard: all at {study.ladder[-1]} px; IIS: "
        + ", ".join(f"{b} at {r} px" for r, b in zip(study.ladder, study.iis_budgets, strict=True))
        + f"; seeds {list(study.seeds)} (mean ± std over seeds)."
    )
    by_key = {(r["dataset"], r["optimizer"], r["strategy"]): r for r in rows}
    for dataset in study.datasets:
        header = "| | " + " | ".join(study.optimizers) + " |"
        rule = "|---|" + "---|" * len(study.optimizers)
        for title, field, fmt in (
            ("Time (seconds, as in Table 1 of the paper)", "wall_time", "{:.1f} ± {:.1f}"),
            ("Best validation error", "best_val_error", "{:.4f} ± {:.4f}"),
            (f"Test score ({settings.datasets[dataset]['test_metric']})", "test_score", "{:.4f} ± {:.4f}"),
        ):
            lines += ["", f"## {dataset}: {title}", "", header, rule]
            for strategy in study.strategies:
                cells = []
                for optimizer in study.optimizers:
                    r = by_key.get((dataset, optimizer, strategy))
                    cells.append(fmt.format(r[f"{field}_mean"], r[f"{field}_std"]) if r else "–")
                lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
            if field == "wall_time" and {"standard", "iis"} <= set(study.strategies):
                cells = []
                for optimizer in study.optimizers:
                    reduction = time_reduction(rows, dataset, optimizer)
                    cells.append("–" if reduction is None else f"{reduction:.0%}")
                lines.append("| time reduction | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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


def plot(runs: list[RunResult], datasets: Iterable[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(datasets)
    optimizers = sorted({run.optimizer for run in runs})
    colours = {name: f"C{i}" for i, name in enumerate(optimizers)}
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 4 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        for run in runs:
            if run.dataset != dataset:
                continue
            xs = [p for p in run.progress if p[2] != float("inf")]
            style = "-" if run.strategy == "iis" else "--"
            label = f"{run.optimizer} {run.strategy} s{run.seed}"
            colour = colours[run.optimizer]
            axes[row][0].plot([p[0] for p in xs], [p[2] for p in xs], style, color=colour, label=label)
            axes[row][1].plot([p[1] / 60 for p in xs], [p[2] for p in xs], style, color=colour, label=label)
        axes[row][0].set(
            title=f"{dataset}: best validation error so far (IIS: within each stage)",
            xlabel="evaluations", ylabel="validation error",
        )
        axes[row][1].set(title=f"{dataset}: best validation error", xlabel="minutes", ylabel="validation error")
        axes[row][1].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


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
    loaded = [load_run(settings, layout, run) for run in runs(study)]
    _write_csv(layout.runs_table, [
        {k: v for k, v in run.__dict__.items() if k != "progress"} for run in loaded
    ])
    rows = aggregate(loaded)
    for row in rows:
        row["time_reduction"] = time_reduction(rows, row["dataset"], row["optimizer"]) if row["strategy"] == "iis" else ""
    _write_csv(layout.summary_table, rows)
    write_atomic(layout.summary_markdown, markdown(settings, rows))
    metrics: dict = {}
    for row in rows:
        metrics.setdefault(row["dataset"], {}).setdefault(row["optimizer"], {})[row["strategy"]] = {
            "wall_time": round(row["wall_time_mean"], 3),
            "best_val_error": round(row["best_val_error_mean"], 6),
            "test_score": round(row["test_score_mean"], 6),
        }
    write_json_atomic(layout.metrics, metrics)
    for dataset in study.datasets:
        _write_csv(layout.progress(dataset), progress_table(loaded, dataset), PROGRESS_FIELDS)
    plot(loaded, study.datasets, layout.plot)
    return rows
