"""How does accuracy grow with the number of evaluations, and how well does a run's best
validation accuracy foretell its test score? Read from a finished study's results folder.

1. The ``standard`` runs of random search (the full space at the largest resolution, so
   their trials are i.i.d. draws): the best validation accuracy so far (1 - val_error)
   against the number of evaluations, per seed and mean ± std over seeds, and the
   expected best of n draws without replacement from the trials of all seeds pooled (exact
   order statistics, for n up to the pool's size; beyond it the pool says nothing without
   a model of its tail). Also how the pool's trainings stopped: by patience, or cut off by
   ``max_epochs`` (only those would change with more epochs).
2. Every evaluated run (its ``test.json``): its best trial's validation accuracy beside its test
   score(s), and the gap; a retraining that scores below ``--collapse-below`` times its
   trial's validation accuracy counts as collapsed and is left out of the gap that turns
   the ``--target`` test score into a validation level.
3. With ``--retrain K``: the K best configurations of the pool retrained ``--repeats`` times
   each through the study's own test evaluation (``iishpo.jobs.evaluation.evaluate_test``: its
   trainer, its test seeds, so the first retraining of a run's best configuration is the
   study's own), ``--jobs`` at a time: the spread of a single test retraining.

Prints markdown tables (headings at the level of the summary's) and writes a figure (``--figure``: PNG and SVG).

    nice .venv/bin/python benchmarks/accuracy_vs_evaluations.py results/flowers-claim \\
        --retrain 5 --data data/prepared/flowers102/rgb/32px.npz --figure /tmp/accuracy
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from bench_data import REPO
from matplotlib.ticker import FuncFormatter
from scipy.special import gammaln

from iishpo.data.splits import load_splits
from iishpo.jobs.evaluation import evaluate_test
from iishpo.plan.layout import TEST, Layout, RunKey, evaluated_runs, runs, stages
from iishpo.results.artifacts import EvaluationRecord, read_evaluation
from iishpo.results.figures import mean_band, save
from iishpo.results.summary import stale_files
from iishpo.settings.config import Evaluation, Settings, load_settings
from iishpo.store import Trial, TrialStore, read_trials
from iishpo.training.runtime import configure_training

STRATEGY, OPTIMIZER = "standard", "random"


@dataclass(frozen=True)
class Draw:
    """One trial of the pool and the run it came from."""

    seed: int
    trial: Trial

    @property
    def accuracy(self) -> float:
        return accuracy(self.trial)


def accuracy(trial: Trial) -> float:
    """Validation accuracy, 1 - val_error; a failed trial (no model) counts as 0."""
    return 1.0 - trial.val_error if trial.ok and trial.val_error is not None else 0.0


def study_settings(results: Path) -> Settings:
    """``conf/`` composed with the overrides the study's ``configuration.json`` records;
    refused, as the summary refuses it, if a stage or test file was made under another
    configuration."""
    path = results / "configuration.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; give a study's results folder (it holds configuration.json, written by the workflow)")
    settings = load_settings(json.loads(path.read_text())["overrides"], config_dir=REPO / "conf")
    try:
        stale = stale_files(settings, Layout(results))
    except FileNotFoundError as err:
        raise SystemExit(f"{err.filename}: not found; the study has not finished") from err
    if stale:
        raise SystemExit(f"made under another configuration than conf/ with {settings.overrides}: {', '.join(map(str, stale))}")
    return settings


def standard_runs(settings: Settings, layout: Layout, dataset: str) -> dict[int, list[Trial]]:
    """Each seed's trials of random search's ``standard`` run, in the order they were made."""
    study = settings.study
    if OPTIMIZER not in study.optimizers or STRATEGY not in study.strategies:
        raise SystemExit(
            f"study {study.name!r} has optimizers {list(study.optimizers)} and strategies {list(study.strategies)}: "
            f"the pool needs {OPTIMIZER!r} and {STRATEGY!r} (only its trials are i.i.d. draws)"
        )
    out = {}
    for run in runs(study):
        if (run.dataset, run.optimizer, run.strategy) != (dataset, OPTIMIZER, STRATEGY):
            continue
        trials = []
        for plan in stages(study, run):
            if plan.resolution != study.ladder[-1]:
                raise SystemExit(f"{plan.key.label()} is at {plan.resolution} px, not the largest resolution {study.ladder[-1]}")
            trials += read_trials(layout.trials(plan.key))
        out[run.seed] = trials
    return out


def best_so_far(trials: Sequence[Trial]) -> list[float]:
    """The best validation accuracy after each evaluation."""
    return np.maximum.accumulate([accuracy(t) for t in trials]).tolist()


def expected_best_of(pool: Sequence[float]) -> np.ndarray:
    """``E[max of n draws without replacement from pool]`` for n = 1 .. len(pool).

    With the pool sorted ascending, the i-th smallest (1-based) is the maximum of n draws
    in C(i-1, n-1) of the C(N, n) equally likely subsets (the counts taken as logarithms:
    they overflow a float beyond N of about 1000).
    """
    values, size = np.sort(np.asarray(pool, dtype=float)), len(pool)

    def log_comb(a: np.ndarray | int, b: int) -> np.ndarray:
        return gammaln(np.add(a, 1)) - gammaln(b + 1) - gammaln(np.subtract(a, b) + 1)

    rank = np.arange(1, size + 1)
    return np.array([
        values[n - 1:] @ np.exp(log_comb(rank[n - 1:] - 1, n - 1) - log_comb(size, n))
        for n in range(1, size + 1)
    ])


def chance_of_reaching(pool: Sequence[float], level: float) -> np.ndarray:
    """``P(max of n draws without replacement >= level)`` for n = 1 .. len(pool)."""
    size, above = len(pool), sum(v >= level for v in pool)
    return np.array([1 - math.comb(size - above, n) / math.comb(size, n) for n in range(1, size + 1)])


def first_reaching(curve: Iterable[float], level: float) -> int | None:
    """The smallest n (1-based) with ``curve[n-1] >= level``; None if none."""
    return next((n for n, value in enumerate(curve, 1) if value >= level), None)


def table_sizes(budget: int, size: int) -> list[int]:
    """The numbers of evaluations the table shows."""
    return sorted({n for n in (1, 2, 3, 5, 10, 15, 20, budget, *range(30, size, 10), size) if n <= size})


def curves_table(
    by_seed: Mapping[int, Sequence[Trial]], pool: Sequence[float], levels: Sequence[float]
) -> tuple[str, np.ndarray, np.ndarray]:
    """The markdown table of best-so-far against evaluations, and the mean curve over seeds
    and the pool's expected best-of-n."""
    curves = [best_so_far(t) for t in by_seed.values()]
    mean, low, _ = mean_band(curves)
    expected = expected_best_of(pool)
    chances = [chance_of_reaching(pool, level) for level in levels]
    budget = max(len(c) for c in curves)
    lines = [
        f"| evaluations | best so far, mean ± std over {len(curves)} seeds | "
        + " | ".join(f"seed {s}" for s in by_seed)
        + f" | expected best of n, pool of {len(pool)} | "
        + " | ".join(f"P(best of n >= {level:.3f})" for level in levels) + " |",
        "|---:|---|" + "---:|" * (len(curves) + 1 + len(levels)),
    ]
    for n in table_sizes(budget, len(pool)):
        per_seed = " | ".join(f"{c[n - 1]:.3f}" if n <= len(c) else "" for c in curves)
        summary = f"{mean[n - 1]:.3f} ± {mean[n - 1] - low[n - 1]:.3f}" if n <= budget else ""
        chance = " | ".join(f"{c[n - 1]:.2f}" for c in chances)
        lines.append(f"| {n} | {summary} | {per_seed} | {expected[n - 1]:.3f} | {chance} |")
    return "\n".join(lines), mean, expected


