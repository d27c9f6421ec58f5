"""The summary's statistics over seeds, from hand-made result files whose numbers are known.

Every run gets made-up trials, stage records and a test record (with the current
configuration's digests); each number of ``comparisons.csv`` is recomputed here with
scipy directly from those made-up values.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import random
from pathlib import Path

import pytest
from scipy import stats

from helpers import TINY, compose
from iishpo.plan.layout import (
    Layout,
    RunKey,
    digest,
    evaluation_config,
    figure_files,
    runs,
    stage_config,
    stages,
)
from iishpo.results import figures, ranking
from iishpo.results.artifacts import EvaluationRecord, StageRecord, write_record
from iishpo.results.figures import PAPER_TABLE1
from iishpo.results.provenance import Provenance, provenance
from iishpo.results.summary import (
    RunResult,
    StaleResults,
    compared_pairs,
    compared_strategies,
    comparisons,
    load_run,
    markdown,
    progress_table,
    summarize,
    table1_markdown,
    time_reduction,
)
from iishpo.settings.config import Settings
from iishpo.store import Trial, TrialStore

SEEDS = (0, 1, 2, 3)
SQRT2 = math.sqrt(2)
METRIC_WORDS = {"wall_time": "wall time (s)", "best_val_error": "best validation error", "test_score": "test score"}


@functools.cache
def composed(*overrides: str) -> Settings:
    """The tiny configuration with ``overrides``, composed once (Hydra takes seconds, and
    mutation testing reruns these tests per mutant)."""
    return compose(*TINY, *overrides)


def settings_with(seeds: tuple[int, ...], strategies: str = "[standard,iis,narrowing]") -> Settings:
    return composed(f"study.strategies={strategies}", "study.optimizers=[random,tpe]",
                    f"study.seeds=[{','.join(map(str, seeds))}]")


@pytest.fixture(autouse=True)
def figure_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Fig. 5 is not drawn (drawing takes seconds, and mutation testing reruns these tests
    per mutant): each call's arguments are recorded instead; the one test of the figure
    files undoes this."""
    calls: list[tuple] = []
    monkeypatch.setattr(figures, "progress_figure", lambda *args: calls.append(args))
    return calls


