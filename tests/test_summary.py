"""The summary's statistics over seeds, from hand-made result files whose numbers are known.

Every run gets made-up trials, stage records and a test record (with the current
configuration's digests); each number of ``comparisons.csv`` is recomputed here with
scipy directly from those made-up values.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest
from scipy import stats

from helpers import TINY, compose
from iishpo import figures
from iishpo.artifacts import EvaluationRecord, StageRecord, write_record
from iishpo.config import Settings
from iishpo.layout import (
    Layout,
    RunKey,
    digest,
    evaluation_config,
    figure_files,
    runs,
    stage_config,
    stages,
)
from iishpo.provenance import Provenance, provenance
from iishpo.store import Trial, TrialStore
from iishpo.summary import summarize

SEEDS = (0, 1, 2, 3)


def settings_with(seeds: tuple[int, ...], strategies: str = "[standard,iis,narrowing]") -> Settings:
    return compose(*TINY, f"study.strategies={strategies}", "study.optimizers=[random,tpe]",
                   f"study.seeds=[{','.join(map(str, seeds))}]")


@pytest.fixture(autouse=True)
def figure_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Fig. 5 is not drawn (drawing takes seconds, and mutation testing reruns these tests
    per mutant): each call's arguments are recorded instead; the one test of the figure
    files undoes this."""
    calls: list[tuple] = []
    monkeypatch.setattr(figures, "progress_figure", lambda *args: calls.append(args))
    return calls


#: one made-up trial: (status, validation error or None, seconds since its stage began)
MadeTrial = tuple[str, float | None, float]


def write_files(settings: Settings, layout: Layout, run: RunKey, prov: Provenance,
                stage_trials: list[list[MadeTrial]], stage_failed: list[int], stage_walls: list[float],
                scores: list[float], metric: str = "accuracy") -> None:
    """The trial, stage and test files of one run, with the current configuration's digests."""
    for plan, trials, n_failed, wall in zip(stages(settings.study, run), stage_trials, stage_failed, stage_walls,
                                            strict=True):
        store = TrialStore(layout.trials(plan.key))
        for i, (status, error, elapsed) in enumerate(trials):
            store.append(Trial(i, {"learning_rate": 0.01}, status, error, error or 0.0, 1, 0, 1.0, elapsed,
                               None, run.seed, "t"))
        write_record(layout.stage_record(plan.key), StageRecord(
            run.dataset, run.optimizer, run.strategy, run.seed, plan.key.stage, plan.resolution, plan.budget,
            len(trials), n_failed, wall, None, digest(stage_config(settings, plan.key)), prov,
        ))
    write_record(layout.test(run), EvaluationRecord(
        metric, sum(scores) / len(scores), 0.0, scores, 0.1, 0, {}, settings.study.ladder[-1], 1.0,
        digest(evaluation_config(settings, run.dataset)), prov,
    ))


def write_run(settings: Settings, layout: Layout, run: RunKey, rng: random.Random,
              prov: Provenance) -> dict[str, float]:
    """Random made-up files of one run; returns its wall time, last-stage best and test score."""
    stage_trials, walls = [], []
    for plan in stages(settings.study, run):
        elapsed, trials = 0.0, []
        for _ in range(plan.budget):
            elapsed += rng.uniform(1.0, 20.0)
            trials.append(("ok", round(rng.uniform(0.05, 0.9), 6), elapsed))
        stage_trials.append(trials)
        walls.append(elapsed + 0.5)
    scores = [rng.uniform(0.3, 0.9) for _ in range(3)]
    write_files(settings, layout, run, prov, stage_trials, [0] * len(walls), walls, scores)
    return {"wall_time": sum(walls), "best_val_error": min(e for _, e, _ in stage_trials[-1]),
            "test_score": sum(scores) / 3}


def provenances(settings: Settings) -> dict[int, Provenance]:
    """One provenance per seed (made once: collecting it takes a while)."""
    return {seed: provenance(settings.resolved, settings.overrides, "cpu", seed) for seed in settings.study.seeds}