def stopping_table(pool: Sequence[Draw], max_epochs: int, patience: int) -> str:
    """How the pool's trainings ended: patience, or ``max_epochs`` before patience ran out
    (raising ``max_epochs`` changes only the latter)."""
    ok = [d for d in pool if d.trial.ok]
    cut = [d for d in ok if d.trial.epochs - d.trial.best_epoch - 1 < patience]
    latest = max(ok, key=lambda d: d.trial.best_epoch)
    head = (
        f"Trainings of the pool: {len(ok)} ran, {len(pool) - len(ok)} failed; stopped by patience "
        f"({patience} epochs without a lower error): {len(ok) - len(cut)}; cut off by max_epochs "
        f"{max_epochs} before that: {len(cut)}. Latest best epoch: {latest.trial.best_epoch + 1} "
        f"(seed {latest.seed}, trial {latest.trial.number}, validation accuracy {latest.accuracy:.3f})."
    )
    lines = [head] + [
        (
            f"- cut off: seed {d.seed}, trial {d.trial.number}: validation accuracy {d.accuracy:.3f}, "
            f"best epoch {d.trial.best_epoch + 1} of {d.trial.epochs}, "
            f"learning rate {d.trial.config['learning_rate']:.2g}"
        )
        for d in cut
    ]
    return "\n".join(lines)