@pytest.fixture(autouse=True)
def rank_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The mean-rank figure, recorded instead of drawn, as Fig. 5 is."""
    calls: list[tuple] = []
    monkeypatch.setattr(ranking, "rank_figure", lambda *args: calls.append(args))
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
            elapsed += rng.uniform(8.0, 12.0) * plan.resolution / 8  # smaller images train faster
            trials.append(("ok", round(rng.uniform(0.05, 0.9), 6), elapsed))
        stage_trials.append(trials)
        walls.append(elapsed + 0.5)
    scores = [rng.uniform(0.3, 0.9) for _ in range(3)]
    write_files(settings, layout, run, prov, stage_trials, [0] * len(walls), walls, scores)
    return {"wall_time": sum(walls), "best_val_error": min(e for _, e, _ in stage_trials[-1]),
            "test_score": sum(scores) / 3}


@functools.cache
def made_provenance(seed: int) -> Provenance:
    """A run's provenance (made once per seed: collecting package versions takes a while);
    the summary does not read it."""
    settings = composed()
    return provenance(settings.resolved, settings.overrides, "cpu", seed)


def make_study(tmp_path: Path, settings: Settings) -> tuple[Layout, dict[RunKey, dict[str, float]]]:
    layout = Layout(tmp_path / "results")
    rng = random.Random(7)
    truth = {run: write_run(settings, layout, run, rng, made_provenance(run.seed)) for run in runs(settings.study)}
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
    summary_lines, beyond_noise = summary.splitlines(), set()
    raw = sorted(float(r["p_ttest"]) for r in rows)
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
        # Holm over the study's 12 tests: the k-th smallest raw p times (12 - k + 1), the
        # largest such product up to this row's p, capped at 1
        p_h = min(1.0, max((len(raw) - k) * q for k, q in enumerate(raw) if q <= float(row["p_ttest"])))
        assert float(row["p_holm"]) == pytest.approx(p_h, rel=1e-9)
        assert row["beyond_noise"] == str(p_h < 0.05)
        assert f"(Holm-adjusted over 12 tests: {p_h:.3g})" in row["verdict"]
        assert f"- {row['optimizer']}: {row['verdict']}." in summary_lines
        fmt = "{:+.1f}" if row["metric"] == "wall_time" else "{:+.4f}"
        assert (
            f"| {row['optimizer']} | {row['strategy']} | {METRIC_WORDS[row['metric']]} | {n} | {fmt.format(mean)} "
            f"| {fmt.format(mean - half)} .. {fmt.format(mean + half)} | {p_t:.3g} | {p_h:.3g} | {p_w:.3g} "
            f"| {'yes' if p_h < 0.05 else 'no'} |"
        ) in summary_lines
        beyond_noise.add(p_h < 0.05)
        entry = metrics[row["optimizer"]][f"{row['strategy']}_vs_standard"][row["metric"]]
        assert entry == {"mean_difference": round(mean, 6), "ci_low": round(mean - half, 6),
                         "ci_high": round(mean + half, 6), "p_ttest": round(p_t, 6), "p_holm": round(p_h, 6),
                         "n_seeds": n}
    assert beyond_noise == {True, False}  # both words of the table are checked
    for optimizer in ("random", "tpe"):
        for strategy in ("standard", "iis", "narrowing"):
            mean = {m: sum(truth[RunKey("synthetic", optimizer, strategy, s)][m] for s in SEEDS) / len(SEEDS)
                    for m in ("wall_time", "best_val_error", "test_score")}
            assert metrics[optimizer][strategy] == pytest.approx({
                "wall_time": round(mean["wall_time"], 3), "best_val_error": round(mean["best_val_error"], 6),
                "test_score": round(mean["test_score"], 6)}, abs=1e-12)
    assert "Fewer than" not in summary
    assert "Holm-adjusted over every test of the study (the rows with a p-value in every data set's table, 12 here)" in summary


def test_fig5_and_rank_files_are_drawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # draw the real figure
    layout, _ = make_study(tmp_path, settings_with((0,), "[standard,iis]"))
    for figure in figure_files(layout.progress_figure("synthetic")) + figure_files(layout.rank_figure("synthetic")):
        assert figure.stat().st_size > 5000


def test_time_reductions_of_iis_and_narrowing_in_the_markdown(tmp_path: Path) -> None:
    settings = settings_with(SEEDS)
    layout, truth = make_study(tmp_path, settings)
    lines = layout.summary_markdown.read_text().splitlines()
    assert lines[2] == (
        "4 evaluations per run; standard: all at 32 px; iis: 2 at 16 px, 2 at 32 px; narrowing: 2 at 32 px, "
        "2 at 32 px (IIS's stages and ranges); seeds [0, 1, 2, 3] (mean ± std over seeds)."
    )
    summary_rows = {(r["optimizer"], r["strategy"]): r for r in read_csv(layout.summary_table)}
    for strategy, label in (("iis", "time reduction"), ("narrowing", "time reduction (narrowing)")):
        cells = []
        for optimizer in ("random", "tpe"):
            mean = {s: sum(truth[RunKey("synthetic", optimizer, s, k)]["wall_time"] for k in SEEDS) / len(SEEDS)
                    for s in ("standard", strategy)}
            reduction = 1 - mean[strategy] / mean["standard"]
            cells.append(f"{reduction:.0%}")
            assert float(summary_rows[(optimizer, strategy)]["time_reduction"]) == pytest.approx(reduction, rel=1e-9)
        assert f"| {label} | " + " | ".join(cells) + " |" in lines
    assert summary_rows[("random", "standard")]["time_reduction"] == summary_rows[("tpe", "standard")]["time_reduction"] == ""
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


def test_a_study_of_one_run_has_no_spread_and_no_comparisons(tmp_path: Path) -> None:
    layout, truth = make_study(tmp_path, composed("study.strategies=[iis]", "study.optimizers=[random]",
                                                  "study.seeds=[0]"))
    [numbers] = truth.values()
    [row] = read_csv(layout.runs_table)
    assert (row["strategy"], float(row["wall_time"])) == ("iis", pytest.approx(numbers["wall_time"], rel=1e-12))
    [row] = read_csv(layout.summary_table)
    assert [row[f"{m}_std"] for m in ("wall_time", "best_val_error", "test_score")] == ["0.0", "0.0", "0.0"]
    assert row["n_seeds"] == "1" and row["time_reduction"] == ""
    assert read_csv(layout.comparisons) == []
    assert "paired by seed" not in layout.summary_markdown.read_text()


# A study small enough to recompute by hand: random search, standard against IIS, seeds 0 and 1.
# Each run's trials per stage as (status, validation error, seconds since the stage began),
# the failures each stage record counts, each stage's wall time and the test retrainings' scores.
HAND_RUNS: dict[tuple[str, int], tuple[list[list[MadeTrial]], list[int], list[float], list[float]]] = {
    ("standard", 0): ([[("failed", None, 3.0), ("ok", 0.5, 10.0), ("ok", 0.3, 25.0), ("ok", 0.4, 40.0)]],
                      [1], [600.0], [0.5, 0.75]),
    ("standard", 1): ([[("ok", 0.6, 5.0), ("ok", 0.2, 15.0), ("ok", 0.25, 30.0), ("ok", 0.1, 60.0)]],
                      [0], [840.0], [0.875]),
    ("iis", 0): ([[("ok", 0.7, 4.0), ("ok", 0.45, 8.0)], [("failed", None, 6.0), ("ok", 0.35, 12.0)]],
                 [0, 1], [120.0, 240.0], [0.5]),
    ("iis", 1): ([[("failed", None, 2.0), ("ok", 0.8, 6.0)], [("ok", 0.25, 9.0), ("ok", 0.15, 16.0)]],
                 [1, 0], [96.0, 216.0], [0.5, 1.0]),
}


HAND_STUDY = ("study.strategies=[standard,iis]", "study.optimizers=[random]", "study.seeds=[0,1]")


def hand_study(tmp_path: Path) -> tuple[Settings, Layout]:
    settings = composed(*HAND_STUDY)
    layout = Layout(tmp_path / "results")
    for (strategy, seed), files in HAND_RUNS.items():
        write_files(settings, layout, RunKey("synthetic", "random", strategy, seed), made_provenance(seed), *files)
    return settings, layout


def test_runs_and_summary_tables_recomputed_by_hand(tmp_path: Path) -> None:
    settings, layout = hand_study(tmp_path)
    returned = summarize(settings, layout.root)
    assert read_csv(layout.runs_table) == [
        {"dataset": "synthetic", "optimizer": "random", "strategy": strategy, "seed": seed, "wall_time": wall,
         "n_evaluations": "4", "n_failed": failed, "best_val_error": best, "test_score": score,
         "test_metric": "accuracy"}
        for strategy, seed, wall, failed, best, score in (
            ("standard", "0", "600.0", "1", "0.3", "0.625"),
            ("standard", "1", "840.0", "0", "0.1", "0.875"),
            ("iis", "0", "360.0", "1", "0.35", "0.5"),
            ("iis", "1", "312.0", "1", "0.15", "0.75"),
        )
    ]
    # means and sample standard deviations over the two seeds: |a - b| / sqrt(2)
    expected = [
        {"strategy": "standard", "wall_time": (720.0, 240 / SQRT2), "best_val_error": (0.2, 0.2 / SQRT2),
         "test_score": (0.75, 0.25 / SQRT2), "n_failed": 1, "time_reduction": ""},
        {"strategy": "iis", "wall_time": (336.0, 48 / SQRT2), "best_val_error": (0.25, 0.2 / SQRT2),
         "test_score": (0.625, 0.25 / SQRT2), "n_failed": 2, "time_reduction": 1 - 336 / 720},
    ]
    for rows in (returned, read_csv(layout.summary_table)):
        assert [r["strategy"] for r in rows] == ["standard", "iis"]
        for row, want in zip(rows, expected, strict=True):
            assert (row["dataset"], row["optimizer"], int(row["n_seeds"])) == ("synthetic", "random", 2)
            assert (int(row["n_evaluations"]), int(row["n_failed"]), row["test_metric"]) == (4, want["n_failed"], "accuracy")
            for field in ("wall_time", "best_val_error", "test_score"):
                assert float(row[f"{field}_mean"]) == pytest.approx(want[field][0], rel=1e-12)
                assert float(row[f"{field}_std"]) == pytest.approx(want[field][1], rel=1e-12)
            if want["time_reduction"] == "":
                assert row["time_reduction"] == ""
            else:
                assert float(row["time_reduction"]) == pytest.approx(want["time_reduction"], rel=1e-12)


def test_markdown_table1_and_metrics_of_the_hand_study(tmp_path: Path) -> None:
    settings, layout = hand_study(tmp_path)
    summarize(settings, layout.root)
    verdicts = {r["metric"]: r["verdict"] for r in read_csv(layout.comparisons)}
    assert layout.summary_markdown.read_text() == "\n".join([
        "# Study `smoke`",
        "",
        "4 evaluations per run; standard: all at 32 px; iis: 2 at 16 px, 2 at 32 px; seeds [0, 1] (mean ± std over seeds).",
        "",
        "## synthetic: Time (seconds, as in Table 1 of the paper)",
        "",
        "| | random |",
        "|---|---|",
        "| standard | 720.0 ± 169.7 |",
        "| iis | 336.0 ± 33.9 |",
        "| time reduction | 53% |",
        "",
        "## synthetic: Best validation error (last stage)",
        "",
        "| | random |",
        "|---|---|",
        "| standard | 0.2000 ± 0.1414 |",
        "| iis | 0.2500 ± 0.1414 |",
        "",
        "## synthetic: Test score (accuracy, mean of the retrainings)",
        "",
        "| | random |",
        "|---|---|",
        "| standard | 0.7500 ± 0.1768 |",
        "| iis | 0.6250 ± 0.1768 |",
        "",
        "## synthetic: each strategy against standard, paired by seed",
        "",
        ("Differences are strategy minus standard of the same seed (`a vs b`: a minus b; negative: less time, "
         "lower error; positive test score: better). 95% confidence interval from Student's t, paired t-test and "
         "Wilcoxon signed-rank test. Beyond seed noise: the t-test's p-value, Holm-adjusted over every test of the "
         "study (the rows with a p-value in every data set's table, 0 here), below 5%; the intervals and raw "
         "p-values are not adjusted."),
        "",
        ("**Fewer than 3 seeds: no interval or test is possible**; the differences below are single observations, "
         "not evidence."),
        "",
        "| optimizer | strategy | metric | seeds | mean difference | 95% CI | t-test p | Holm p | Wilcoxon p | beyond seed noise |",
        "|---|---|---|---|---|---|---|---|---|---|",
        "| random | iis | wall time (s) | 2 | -384.0 | – | – | – | – | no test |",
        "| random | iis | best validation error | 2 | +0.0500 | – | – | – | – | no test |",
        "| random | iis | test score | 2 | -0.1250 | – | – | – | – | no test |",
        "",
        f"- random: {verdicts['wall_time']}.",
        f"- random: {verdicts['best_val_error']}.",
        f"- random: {verdicts['test_score']}.",
        "",
    ])
    # minutes: 720 +- 169.7 s and 336 +- 33.9 s
    assert layout.table1.read_text().split("\n") == [
        "# Table 1: time per strategy, study `smoke`",
        "",
        "## synthetic",
        "",
        "| strategy (minutes, mean ± std) | random (ours) |",
        "|---|---|",
        "| standard | 12.0 ± 2.8 |",
        "| iis | 5.6 ± 0.6 |",
        "| time reduction | 53% |",
        "",
    ]
    assert json.loads(layout.metrics.read_text()) == {"synthetic": {"random": {
        "standard": {"wall_time": 720.0, "best_val_error": 0.2, "test_score": 0.75},
        "iis": {"wall_time": 336.0, "best_val_error": 0.25, "test_score": 0.625},
        "iis_vs_standard": {
            metric: {"mean_difference": mean, "ci_low": None, "ci_high": None, "p_ttest": None, "p_holm": None,
                     "n_seeds": 2}
            for metric, mean in (("wall_time", -384.0), ("best_val_error", 0.05), ("test_score", -0.125))
        },
    }}}
    assert read_csv(layout.comparisons) == [
        {"dataset": "synthetic", "optimizer": "random", "strategy": "iis", "baseline": "standard", "metric": metric,
         "n_seeds": "2", "mean_difference": mean, "std": "", "ci_low": "", "ci_high": "", "p_ttest": "",
         "p_holm": "", "p_wilcoxon": "", "beyond_noise": "", "verdict": verdicts[metric]}
        for metric, mean in (("wall_time", "-384.0"), ("best_val_error", "0.04999999999999999"),
                             ("test_score", "-0.125"))
    ]


def test_progress_rows_and_fig5_runs_of_the_hand_study(
    tmp_path: Path, figure_calls: list[tuple], rank_calls: list[tuple]
) -> None:
    settings, layout = hand_study(tmp_path)
    summarize(settings, layout.root)
    # best validation error so far within the stage, mean over the seeds that have one
    assert read_csv(layout.progress("synthetic")) == [
        {"evaluation": str(i), "series": series, "best_val_error": value}
        for series, values in (("random-iis", ("0.7", "0.625", "0.25", "0.25")),
                               ("random-standard", ("0.6", "0.35", "0.25", "0.2")))
        for i, value in enumerate(values, start=1)
    ]
    [(fig_runs, title, stem)] = figure_calls
    assert title == "synthetic, study smoke: best validation error so far (within each stage)"
    assert stem == layout.progress_figure("synthetic")
    assert [(r.optimizer, r.strategy, r.seed) for r in fig_runs] == [
        ("random", "standard", 0), ("random", "standard", 1), ("random", "iis", 0), ("random", "iis", 1),
    ]
    for r in fig_runs:
        made = HAND_RUNS[(r.strategy, r.seed)][0]
        assert [[(t.status, t.val_error, t.elapsed) for t in stage] for stage in r.stages] == made
    # the result (last) stage's best so far, from the run's start: IIS's after its first stage's wall time
    [(curves, title, stem)] = rank_calls
    assert title == "synthetic, study smoke: mean rank of each strategy's best validation error so far"
    assert stem == layout.rank_figure("synthetic")
    assert [(c.optimizer, c.strategy, c.seed, c.points) for c in curves] == [
        ("random", "standard", 0, ((3.0, math.inf), (10.0, 0.5), (25.0, 0.3), (40.0, 0.3))),
        ("random", "standard", 1, ((5.0, 0.6), (15.0, 0.2), (30.0, 0.2), (60.0, 0.1))),
        ("random", "iis", 0, ((126.0, math.inf), (132.0, 0.35))),
        ("random", "iis", 1, ((105.0, 0.25), (112.0, 0.15))),
    ]


def test_a_run_counts_time_from_its_start_and_the_best_error_within_each_stage(tmp_path: Path) -> None:
    settings, layout = hand_study(tmp_path)
    run = load_run(settings, layout, RunKey("synthetic", "random", "iis", 0))
    # stage 1 starts after stage 0's 120 s; its first trial failed, so it has no best yet
    assert run.progress == [(1, 4.0, 0.7), (2, 8.0, 0.45), (3, 126.0, math.inf), (4, 132.0, 0.35)]
    assert run.result_curve.points == ((126.0, math.inf), (132.0, 0.35))  # the result stage only
    assert (run.wall_time, run.n_evaluations, run.n_failed, run.best_val_error) == (360.0, 4, 1, 0.35)
    assert (run.test_score, run.test_metric, run.seed) == (0.5, "accuracy", 0)


def test_hyperbands_result_grows_over_every_brackets_last_rung(tmp_path: Path) -> None:
    """Hyperband with ladder 16/32 and 6 evaluations: brackets [3 at 16, 1 at 32] and [2 at
    32]; its result stages are 1 and 2, and the best so far carries from one to the next."""
    settings, layout = composed("study.strategies=[hyperband]", "study.budget=6", "study.optimizers=[random]",
                                "study.seeds=[0]"), Layout(tmp_path / "results")
    run = RunKey("synthetic", "random", "hyperband", 0)
    assert [(p.resolution, p.budget) for p in stages(settings.study, run)] == [(16, 3), (32, 1), (32, 2)]
    write_files(settings, layout, run, made_provenance(0),
                [[("ok", 0.2, 2.0), ("ok", 0.6, 4.0), ("ok", 0.5, 6.0)], [("ok", 0.4, 9.0)],
                 [("ok", 0.45, 5.0), ("ok", 0.3, 11.0)]], [0, 0, 0], [10.0, 20.0, 15.0], [0.5])
    loaded = load_run(settings, layout, run)
    assert loaded.result_curve.points == ((19.0, 0.4), (35.0, 0.4), (41.0, 0.3))
    assert loaded.best_val_error == 0.3 == loaded.result_curve.points[-1][1]


def test_a_last_stage_without_a_successful_trial_is_refused(tmp_path: Path) -> None:
    settings, layout = composed(*HAND_STUDY), Layout(tmp_path / "results")
    failed_last, failed_first = RunKey("synthetic", "random", "iis", 0), RunKey("synthetic", "random", "iis", 1)
    write_files(settings, layout, failed_last, made_provenance(0),
                [[("ok", 0.7, 4.0), ("ok", 0.45, 8.0)], [("failed", None, 6.0), ("failed", None, 12.0)]],
                [0, 2], [120.0, 240.0], [0.5])
    write_files(settings, layout, failed_first, made_provenance(1), *HAND_RUNS[("iis", 1)])
    trials = layout.trials(stages(settings.study, failed_last)[-1].key)
    with pytest.raises(ValueError) as error:
        load_run(settings, layout, failed_last)
    assert str(error.value) == f"{trials}: the result stages of {failed_last} have no successful trial"
    # a first stage without one is fine: its best does not carry over
    assert load_run(settings, layout, failed_first).best_val_error == 0.15


def set_digest(record: Path, value: str) -> None:
    data = json.loads(record.read_text())
    data["config_digest"] = value
    record.write_text(json.dumps(data))


def test_files_of_another_configuration_are_named_and_nothing_is_written(tmp_path: Path) -> None:
    settings, layout = hand_study(tmp_path)
    stale_test = layout.test(RunKey("synthetic", "random", "standard", 0))
    stale_stage = layout.stage_record(RunKey("synthetic", "random", "iis", 1).stage(0))
    set_digest(stale_stage, "0123456789abcdef")
    set_digest(stale_test, "0123456789abcdef")
    with pytest.raises(StaleResults) as error:
        summarize(settings, layout.root)
    assert str(error.value) == (
        "2 result files were made under another configuration than the current one (their config_digest "
        f"differs): {stale_test}, {stale_stage}; run snakemake with the current configuration to redo them"
    )
    assert not layout.runs_table.exists() and not layout.summary_markdown.exists()


def test_a_study_of_only_independent_runs_has_nothing_to_summarize(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as error:
        summarize(composed("study.strategies=[independent]"), tmp_path / "results")
    assert str(error.value) == (
        "study 'smoke' has only the strategies ['independent']: nothing to summarize "
        "(the summary reads the strategies other than ['independent'])"
    )


def result(dataset: str, optimizer: str, strategy: str, seed: int, wall_time: float = 1.0,
           best_val_error: float = 0.5, test_score: float = 0.5,
           progress: tuple[float, ...] = ()) -> RunResult:
    """A run's numbers as the summary loads them (progress: the best error per evaluation)."""
    return RunResult(dataset, optimizer, strategy, seed, wall_time, len(progress), 0, best_val_error, test_score,
                     "accuracy", [(i + 1, float(i), e) for i, e in enumerate(progress)],
                     figures.RunTrials(optimizer, strategy, seed, ()), ranking.Curve(optimizer, strategy, seed, ()))