def make_study(tmp_path: Path, settings: Settings) -> tuple[Layout, dict[RunKey, dict[str, float]]]:
    layout = Layout(tmp_path / "results")
    rng, prov = random.Random(7), provenances(settings)
    truth = {run: write_run(settings, layout, run, rng, prov[run.seed]) for run in runs(settings.study)}
    summarize(settings, layout.root)
    return layout, truth


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_comparison_number_equals_scipy_on_the_paired_seeds(tmp_path: Path) -> None:
    settings = settings_with(SEEDS)
    layout, truth = make_study(tmp_path, settings)
    rows = read_csv(layout.comparisons)
    expected_keys = [
        (o, s, m) for o in ("random", "tpe") for s in ("iis", "narrowing")
        for m in ("wall_time", "best_val_error", "test_score")
    ]
    assert [(r["optimizer"], r["strategy"], r["metric"]) for r in rows] == expected_keys
    metrics = json.loads(layout.metrics.read_text())["synthetic"]
    summary = layout.summary_markdown.read_text()
    for row in rows:
        d = [
            truth[RunKey("synthetic", row["optimizer"], row["strategy"], s)][row["metric"]]
            - truth[RunKey("synthetic", row["optimizer"], "standard", s)][row["metric"]]
            for s in SEEDS
        ]
        n = len(d)
        mean = sum(d) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
        half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
        p_t = stats.ttest_rel([truth[RunKey("synthetic", row["optimizer"], row["strategy"], s)][row["metric"]] for s in SEEDS],
                              [truth[RunKey("synthetic", row["optimizer"], "standard", s)][row["metric"]] for s in SEEDS]).pvalue
        p_w = stats.wilcoxon(d).pvalue
        assert row["baseline"] == "standard" and int(row["n_seeds"]) == n
        assert float(row["mean_difference"]) == pytest.approx(mean, rel=1e-9)
        assert float(row["std"]) == pytest.approx(sd, rel=1e-9)
        assert float(row["ci_low"]) == pytest.approx(mean - half, rel=1e-9)
        assert float(row["ci_high"]) == pytest.approx(mean + half, rel=1e-9)
        assert float(row["p_ttest"]) == pytest.approx(p_t, rel=1e-9)
        assert float(row["p_wilcoxon"]) == pytest.approx(p_w, rel=1e-9)
        assert row["beyond_noise"] == str(p_t < 0.05)
        assert row["verdict"] in summary
        entry = metrics[row["optimizer"]][f"{row['strategy']}_vs_standard"][row["metric"]]
        assert entry["mean_difference"] == round(mean, 6) and entry["p_ttest"] == round(p_t, 6)


def test_fig5_files_are_drawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # draw the real figure
    layout, _ = make_study(tmp_path, settings_with((0,), "[standard,iis]"))
    for figure in figure_files(layout.progress_figure("synthetic")):
        assert figure.stat().st_size > 5000


def test_time_reductions_of_iis_and_narrowing_in_the_markdown(tmp_path: Path) -> None:
    settings = settings_with(SEEDS)
    layout, truth = make_study(tmp_path, settings)
    lines = layout.summary_markdown.read_text().splitlines()
    for strategy, label in (("iis", "time reduction"), ("narrowing", "time reduction (narrowing)")):
        cells = []
        for optimizer in ("random", "tpe"):
            mean = {s: sum(truth[RunKey("synthetic", optimizer, s, k)]["wall_time"] for k in SEEDS) / len(SEEDS)
                    for s in ("standard", strategy)}
            cells.append(f"{1 - mean[strategy] / mean['standard']:.0%}")
        assert f"| {label} | " + " | ".join(cells) + " |" in lines
    table1 = layout.table1.read_text()
    assert "random (ours)" in table1 and "(paper)" not in table1  # the paper's numbers only in `paper`


def test_fewer_than_three_seeds_say_no_test_is_possible(tmp_path: Path) -> None:
    settings = settings_with((0, 1), "[iis,standard]")
    layout, _ = make_study(tmp_path, settings)
    rows = read_csv(layout.comparisons)
    assert len(rows) == 2 * 3 and {r["strategy"] for r in rows} == {"iis"}
    assert all(r["p_ttest"] == "" and r["ci_low"] == "" and r["beyond_noise"] == "" for r in rows)
    assert all("no interval or test is possible" in r["verdict"] for r in rows)
    assert "Fewer than 3 seeds: no interval or test is possible" in layout.summary_markdown.read_text()


def test_a_study_without_standard_has_no_comparisons(tmp_path: Path) -> None:
    settings = settings_with((0,), "[iis]")
    layout, _ = make_study(tmp_path, settings)
    assert read_csv(layout.comparisons) == []
    assert "paired by seed" not in layout.summary_markdown.read_text()