def collapsed(score: float, val_accuracy: float, ratio: float) -> bool:
    return score < ratio * val_accuracy


def gap_table(tests: Mapping[RunKey, EvaluationRecord], ratio: float) -> tuple[str, list[float]]:
    """Per run: the best trial's validation accuracy, its test score(s) and test minus
    validation; per strategy and overall: the gap of the retrainings that did not collapse.
    Returns the table and those gaps."""
    lines = [
        "| run | best trial's validation accuracy | test score(s) | test - validation |",
        "|---|---:|---|---:|",
    ]
    gaps: dict[str, list[float]] = {}
    collapses: dict[str, int] = {}
    for run, record in tests.items():
        val = 1 - record.val_error
        scores = ", ".join(f"{s:.3f}" + (" (collapsed)" if collapsed(s, val, ratio) else "") for s in record.scores)
        lines.append(f"| {run.strategy} seed {run.seed} | {val:.3f} | {scores} | {record.test_score - val:+.3f} |")
        for s in record.scores:
            if collapsed(s, val, ratio):
                collapses[run.strategy] = collapses.get(run.strategy, 0) + 1
            else:
                gaps.setdefault(run.strategy, []).append(s - val)
    lines += ["", "| retrainings | collapsed | gap of the others, mean ± std | min .. max |", "|---|---:|---|---|"]
    everything = [g for values in gaps.values() for g in values]
    groups = {**{s: gaps.get(s, []) for s in dict.fromkeys(r.strategy for r in tests)}, "all": everything}
    for name, values in groups.items():
        n_collapsed = sum(collapses.values()) if name == "all" else collapses.get(name, 0)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        summary = f"{statistics.fmean(values):+.3f} ± {spread:.3f} | {min(values):+.3f} .. {max(values):+.3f}" if values else "- | -"
        lines.append(f"| {name} | {n_collapsed} of {n_collapsed + len(values)} | {summary} |")
    return "\n".join(lines), everything


def retrain_one(settings: Settings, dataset: str, draw: Draw, data: Path, work: Path) -> EvaluationRecord:
    """The study's test evaluation of ``draw``'s configuration alone, with its run's seed."""
    folder = work / f"seed{draw.seed}-trial{draw.trial.number}"
    TrialStore(folder / "trials.jsonl").append(replace(draw.trial, number=0))
    return evaluate_test(settings, dataset, draw.seed, [folder / "trials.jsonl"], data, folder / TEST)


def retrain(
    settings: Settings, dataset: str, draws: Sequence[Draw], data: Path, repeats: int, jobs: int
) -> list[EvaluationRecord]:
    """Each of ``draws`` retrained ``repeats`` times, ``jobs`` evaluations at a time (each in
    a process of its own; one job: in this process)."""
    settings = replace(settings, evaluation=Evaluation(repeats))
    with tempfile.TemporaryDirectory(prefix="iishpo-retrain-") as tmp:
        if jobs == 1:
            configure_training()
            return [retrain_one(settings, dataset, d, data, Path(tmp)) for d in draws]
        # forked, as the warm worker forks its jobs: this process has imported torch but
        # never trained (a fork of one that has run a convolution hangs in OpenMP)
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(jobs, mp_context=fork, initializer=configure_training) as pool:
            futures = [pool.submit(retrain_one, settings, dataset, d, data, Path(tmp)) for d in draws]
            return [f.result() for f in futures]


