"""The transfer analysis: rank statistics against values computed by hand, configurations
followed through promotions, and the `transfer` target run through Snakemake on tiny data
with its numbers recomputed from the trial files with scipy directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from helpers import REPO, TINY, compose
from iishpo.plan.layout import Layout, figure_files, stages, transfer_runs, transfer_sources
from iishpo.results.artifacts import PromotionsRecord, read_stage
from iishpo.results.transfer import (
    MIN_PAIRS,
    estimate,
    kendall,
    lineages,
    pairs,
    resample_rows,
    spearman,
    top_membership,
    top_overlap,
    top_size,
)
from iishpo.search.space import build_space
from iishpo.settings.config import Transfer
from iishpo.store import Trial, read_trials

SETTINGS = Transfer(configurations=5, seed=0, top_fraction=0.2, resamples=500)


def trial(number: int, config: str, val_error: float | None) -> Trial:
    ok = val_error is not None
    return Trial(number, {"name": config}, "ok" if ok else "failed", val_error, val_error if ok else 1.0,
                 1, 0, 1.0, 1.0, None if ok else "Diverged: nan", 0, "2026-01-01T00:00:00+00:00")


def promoted(resolution: int, stage: list[Trial], numbers: list[int]) -> PromotionsRecord:
    return PromotionsRecord(resolution, [stage[n].config for n in numbers], numbers,
                            [stage[n].val_error for n in numbers], "digest")


# -- statistics against hand-computed values ------------------------------------------------


def rows(n: int, seed: int = 0) -> np.ndarray:
    return resample_rows(n, SETTINGS.resamples, seed, 8)


@pytest.mark.parametrize(("large", "expected"), [
    ([0.2, 0.3, 0.4, 0.5, 0.6], 1.0),  # the same order
    ([0.9, 0.8, 0.7, 0.6, 0.5], -1.0),  # reversed
])
def test_concordant_and_reversed_rankings(large: list[float], expected: float) -> None:
    x, y = np.array([0.1, 0.2, 0.3, 0.4, 0.5]), np.array(large)
    for statistic in (spearman, kendall):
        e = estimate(x, y, statistic, rows(5))
        assert (e.value, e.low, e.high) == pytest.approx((expected, expected, expected))
        # a resample of one configuration drawn 5 times has no ranking: left out, counted
        assert e.undefined_resamples == sum(len(set(r)) == 1 for r in rows(5))


def test_a_small_example_by_hand() -> None:
    """x = 1..5, y swaps the first two and the middle two: Spearman's rho = 1 - 6 * 4 /
    (5 * 24) = 0.8 (squared rank differences 1+1+1+1+0); Kendall's tau = (8 - 2) / 10."""
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([2.0, 1, 4, 3, 5])
    assert spearman(x, y) == pytest.approx(0.8)
    assert kendall(x, y) == pytest.approx(0.6)


def test_ties_get_average_ranks_and_tau_b() -> None:
    """x ties its first two: ranks (1.5, 1.5, 3, 4) against (1, 2, 3, 4) give rho =
    4.5 / sqrt(4.5 * 5); of 6 pairs 5 are concordant and one tied in x, so tau-b =
    5 / sqrt((6 - 1) * 6)."""
    x, y = np.array([1.0, 1, 2, 3]), np.array([1.0, 2, 3, 4])
    assert spearman(x, y) == pytest.approx(4.5 / np.sqrt(22.5))
    assert kendall(x, y) == pytest.approx(5 / np.sqrt(30))


def test_bootstrap_interval_holds_the_estimate_and_is_seeded() -> None:
    generator = np.random.default_rng(7)
    x = generator.uniform(size=30)
    y = x + generator.normal(scale=0.3, size=30)
    for statistic in (spearman, kendall):
        e = estimate(x, y, statistic, rows(30))
        assert e.low < e.value < e.high  # type: ignore[operator]
        assert e == estimate(x, y, statistic, rows(30))  # the same seed: the same interval
        assert e.low != estimate(x, y, statistic, rows(30, seed=1)).low
    drawn = rows(30)
    assert drawn.shape == (SETTINGS.resamples, 30) and drawn.min() >= 0 and drawn.max() <= 29
    # with replacement: some row repeats a configuration
    assert any(len(set(r)) < 30 for r in drawn)


def test_too_few_pairs_or_a_constant_side_is_undefined() -> None:
    short = np.arange(MIN_PAIRS - 1, dtype=float)
    assert estimate(short, short, spearman, rows(len(short))).value is None
    flat = np.full(6, 0.9)  # every configuration at chance at the small resolution
    e = estimate(flat, np.arange(6.0), kendall, rows(6))
    assert (e.value, e.low, e.high) == (None, None, None)