def test_time_reduction_needs_both_strategies_and_a_positive_baseline_time() -> None:
    rows = [
        {"dataset": "a", "optimizer": "random", "strategy": "standard", "wall_time_mean": 100.0},
        {"dataset": "a", "optimizer": "random", "strategy": "iis", "wall_time_mean": 25.0},
        {"dataset": "a", "optimizer": "tpe", "strategy": "standard", "wall_time_mean": 0.0},
        {"dataset": "a", "optimizer": "tpe", "strategy": "iis", "wall_time_mean": 10.0},
        {"dataset": "b", "optimizer": "random", "strategy": "standard", "wall_time_mean": 50.0},
        {"dataset": "b", "optimizer": "random", "strategy": "iis", "wall_time_mean": 40.0},
        {"dataset": "b", "optimizer": "random", "strategy": "narrowing", "wall_time_mean": 60.0},
        {"dataset": "c", "optimizer": "random", "strategy": "standard", "wall_time_mean": 1.0},
        {"dataset": "c", "optimizer": "random", "strategy": "iis", "wall_time_mean": 0.25},
    ]
    assert time_reduction(rows, "a", "random") == 0.75
    assert time_reduction(rows, "b", "random") == pytest.approx(0.2, rel=1e-12)
    assert time_reduction(rows, "b", "random", "narrowing") == pytest.approx(-0.2, rel=1e-12)
    assert time_reduction(rows, "a", "random", "narrowing") is None  # no narrowing run
    assert time_reduction(rows[1:], "a", "random") is None  # no standard run
    assert time_reduction(rows, "a", "tpe") is None  # a zero baseline time
    assert time_reduction(rows, "c", "random") == 0.75