def retrain_table(
    draws: Sequence[Draw], records: Sequence[EvaluationRecord], tests: Mapping[RunKey, EvaluationRecord],
    dataset: str, ratio: float, target: float,
) -> str:
    """Per configuration: its retrainings' test scores, their mean, and whether the first
    one is the study's own test retraining (same configuration and seed) and scored the same."""
    lines = [
        "| configuration | validation accuracy | test scores | mean | collapsed | study's test retraining |",
        "|---|---:|---|---:|---:|---|",
    ]
    singles, means, all_collapsed = [], [], 0
    for draw, record in zip(draws, records, strict=True):
        own = tests.get(RunKey(dataset, OPTIMIZER, STRATEGY, draw.seed))
        if own is not None and own.config == draw.trial.config:
            same = "same score" if own.scores[0] == record.scores[0] else f"differs: {own.scores[0]:.3f}"
            study = f"the first: {same}"
        else:
            study = "-"
        n_collapsed = sum(collapsed(s, draw.accuracy, ratio) for s in record.scores)
        all_collapsed += n_collapsed
        singles += record.scores
        means.append(record.test_score)
        scores = ", ".join(f"{s:.3f}" for s in record.scores)
        lines.append(
            f"| seed {draw.seed} trial {draw.trial.number} | {draw.accuracy:.3f} | {scores} | "
            f"{record.test_score:.3f} | {n_collapsed} | {study} |"
        )
    lines += [
        "",
        (
            f"Single retrainings: {len(singles)}, collapsed {all_collapsed} ({all_collapsed / len(singles):.0%}); "
            f"mean {statistics.fmean(singles):.3f}, at or above {target:.2f}: {sum(s >= target for s in singles)}. "
            f"Means of {len(records[0].scores)}: mean {statistics.fmean(means):.3f}, "
            f"at or above {target:.2f}: {sum(m >= target for m in means)} of {len(means)}."
        ),
    ]
    return "\n".join(lines)