@pytest.mark.parametrize(("n", "fraction", "k"), [(30, 0.1, 3), (40, 0.1, 4), (29, 0.1, 2), (9, 0.1, 1), (5, 1.0, 5)])
def test_the_top_fraction_is_at_least_one(n: int, fraction: float, k: int) -> None:
    assert top_size(n, fraction) == k


def test_top_overlap_by_hand() -> None:
    """Best 2 of 10 (20%): configurations 0 and 1 at the small resolution, 1 and 5 at the
    largest: one of two shared; two unrelated rankings share 2/10 on average."""
    small = [0.1, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9]
    large = [0.6, 0.1, 0.5, 0.6, 0.7, 0.2, 0.9, 0.9, 0.9, 0.9]
    overlap = top_overlap(small, large, 0.2)
    assert (overlap.k, overlap.overlap, overlap.chance) == (2, 0.5, 0.2)  # type: ignore[union-attr]
    assert top_overlap(small, small, 0.2).overlap == 1.0  # type: ignore[union-attr]
    assert top_overlap([], [], 0.2) is None


def test_ties_at_the_cut_share_the_places_left() -> None:
    """Best 2 of 10: configuration 0 is in; 1, 2 and 3 tie for the one place left (1/3 each).
    At the largest the best are 2 and 9, so 1/3 of a configuration is shared: 1/6 of 2."""
    small = [0.1, 0.2, 0.2, 0.2, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9]
    large = [0.5, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2]
    assert top_membership(small, 2) == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0, 0, 0])
    assert top_overlap(small, large, 0.2).overlap == pytest.approx(1 / 6)  # type: ignore[union-attr]


# -- configurations followed through promotions ---------------------------------------------


def test_lineages_follow_promotions_up_the_ladder() -> None:
    """Rung 8 px: a..d; c and a promoted (best first); at 16 px a failed, c did not; a alone
    promoted again: a is at every resolution, c at 8 and 16 px, b and d at 8 px only."""
    rung0 = [trial(0, "a", 0.3), trial(1, "b", 0.6), trial(2, "c", 0.2), trial(3, "d", 0.9)]
    rung1 = [trial(0, "c", 0.4), trial(1, "a", None)]
    rung2 = [trial(0, "a", 0.1)]
    found = lineages([(8, rung0), (16, rung1), (32, rung2)], [promoted(16, rung0, [2, 0]), promoted(32, rung1, [1])])
    by_name = {lin[8].config["name"]: {r: t.val_error for r, t in lin.items()} for lin in found}
    assert by_name == {"a": {8: 0.3, 16: None, 32: 0.1}, "b": {8: 0.6}, "c": {8: 0.2, 16: 0.4}, "d": {8: 0.9}}
    at_8 = pairs(found, 8, 32)
    assert (at_8.small, at_8.large, at_8.dropped) == ((0.3,), (0.1,), 0)
    at_16 = pairs(found, 16, 32)  # a failed at 16 px: left out, counted
    assert (at_16.small, at_16.large, at_16.dropped) == ((), (), 1)


def test_an_empty_promotion_starts_new_configurations() -> None:
    """Hyperband: a bracket 8 -> 16 px, then one that starts at 16 px."""
    first = [trial(0, "a", 0.3), trial(1, "b", 0.1)]
    climbed = [trial(0, "b", 0.2)]
    fresh = [trial(0, "e", 0.5), trial(1, "f", 0.4)]
    empty = PromotionsRecord(16, [], [], [], "digest")
    found = lineages([(8, first), (16, climbed), (16, fresh)], [promoted(16, first, [1]), empty])
    assert sorted((lin[min(lin)].config["name"], sorted(lin)) for lin in found) == [
        ("a", [8]), ("b", [8, 16]), ("e", [16]), ("f", [16])]


def test_a_stage_that_did_not_evaluate_what_was_promoted_is_refused() -> None:
    rung0 = [trial(0, "a", 0.3), trial(1, "b", 0.1)]
    with pytest.raises(ValueError, match="did not evaluate the configurations stage 0 promoted"):
        lineages([(8, rung0), (16, [trial(0, "a", 0.2)])], [promoted(16, rung0, [1])])
    with pytest.raises(ValueError, match="2 stages need 1 promotions, got 0"):
        lineages([(8, rung0), (16, [])], [])


def test_the_analysis_imports_no_deep_learning_framework() -> None:
    code = "import sys, iishpo.results.transfer; print(' '.join(sorted(sys.modules)))"
    modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not {"torch", "lightning"} & {m.split(".")[0] for m in modules}


def test_a_one_resolution_ladder_has_nothing_to_compare() -> None:
    study = compose(*TINY, "study.ladder=[32]", "study.iis_budgets=[4]", "study.strategies=[standard]").study
    with pytest.raises(ValueError, match="needs a study.ladder of >= 2, got \\[32\\]"):
        transfer_runs(study)


# -- the `transfer` target, end to end ------------------------------------------------------

