"""Figures 2-5 and Table 1: valid, non-trivial images; the numbers behind them recomputed
by hand; one colour per optimizer."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import experiment_stores
from iishpo.plan.layout import RunKey
from iishpo.results import figures
from iishpo.results.figures import (
    PAPER_REDUCTIONS,
    PAPER_TABLE1,
    RunTrials,
    binned_means,
    mean_band,
    mean_error_grid,
    on_time_grid,
    palette,
    table1,
    time_reduction,
)
from iishpo.results.importance import Importance, importance_by_resolution
from iishpo.results.transfer import Pairs, Source, compare
from iishpo.settings.config import Transfer
from iishpo.store import Trial


def trial(number: int, val_error: float | None, elapsed: float, **config: float) -> Trial:
    ok = val_error is not None
    return Trial(number, dict(config), "ok" if ok else "failed", val_error, val_error if ok else 1.0,
                 1, 0, 1.0, elapsed, None if ok else "Boom: x", 0, "2024-01-01T00:00:00+00:00")


def assert_images(paths: list[Path], min_side: int = 200) -> None:
    """A PNG Pillow decodes, of real size and not one flat colour, and a non-empty SVG."""
    assert [p.suffix for p in paths] == [".png", ".svg"]
    png, svg = paths
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert min(image.size) >= min_side, image.size
        extrema = image.convert("L").getextrema()
        assert extrema[1] - extrema[0] > 100, extrema
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and len(text) > 5000


def test_palette_gives_known_optimizers_fixed_colours() -> None:
    assert palette(["tpe", "random"]) == {"tpe": "#ff7f0e", "random": "#1f77b4"}
    spare = figures.SPARE_COLOURS
    assert palette(["random", "zeta", "alpha"]) == {"random": "#1f77b4", "zeta": spare[1], "alpha": spare[0]}
    with pytest.raises(ValueError, match="at most 6 have colours"):
        palette([f"x{i}" for i in range(7)])


def test_table1_puts_the_papers_numbers_beside_ours() -> None:
    times = {("tpe", "standard"): [600.0, 720.0], ("tpe", "iis"): [300.0, 420.0], ("random", "standard"): [60.0]}
    text = table1(times, ["random", "tpe"], with_paper=True)
    lines = text.splitlines()
    assert lines[0] == "| strategy (minutes, mean ± std) | random (ours) | random (paper) | tpe (ours) | tpe (paper) |"
    mean, std = statistics.fmean([10.0, 12.0]), statistics.stdev([10.0, 12.0])
    assert lines[2] == f"| standard | 1.0 ± 0.0 | 2974 ± 77 | {mean:.1f} ± {std:.1f} | 3822 ± 294 |"
    assert lines[3] == "| iis | – | 2396 ± 335 | 6.0 ± 1.4 | 2230 ± 46 |"
    assert lines[4] == f"| time reduction | – | 19% | {1 - 6 / 11:.0%} | 42% |"
    assert "paper" not in table1(times, ["random", "tpe"], with_paper=False)
    assert "| narrowing |" in table1({**times, ("tpe", "narrowing"): [30.0]}, ["tpe"], with_paper=False)


def test_the_papers_printed_reductions_follow_from_its_times() -> None:
    for optimizer, reduction in PAPER_REDUCTIONS.items():
        times = PAPER_TABLE1[optimizer]
        assert round(time_reduction(times["standard"][0], times["iis"][0]), 2) == reduction
    with pytest.raises(ValueError, match="must be positive"):
        time_reduction(0.0, 1.0)


def iis_run(seed: int, errors: list[list[float | None]], step: float = 10.0) -> RunTrials:
    stages = []
    for stage in errors:
        stages.append(tuple(trial(i, e, step * (i + 1)) for i, e in enumerate(stage)))
    return RunTrials("tpe", "iis", seed, tuple(stages))


def test_progress_is_the_best_error_within_each_stage() -> None:
    run = iis_run(0, [[None, 0.5, 0.6, 0.4], [0.7, None, 0.3]])
    times, best = run.progress()
    assert times == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    assert best[0] != best[0]  # NaN: no success yet
    assert best[1:] == [0.5, 0.5, 0.4, 0.7, 0.7, 0.3]
    assert run.boundaries() == [(4, 40.0)]


def test_mean_band_and_time_grid() -> None:
    mean, low, high = mean_band([[1.0, 2.0, math.nan], [3.0, 4.0]])
    assert mean[0] - low[0] == pytest.approx(statistics.stdev([1.0, 3.0]))
    assert mean[:2].tolist() == [2.0, 3.0] and np.isnan(mean[2])  # no value at position 3
    assert high[0] - mean[0] == pytest.approx(statistics.stdev([1.0, 3.0]))
    sampled = on_time_grid([10.0, 20.0], [0.5, 0.4], np.array([0.0, 10.0, 15.0, 25.0]))
    assert np.isnan(sampled[0]) and sampled[1:].tolist() == [0.5, 0.5, 0.4]


def test_binned_means_and_error_grid() -> None:
    rates = [1e-4, 2e-4, 3e-3, 1e-1]  # bins [1e-4, 1e-3), [1e-3, 1e-2), [1e-2, 1e-1]
    centres, means = binned_means(rates, [1.0, 3.0, 5.0, 7.0], n_bins=3)
    assert means == [2.0, 5.0, 7.0]
    assert centres[0] == pytest.approx(math.sqrt(1e-4 * 10 ** (-4 + 1)))
    trials = [trial(i, e, 1.0, learning_rate=r, n_fc=n) for i, (r, e, n) in
              enumerate([(1e-4, 0.2, 1), (2e-4, 0.4, 1), (1e-1, 0.9, 2)])] + [trial(3, None, 1.0, learning_rate=1e-1, n_fc=1)]
    grid = mean_error_grid(trials, np.array([1e-4, 1e-2, 1e-1]), [1, 2])
    assert grid[0, 0] == pytest.approx(0.3) and grid[1, 1] == 0.9
    assert np.isnan(grid[0, 1]) and np.isnan(grid[1, 0])


def test_progress_figure_every_strategy_with_stage_marks(tmp_path: Path) -> None:
    runs = [iis_run(seed, [[0.6 - 0.01 * seed, 0.5, None], [0.55, 0.35]]) for seed in (0, 1)]
    runs += [RunTrials("tpe", "standard", 0, (tuple(trial(i, 0.6 - 0.02 * i, 20.0 * (i + 1)) for i in range(5)),))]
    runs += [RunTrials("random", "narrowing", 0, (tuple(trial(i, 0.5, 5.0 * (i + 1)) for i in range(5)),))]
    assert_images(figures.progress_figure(runs, "tiny", tmp_path / "fig5"))
    with pytest.raises(ValueError, match="at least one run"):
        figures.progress_figure([], "none", tmp_path / "empty")


def test_importance_figure_lists_notes_and_draws_without_analysis(tmp_path: Path) -> None:
    analysed = Importance(16, 40, ("a", "b"), {"a": 0.6, "b": 0.1}, {("a", "b"): 0.2})
    noted = Importance(32, 3, ("a", "b"), note="3 successful trials at 32 px; fANOVA of 2 hyperparameters needs at least 3")
    assert_images(figures.importance_figure([analysed, noted], "tiny", tmp_path / "fig2"))
    assert_images(figures.importance_figure([noted], "only notes", tmp_path / "fig2-notes"))


def test_rank_correlation_figure_draws_every_source_and_undefined_statistics(tmp_path: Path) -> None:
    settings = Transfer(configurations=6, seed=0, top_fraction=0.2, resamples=100)
    errors = [0.1, 0.3, 0.2, 0.5, 0.4, 0.6]
    transfer = Source("transfer", False, (RunKey("d", "random", "transfer", 0),), (
        compare(Pairs(8, 32, tuple(errors), tuple(reversed(errors)), 0), settings),
        compare(Pairs(16, 32, tuple(errors), tuple(errors), 1), settings),
    ))
    promoted = Source("halving", True, (RunKey("d", "tpe", "halving", 0),), (  # too few pairs for a correlation
        compare(Pairs(8, 32, (0.1, 0.2), (0.3, 0.1), 0), settings),
        compare(Pairs(16, 32, (), (), 0), settings),
    ))
    assert promoted.comparisons[0].spearman.value is None
    assert_images(figures.rank_correlation_figure([transfer, promoted], "tiny", tmp_path / "transfer"))
    with pytest.raises(ValueError, match="at least one source"):
        figures.rank_correlation_figure([], "none", tmp_path / "empty")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return experiment_stores.make_stores(tmp_path_factory)


def test_figures_of_real_trial_stores(stores: Path, tmp_path: Path) -> None:
    by_resolution = experiment_stores.trials_by_resolution(stores)
    settings = experiment_stores.settings()
    pooled = {r: [t for ts in by_o.values() for t in ts] for r, by_o in by_resolution.items()}
    results = importance_by_resolution(pooled, settings.space)
    assert_images(figures.importance_figure(results, "synthetic (test study)", tmp_path / "fig2"))
    assert_images(figures.learning_rate_figure(by_resolution, "synthetic (test study)", tmp_path / "fig3"))
    assert_images(figures.learning_rate_fc_figure(by_resolution, "synthetic (test study)", tmp_path / "fig4"))
    runs = [
        RunTrials(o, "iis", 0, tuple(tuple(by_resolution[r][o]) for r in sorted(by_resolution)))
        for o in experiment_stores.OPTIMIZERS
    ]
    assert_images(figures.progress_figure(runs, "synthetic (test study)", tmp_path / "fig5"))