def test_strategies_are_compared_with_standard_in_a_fixed_order() -> None:
    assert compared_strategies(["narrowing", "independent", "standard", "iis"]) == ["iis", "narrowing"]
    assert compared_strategies(["narrowing", "iis"]) == []


def test_comparisons_pair_the_seeds_that_have_both_runs() -> None:
    runs_ = [
        result("a", "random", "standard", 0, 10.0, 0.5, 0.75),
        result("a", "random", "standard", 1, 20.0, 0.375, 0.625),
        result("a", "random", "standard", 2, 30.0, 0.25, 0.5),
        result("a", "random", "iis", 2, 12.0, 0.125, 0.75),
        result("a", "random", "iis", 1, 8.0, 0.5, 0.5),
        result("a", "random", "iis", 3, 1.0, 0.0625, 0.875),  # no standard run of seed 3
        result("b", "tpe", "iis", 0, 5.0, 0.25, 0.875),
        result("b", "tpe", "standard", 0, 10.0, 0.375, 0.75),
        result("c", "tpe", "standard", 0, 10.0, 0.5, 0.5),
        result("c", "tpe", "iis", 1, 4.0, 0.5, 0.5),  # no pair: no iis comparison, narrowing's still made
        result("c", "tpe", "narrowing", 0, 6.0, 0.25, 0.625),
    ]
    out = comparisons(runs_, ["standard", "iis", "narrowing"])
    assert [(d, o, c.strategy, c.baseline, c.metric, c.seeds, c.differences) for d, o, c in out] == [
        ("a", "random", "iis", "standard", "wall_time", (1, 2), (-12.0, -18.0)),
        ("a", "random", "iis", "standard", "best_val_error", (1, 2), (0.125, -0.125)),
        ("a", "random", "iis", "standard", "test_score", (1, 2), (-0.125, 0.25)),
        ("b", "tpe", "iis", "standard", "wall_time", (0,), (-5.0,)),
        ("b", "tpe", "iis", "standard", "best_val_error", (0,), (-0.125,)),
        ("b", "tpe", "iis", "standard", "test_score", (0,), (0.125,)),
        ("c", "tpe", "narrowing", "standard", "wall_time", (0,), (-4.0,)),
        ("c", "tpe", "narrowing", "standard", "best_val_error", (0,), (-0.25,)),
        ("c", "tpe", "narrowing", "standard", "test_score", (0,), (0.125,)),
    ]
    assert comparisons(runs_, ["iis"]) == []