#: 5 random configurations at 16 and 32 px, and random search's successive halving (3 at
#: 16 px, 1 at 32 px) as the study's promoting run; learning rates and epochs with which the
#: tiny trainings learn something, so that their errors differ
TRANSFER_STUDY = (
    *(o for o in TINY if not o.startswith("trainer.max_epochs")), "trainer.max_epochs=3",
    "space.learning_rate.low=0.02", "study.optimizers=[random]", "study.strategies=[halving]",
    "study.transfer.configurations=5", "study.transfer.resamples=200", "study.transfer.top_fraction=0.25",
)


def run_target(workdir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--cores", "2", "transfer", "--config", "overrides=" + " ".join((*TRANSFER_STUDY, *overrides)),
    ]
    env = {**os.environ, "IISHPO_ROOT": str(workdir)}  # data and results land in workdir
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=1800, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Layout]:
    workdir = tmp_path_factory.mktemp("transfer")
    run_target(workdir)
    return workdir, Layout(workdir / "results" / compose(*TRANSFER_STUDY).study.name)


@pytest.mark.slow
def test_the_transfer_target_trains_every_configuration_at_every_resolution(finished: tuple[Path, Layout]) -> None:
    _, layout = finished
    settings = compose(*TRANSFER_STUDY)
    study = settings.study
    (run,) = transfer_runs(study)
    assert (run.optimizer, run.strategy, run.seed) == ("random", "transfer", 0)
    trials = [read_trials(layout.trials(plan.key)) for plan in stages(study, run)]
    smallest = build_space(settings.space, study.ladder[0])
    drawn = [t.config for t in trials[0]]
    assert len(drawn) == 5 and all(smallest.contains(c) for c in drawn)  # the smallest resolution's space
    for plan, stage in zip(stages(study, run), trials, strict=True):
        assert sorted(map(json.dumps, (t.config for t in stage))) == sorted(map(json.dumps, drawn))
        record = read_stage(layout.stage_record(plan.key))  # the stage machinery's record
        assert (record.resolution, record.n_trials, record.strategy) == (plan.resolution, 5, "transfer")
    # not part of the study: `rule all` asks for none of it
    assert not set(layout.files(study)) & set(layout.transfer_files(study))


@pytest.mark.slow
def test_the_transfer_numbers_follow_from_the_trial_files(finished: tuple[Path, Layout]) -> None:
    """Pairs matched by configuration (not through promotions) and correlated with scipy."""
    _, layout = finished
    study = compose(*TRANSFER_STUDY).study
    record = json.loads(layout.transfer_record("synthetic").read_text())
    by_strategy = {source["strategy"]: source for source in record["sources"]}
    assert set(by_strategy) == {"transfer", "halving"}
    assert (by_strategy["transfer"]["selected"], by_strategy["halving"]["selected"]) == (False, True)
    for source_run in transfer_sources(study, "synthetic"):
        plans = stages(study, source_run)
        errors = [{json.dumps(t.config, sort_keys=True): t for t in read_trials(layout.trials(p.key))} for p in plans]
        both = [(errors[0][c], errors[-1][c]) for c in errors[0] if c in errors[-1]]
        ok = [(a.val_error, b.val_error) for a, b in both if a.ok and b.ok]
        (comparison,) = by_strategy[source_run.strategy]["comparisons"]
        assert comparison["pairs"]["resolution"] == study.ladder[0]
        assert sorted(zip(comparison["pairs"]["small"], comparison["pairs"]["large"])) == sorted(ok)
        assert comparison["pairs"]["dropped"] == len(both) - len(ok)
        defined = len(ok) >= MIN_PAIRS and len({a for a, _ in ok}) > 1 and len({b for _, b in ok}) > 1
        assert defined or source_run.strategy != "transfer"  # the random configurations' errors differ
        if defined:
            small, large = zip(*ok)
            assert comparison["spearman"]["value"] == pytest.approx(stats.spearmanr(small, large).statistic)
            assert comparison["kendall"]["value"] == pytest.approx(stats.kendalltau(small, large).statistic)
    assert record["provenance"]["git"]["commit"]
    table = layout.transfer_markdown("synthetic").read_text()
    assert "| transfer (random) | 16 px |" in table and "| halving (promoted) | 16 px |" in table
    for path in figure_files(layout.transfer_figure("synthetic")):
        assert path.stat().st_size > 1000


@pytest.mark.slow
def test_the_analysis_refuses_stages_of_another_configuration(finished: tuple[Path, Layout]) -> None:
    _, layout = finished
    command = [
        sys.executable, "-m", "iishpo", "analyze-transfer", "--dataset", "synthetic", "--results", str(layout.root),
        *TRANSFER_STUDY, "trainer.momentum=0.8",
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert "were made under another configuration than the current one" in result.stderr