def figure(
    by_seed: Mapping[int, Sequence[Trial]], expected: np.ndarray, target: float, level: float | None,
    title: str, stem: Path,
) -> list[Path]:
    """Best-so-far per seed and their mean, the pool's expected best-of-n, the target and
    the validation level that gives it on the test set."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    mean, low, high = mean_band([best_so_far(t) for t in by_seed.values()])
    for seed, trials in by_seed.items():
        curve = best_so_far(trials)
        ax.plot(np.arange(1, len(curve) + 1), curve, drawstyle="steps-post", lw=0.8, alpha=0.6, label=f"seed {seed}")
    evaluations = np.arange(1, len(mean) + 1)
    ax.plot(evaluations, mean, drawstyle="steps-post", color="black", lw=2, label="mean over seeds")
    ax.fill_between(evaluations, low, high, step="post", color="black", alpha=0.1, label="± 1 std over seeds")
    size = len(expected)
    ax.plot(np.arange(1, size + 1), expected, color="tab:blue", ls="--", lw=2, label=f"expected best of n, pool of {size}")
    ax.axvline(size, color="grey", ls=":", lw=1, label="pool size: no estimate beyond")
    ax.axhline(target, color="tab:red", lw=1, label=f"{target:.0%} (the target, on validation)")
    if level is not None:
        ax.axhline(level, color="tab:orange", ls="-.", lw=1, label=f"{level:.3f}: validation for {target:.0%} test")
    ax.set(xscale="log", xlabel="evaluations", ylabel="best validation accuracy so far", title=title)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save(fig, stem)


def balance_note(data: Path) -> str:
    """Whether the validation split's classes are balanced (then 1 - val_error, an error
    over images, is also the mean per-class accuracy)."""
    counts = np.bincount(load_splits(data).y["val"])
    same = "balanced: 1 - val_error is also the mean per-class accuracy" if counts.min() == counts.max() else "not balanced: 1 - val_error is not the mean per-class accuracy"
    return f"validation split of {data}: {counts.min()}-{counts.max()} images per class, {same}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a study's results folder (results/<study>)")
    parser.add_argument("--dataset", help="default: the study's only data set")
    parser.add_argument("--target", type=float, default=0.20, help="the test score asked for (default 0.20)")
    parser.add_argument(
        "--collapse-below", type=float, default=0.5,
        help="a retraining scoring below this fraction of its trial's validation accuracy has collapsed (default 0.5)",
    )
    parser.add_argument("--retrain", type=int, default=0, metavar="K", help="retrain the K best configurations of the pool")
    parser.add_argument("--repeats", type=int, default=3, help="retrainings per configuration (default 3)")
    parser.add_argument("--jobs", type=int, default=2, help="retrainings at a time, a process each (default 2)")
    parser.add_argument("--data", type=Path, help="the prepared .npz at the study's largest resolution (for --retrain)")
    parser.add_argument("--figure", type=Path, default=Path("accuracy_vs_evaluations"), help="figure stem (.png, .svg)")
    args = parser.parse_args(argv)
    if args.retrain < 0 or args.repeats < 1 or args.jobs < 1:
        parser.error(f"--retrain must be >= 0, --repeats and --jobs >= 1; got {args.retrain}, {args.repeats}, {args.jobs}")
    if not (0 <= args.collapse_below <= 1 and 0 < args.target <= 1):
        parser.error(f"--collapse-below must be in [0, 1] and --target in (0, 1]; got {args.collapse_below}, {args.target}")
    if args.retrain and args.data is None:
        parser.error("--retrain needs --data, the prepared .npz at the study's largest resolution")
    settings = study_settings(args.results)
    study = settings.study
    dataset = args.dataset or (study.datasets[0] if len(study.datasets) == 1 else None)
    if dataset not in study.datasets:
        parser.error(f"--dataset {dataset!r}: the study's data sets are {list(study.datasets)}")
    if args.data is not None:
        resolution = load_splits(args.data).resolution
        if resolution != study.ladder[-1]:
            parser.error(f"--data {args.data} holds {resolution} px images; the study's largest resolution is {study.ladder[-1]} px")
    layout = Layout(args.results)
    by_seed = standard_runs(settings, layout, dataset)
    draws = [Draw(seed, t) for seed, trials in by_seed.items() for t in trials]
    tests = {run: read_evaluation(layout.test(run)) for run in evaluated_runs(study) if run.dataset == dataset}

    print(f"{study.name}: {dataset}, random search, {STRATEGY} runs at {study.ladder[-1]} px\n")
    print("val_error is the fraction of misclassified validation images (the model's own early-stopping error).")
    if args.data is not None:
        print(balance_note(args.data))
    print(f"\n#### {dataset}: validation against test ({len(tests)} runs)\n")
    gaps_text, gaps = gap_table(tests, args.collapse_below)
    print(gaps_text)
    level = args.target - statistics.fmean(gaps) if gaps else None
    if level is not None:
        print(f"\nValidation accuracy that gives a test score of {args.target:.2f} with the mean gap: {level:.3f}")

    levels = {f"the target {args.target:.2f} on validation": args.target}
    if level is not None:
        levels[f"{level:.3f}, the target on the test set"] = level
    pool = [d.accuracy for d in draws]
    print(f"\n#### {dataset}: best validation accuracy against evaluations ({len(by_seed)} seeds, {len(draws)} trials pooled)\n")
    table, mean, expected = curves_table(by_seed, pool, list(levels.values()))
    print(table)
    print()
    for name, value in levels.items():
        seeds_n, pool_n = first_reaching(mean, value), first_reaching(expected, value)
        print(
            f"- {name}: the mean over seeds reaches it after {seeds_n or f'none of {len(mean)}'} evaluations; "
            f"the expected best of n after {pool_n or f'none of {len(pool)} (the pool best is {max(pool):.3f})'}; "
            f"{sum(v >= value for v in pool)} of the {len(pool)} trials reach it"
        )
    print(f"- beyond {len(draws)} evaluations the pool says nothing without a model of its tail\n")
    print(stopping_table(draws, settings.trainer.max_epochs, settings.trainer.patience))

    if args.retrain:
        chosen = sorted(draws, key=lambda d: (-d.accuracy, d.seed, d.trial.number))[: args.retrain]
        print(f"\n#### {dataset}: the {len(chosen)} best configurations of the pool, {args.repeats} test retrainings each\n", flush=True)
        start = time.perf_counter()
        records = retrain(settings, dataset, chosen, args.data, args.repeats, args.jobs)
        print(retrain_table(chosen, records, tests, dataset, args.collapse_below, args.target))
        print(
            f"\nretrainings: {sum(r.wall_time for r in records):.0f} s of training, "
            f"{time.perf_counter() - start:.0f} s of wall time with {args.jobs} at a time"
        )
    written = figure(by_seed, expected, args.target, level, f"{study.name}: {dataset}, {STRATEGY} random search", args.figure)
    print(f"\nfigure: {', '.join(map(str, written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