def test_iis_is_compared_with_halving_too_and_holm_spans_every_data_set() -> None:
    assert compared_pairs(["halving", "iis", "standard", "narrowing"]) == [
        ("iis", "standard"), ("narrowing", "standard"), ("halving", "standard"), ("iis", "halving"),
    ]
    assert compared_pairs(["halving", "iis"]) == [("iis", "halving")]
    assert compared_pairs(["hyperband", "iis", "standard"]) == [("iis", "standard"), ("hyperband", "standard")]
    # wall times of seeds 0-2 (standard, iis, halving): iis - halving = -1, -2, -3; the
    # other metrics equal, so their differences are all 0 (p = 1)
    runs_ = [
        result(dataset, "random", strategy, seed, wall)
        for dataset in ("a", "b")
        for seed, walls in enumerate([(20.0, 9.0, 10.0), (30.0, 10.0, 12.0), (25.0, 11.0, 14.0)])
        for strategy, wall in zip(("standard", "iis", "halving"), walls, strict=True)
    ]
    out = comparisons(runs_, ["standard", "iis", "halving"])
    assert [(d, c.strategy, c.baseline, c.metric) for d, _, c in out] == [
        (d, s, b, m) for d in ("a", "b") for s, b in (("iis", "standard"), ("halving", "standard"), ("iis", "halving"))
        for m in ("wall_time", "best_val_error", "test_score")
    ]
    direct = [c for _, _, c in out if c.baseline == "halving" and c.metric == "wall_time"]
    assert [c.differences for c in direct] == [(-1.0, -2.0, -3.0)] * 2
    assert {c.family for _, _, c in out} == {18}  # 2 data sets x 3 pairs x 3 metrics
    raw = sorted(c.p_ttest for _, _, c in out)
    for _, _, c in out:
        assert c.p_holm == pytest.approx(min(1.0, max((18 - k) * q for k, q in enumerate(raw) if q <= c.p_ttest)))


