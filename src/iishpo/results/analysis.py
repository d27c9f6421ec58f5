"""Experiment 1 of the paper: hyperparameter importance per resolution, from a study's
``independent`` runs (the whole budget at every ladder resolution, from the full space).

Per data set, the trials of every optimizer and seed at one resolution are pooled (as in
the paper) for fANOVA (:mod:`iishpo.results.importance`) and Fig. 2; Figs. 3 and 4 keep the
optimizers apart. Outputs under ``results/<study>/importance/<dataset>/`` (paths from
:class:`iishpo.plan.layout.Layout`): ``importance.md`` (top-5 and top-10 subsets per resolution
and their overlap), ``importance.csv`` (every subset's share at every resolution) and the
three figures as PNG and SVG. A stage made under another configuration is refused, as in
the summary.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from iishpo.plan.layout import Layout, digest, independent_runs, stage_config, stages
from iishpo.results import figures
from iishpo.results.artifacts import StaleFiles, read_stage
from iishpo.results.importance import importance_by_resolution, importance_rows, markdown
from iishpo.settings.config import Settings
from iishpo.store import Trial, read_trials, write_atomic

IMPORTANCE_FIELDS = ["resolution", "n_trials", "subset", "size", "explained_variance"]


class StaleStages(StaleFiles):
    """Stage files were made under another configuration than the current one."""


def trials_by_resolution(settings: Settings, layout: Layout, dataset: str) -> dict[int, dict[str, list[Trial]]]:
    """``{resolution: {optimizer: trials of every seed}}`` of ``dataset``'s independent runs."""
    selected = [r for r in independent_runs(settings.study) if r.dataset == dataset]
    if not selected:
        raise ValueError(
            f"study {settings.study.name!r} has no 'independent' runs of data set {dataset!r} "
            f"(strategies {list(settings.study.strategies)}, data sets {list(settings.study.datasets)})"
        )
    out: dict[int, dict[str, list[Trial]]] = {}
    stale = []
    for run in selected:
        for plan in stages(settings.study, run):
            if read_stage(layout.stage_record(plan.key)).config_digest != digest(stage_config(settings, plan.key)):
                stale.append(layout.stage_record(plan.key))
            out.setdefault(plan.resolution, {}).setdefault(run.optimizer, []).extend(read_trials(layout.trials(plan.key)))
    if stale:
        raise StaleStages(
            f"{len(stale)} stage files were made under another configuration than the current one: "
            + ", ".join(str(p) for p in stale) + "; run snakemake with the current configuration to redo them"
        )
    return out


def analyze_importance(settings: Settings, results: Path, dataset: str) -> list[Path]:
    """Write the importance table, its CSV and Figs. 2-4 of ``dataset``; return their paths."""
    layout = Layout(results)
    trials = trials_by_resolution(settings, layout, dataset)
    pooled = {resolution: [t for ts in by_optimizer.values() for t in ts] for resolution, by_optimizer in trials.items()}
    importances = importance_by_resolution(pooled, settings.space)
    where = f"{dataset}, study {settings.study.name}"
    write_atomic(layout.importance_markdown(dataset), markdown(importances, f"Hyperparameter importance ({where})"))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=IMPORTANCE_FIELDS)
    writer.writeheader()
    writer.writerows(importance_rows(importances))
    write_atomic(layout.importance_table(dataset), text.getvalue())
    stems = layout.importance_figures(dataset)
    return [
        layout.importance_markdown(dataset), layout.importance_table(dataset),
        *figures.importance_figure(importances, f"Fig. 2: hyperparameter importance ({where})", stems["fig2_importance"]),
        *figures.learning_rate_figure(trials, f"Fig. 3: learning rate vs validation error ({where})", stems["fig3_learning_rate"]),
        *figures.learning_rate_fc_figure(trials, f"Fig. 4: learning rate x fc layers ({where})", stems["fig4_learning_rate_fc"]),
    ]