def test_progress_means_skip_runs_without_a_success_yet_and_shorter_runs() -> None:
    inf = math.inf
    runs_ = [
        result("a", "tpe", "standard", 0, progress=(inf, 0.5, 0.25)),
        result("a", "tpe", "standard", 1, progress=(inf, 0.75)),
        result("a", "random", "iis", 0, progress=(0.5, 0.25)),
        result("b", "random", "iis", 0, progress=(1 / 3,)),
        result("b", "random", "iis", 1, progress=(0.0,)),
    ]
    assert progress_table(runs_, "a") == [
        {"evaluation": 1, "series": "random-iis", "best_val_error": 0.5},
        {"evaluation": 2, "series": "random-iis", "best_val_error": 0.25},
        {"evaluation": 2, "series": "tpe-standard", "best_val_error": 0.625},
        {"evaluation": 3, "series": "tpe-standard", "best_val_error": 0.25},
    ]
    # rounded to 6 decimals: 1/6
    assert progress_table(runs_, "b") == [{"evaluation": 1, "series": "random-iis", "best_val_error": 0.166667}]


def test_table1_per_dataset_with_the_papers_numbers_in_the_paper_study() -> None:
    settings = composed("study.datasets=[synthetic,stl10]", "study.name=paper", "study.optimizers=[random]",
                        "study.strategies=[standard,iis]")
    runs_ = [result("synthetic", "random", "standard", 0, 600.0), result("synthetic", "random", "iis", 0, 450.0),
             result("stl10", "random", "standard", 0, 1200.0)]
    assert table1_markdown(settings, runs_).split("\n") == [
        "# Table 1: time per strategy, study `paper`",
        "",
        "## synthetic",
        "",
        "| strategy (minutes, mean ± std) | random (ours) | random (paper) |",
        "|---|---|---|",
        f"| standard | 10.0 ± 0.0 | {PAPER_TABLE1['random']['standard'][0]:.0f} ± {PAPER_TABLE1['random']['standard'][1]:.0f} |",
        f"| iis | 7.5 ± 0.0 | {PAPER_TABLE1['random']['iis'][0]:.0f} ± {PAPER_TABLE1['random']['iis'][1]:.0f} |",
        "| time reduction | 25% | 19% |",
        "",
        "",
        "## stl10",
        "",
        "| strategy (minutes, mean ± std) | random (ours) | random (paper) |",
        "|---|---|---|",
        f"| standard | 20.0 ± 0.0 | {PAPER_TABLE1['random']['standard'][0]:.0f} ± {PAPER_TABLE1['random']['standard'][1]:.0f} |",
        "",
    ]


def test_a_missing_run_leaves_a_dash_in_the_markdown() -> None:
    settings = composed("study.strategies=[standard,iis,narrowing]", "study.optimizers=[random,tpe]",
                        "study.seeds=[0]", "study.ladder=[8,16,32]", "study.iis_budgets=[1,1,2]")
    rows = [{"dataset": "synthetic", "optimizer": "random", "strategy": s, "wall_time_mean": wall,
             "wall_time_std": 0.0, "best_val_error_mean": 0.25, "best_val_error_std": 0.0,
             "test_score_mean": 0.5, "test_score_std": 0.0} for s, wall in (("standard", 80.0), ("iis", 60.0))]
    lines = markdown(settings, rows, []).splitlines()
    assert lines[2] == (
        "4 evaluations per run; standard: all at 32 px; iis: 1 at 8 px, 1 at 16 px, 2 at 32 px; narrowing: 1 at "
        "32 px, 1 at 32 px, 2 at 32 px (IIS's stages and ranges); seeds [0] (mean ± std over seeds)."
    )
    assert lines[6:8] == ["| | random | tpe |", "|---|---|---|"]
    assert "| standard | 80.0 ± 0.0 | – |" in lines and "| iis | 60.0 ± 0.0 | – |" in lines
    assert "| time reduction | 25% | – |" in lines and "| time reduction (narrowing) | – | – |" in lines
    assert "| narrowing | – | – |" in lines
    assert "| standard | 0.2500 ± 0.0000 | – |" in lines and "| iis | 0.5000 ± 0.0000 | – |" in lines
    assert "paired by seed" not in "\n".join(lines)
