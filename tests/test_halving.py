"""Successive halving and Hyperband over the ladder: the rungs and brackets against SMAC3's
own code, where and why ours deviate to hit the total budget, promotion, the stages each
strategy plans, the promotions file a stage starts from (and resumes with), and the
settings refused at load."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from smac.intensifier.hyperband_utils import determine_HB
from smac.intensifier.successive_halving import SuccessiveHalving

from helpers import TINY, compose, journal_in
from iishpo.data.splits import ImageSplits, save_splits
from iishpo.jobs.stage import TRIALS, run_stage, start_space
from iishpo.plan.layout import Layout, RunKey, StageKey, promotion, result_stages, stages
from iishpo.results.artifacts import PromotionsRecord, read_promotions, write_record
from iishpo.settings.config import ConfigError
from iishpo.settings.halving import (
    halving_rungs,
    hyperband_brackets,
    promote,
    smac_bracket_sizes,
    smallest_halving_budget,
    smallest_hyperband_budget,
)
from iishpo.store import WORST_LOSS, Trial, read_trials

CASES = [(eta, n_rungs) for eta in (2, 3, 4) for n_rungs in (2, 3, 4)]
HALVING = ("study=smoke", "study.strategies=[standard,halving,hyperband]", "study.budget=6")


def smac(eta: int, n_rungs: int) -> dict:
    """SMAC3's Hyperband for rungs 1, eta, ..., eta**(n_rungs-1): budgets in resource units
    whose number of rungs is the ladder's."""
    return determine_HB(min_budget=1, max_budget=eta ** (n_rungs - 1), eta=eta)


@pytest.mark.parametrize(("eta", "n_rungs"), CASES)
def test_one_bracket_is_smacs_successive_halving(eta: int, n_rungs: int) -> None:
    max_budget = eta ** (n_rungs - 1)
    max_iter = SuccessiveHalving._get_max_iterations(eta, max_budget, 1)
    assert max_iter + 1 == n_rungs
    _, n_configs = SuccessiveHalving._compute_configs_and_budgets_for_stages(eta, max_budget, max_iter)
    assert halving_rungs(sum(n_configs), eta, n_rungs) == n_configs
    # SMAC's bracket is the smallest that leaves one configuration in the last rung
    assert smallest_halving_budget(eta, n_rungs) == sum(n_configs)


@pytest.mark.parametrize(("eta", "n_rungs"), CASES)
def test_a_budget_of_one_smac_hyperband_round_gives_smacs_brackets(eta: int, n_rungs: int) -> None:
    hyperband = smac(eta, n_rungs)
    brackets = [hyperband["n_configs_in_stage"][i] for i in range(hyperband["number_of_brackets"])]
    assert hyperband["number_of_brackets"] == n_rungs
    assert smac_bracket_sizes(eta, n_rungs) == [sum(b) for b in brackets]
    assert hyperband_brackets(int(hyperband["trials_used"]), eta, n_rungs) == brackets


@pytest.mark.parametrize(("eta", "n_rungs"), CASES)
def test_every_budget_is_spent_exactly(eta: int, n_rungs: int) -> None:
    for budget in range(smallest_halving_budget(eta, n_rungs), 300):
        rungs = halving_rungs(budget, eta, n_rungs)
        assert sum(rungs) == budget
        # each rung promotes at most 1/eta of the one before, and the remainder that went to
        # rung 0 is less than one more configuration's worth of rungs
        assert all(later * eta <= earlier for earlier, later in itertools.pairwise(rungs))
        assert rungs[0] - rungs[1] * eta < eta + n_rungs
    for budget in range(smallest_hyperband_budget(eta, n_rungs), 300):
        brackets = hyperband_brackets(budget, eta, n_rungs)
        assert sum(map(sum, brackets)) == budget
        assert [len(b) for b in brackets] == list(range(n_rungs, 0, -1))
        assert all(b[-1] >= 1 for b in brackets)


def test_the_deviations_from_smac_that_hit_the_budget() -> None:
    # halving: what does not fill another rung-0 configuration's rungs goes to rung 0, so 14
    # configurations at 8 px promote 6, not 7 (SMAC would make 21 evaluations or 19)
    assert halving_rungs(20, 2, 2) == [14, 6]
    # Hyperband at two SMAC rounds (44 = 2 x 22): the brackets' shares are SMAC's doubled,
    # but each share is halved again from its own rung 0, so bracket 1 promotes
    # floor(9 / 3) = 3 where doubling SMAC's [5, 1] would give [10, 2]
    assert smac(3, 3)["trials_used"] == 22
    assert hyperband_brackets(44, 3, 3) == [[18, 6, 2], [9, 3], [6]]


@pytest.mark.parametrize(("eta", "n_rungs"), CASES)
def test_the_smallest_budget_is_a_threshold(eta: int, n_rungs: int) -> None:
    smallest = smallest_hyperband_budget(eta, n_rungs)
    assert min(b[-1] for b in hyperband_brackets(smallest - 1, eta, n_rungs)) == 0
    assert halving_rungs(smallest_halving_budget(eta, n_rungs) - 1, eta, n_rungs)[-1] == 0
    # D'Hondt's shares never shrink as the budget grows, so every larger budget works too
    previous = [0] * n_rungs
    for budget in range(smallest, 200):
        shares = [sum(b) for b in hyperband_brackets(budget, eta, n_rungs)]
        assert all(s >= p for s, p in zip(shares, previous, strict=True))
        previous = shares


def trial(number: int, val_error: float | None) -> Trial:
    return Trial(
        number=number, config={"learning_rate": 0.1 * (number + 1)}, status="ok" if val_error is not None else "failed",
        val_error=val_error, loss=WORST_LOSS if val_error is None else val_error, epochs=1, best_epoch=0,
        wall_time=1.0, elapsed=float(number), error=None if val_error is not None else "diverged", seed=number,
        finished_at="2026-01-01T00:00:00+00:00",
    )


def test_promotion_takes_the_lowest_errors_then_the_earliest_then_failures() -> None:
    trials = [trial(0, 0.5), trial(1, None), trial(2, 0.2), trial(3, 0.5), trial(4, 0.9)]
    assert [t.number for t in promote(trials, 3)] == [2, 0, 3]
    # a rung with too few successes still fills the next rung's budget
    assert [t.number for t in promote(trials[:2], 2)] == [0, 1]
    with pytest.raises(ValueError, match="cannot promote 3 of 2 trials"):
        promote(trials[:2], 3)


def test_each_strategy_plans_its_rungs_and_brackets() -> None:
    study = compose(*HALVING).study
    assert study.eta == 3
    assert study.stages("halving") == [(16, 5), (32, 1)]
    assert study.stages("hyperband") == [(16, 3), (32, 1), (32, 2)]
    run = RunKey("synthetic", "random", "hyperband", 0)
    assert [p.key.stage for p in result_stages(study, run)] == [1, 2]
    assert [promotion(study, run.stage(k)) for k in (0, 1)] == [(32, 1), (32, 0)]
    assert [p.key.stage for p in result_stages(study, RunKey("synthetic", "random", "halving", 0))] == [1]
    # every strategy makes the study's budget
    assert all(sum(b for _, b in study.stages(s)) == study.budget for s in study.strategies)
    files = Layout(Path("r")).run_files(study, run)
    assert [f.name for f in files if f.name == "promotions.json"] == ["promotions.json"] * 2
    assert [len(stages(study, RunKey("synthetic", "tpe", s, 0))) for s in study.strategies] == [1, 2, 3]


def test_a_promoted_stage_starts_from_the_promoted_configurations(tmp_path: Path) -> None:
    settings = compose(*HALVING)
    key = StageKey("synthetic", "random", "halving", 0, 1)
    space, _ = start_space(settings, key, None)
    config = space.sample(random.Random(0))
    path = tmp_path / "promotions.json"
    write_record(path, PromotionsRecord(resolution=32, configs=[config], trials=[3], val_errors=[0.25], config_digest="d"))
    assert read_promotions(path).configs == [config]
    assert start_space(settings, key, path)[1] == [config]
    # a new Hyperband bracket: nothing promoted, the optimizer proposes
    write_record(path, PromotionsRecord(resolution=32, configs=[], trials=[], val_errors=[], config_digest="d"))
    assert start_space(settings, StageKey("synthetic", "random", "hyperband", 0, 2), path)[1] == []
    write_record(path, PromotionsRecord(resolution=32, configs=[config, config], trials=[0, 1], val_errors=[0.1, 0.2], config_digest="d"))
    with pytest.raises(ValueError, match="promotes 2 configurations, the stage's budget is 1"):
        start_space(settings, key, path)
    write_record(path, PromotionsRecord(resolution=16, configs=[config], trials=[0], val_errors=[0.1], config_digest="d"))
    with pytest.raises(ValueError, match="is for 16 px, stage needs 32 px"):
        start_space(settings, key, path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("study.eta=1",), "study.eta must be an integer >= 2 for halving and hyperband, got 1"),
        (("study.ladder=[32]", "study.iis_budgets=[6]"), "the halving and hyperband strategies need the rungs of a study.ladder of >= 2 resolutions, got [32]"),
        (("study.ladder=[32]", "study.strategies=[halving]"), "the halving strategy needs the rungs of a study.ladder"),
        (("study.budget=3", "study.strategies=[standard,halving]"),
         ("study.budget=3 is too small for halving with study.eta=3 over a ladder of 2 resolutions: "
         "the smallest budget that leaves one configuration in every last rung is 4")),
        (("study.budget=4", "study.strategies=[hyperband]"),
         ("study.budget=4 is too small for hyperband with study.eta=3 over a ladder of 2 resolutions: "
         "the smallest budget that leaves one configuration in every last rung is 5")),
        (("study.ladder=[8,16,32]", "study.eta=2", "study.budget=11", "study.strategies=[hyperband]"),
         "the smallest budget that leaves one configuration in every last rung is 12"),
    ],
)
def test_bad_halving_settings_are_refused_at_load(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        compose(*HALVING, *overrides)
    assert message in str(error.value)


#: a small configuration of the smoke study's space (cnn_small), quick to train at 32 px
SMALL = {
    "learning_rate": 0.01, "batch_size": 16, "l1": 1e-6, "l2": 1e-6, "filter_size": 3,
    "n_conv": 1, "n_fc": 1, "conv_filters_0": 4, "fc_units_0": 8,
}


def test_a_promoted_stage_trains_the_promoted_configurations_and_resumes_from_its_journal(tmp_path: Path) -> None:
    settings = compose(*TINY, *HALVING[1:], "study.budget=12")  # halving: 9 at 16 px, 3 at 32 px
    key = StageKey("synthetic", "random", "halving", 0, 1)
    assert settings.study.stages("halving")[1] == (32, 3)
    rng = np.random.default_rng(0)
    x = {s: rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for s, n in (("train", 12), ("val", 6), ("test", 6))}
    data = tmp_path / "32px.npz"
    save_splits(ImageSplits(x, {s: np.arange(len(images)) % 2 for s, images in x.items()}, ["a", "b"]), data)
    promoted = [{**SMALL, "learning_rate": lr} for lr in (0.02, 0.01, 0.03)]
    handoff = tmp_path / "promotions.json"
    write_record(handoff, PromotionsRecord(32, promoted, [4, 0, 7], [0.1, 0.2, 0.3], config_digest="d"))
    out = tmp_path / "out"
    run_stage(settings, key, data, handoff, out)
    trials = read_trials(out / TRIALS)
    assert [t.config for t in trials] == promoted
    # killed after its first evaluation: the rerun replays it and trains only the other two
    journal = journal_in(out)
    journal.write_text(journal.read_text().splitlines(keepends=True)[0])
    (out / TRIALS).unlink()
    run_stage(settings, key, data, handoff, out)
    resumed = read_trials(out / TRIALS)
    assert resumed[0] == trials[0]
    assert [(t.config, t.val_error) for t in resumed] == [(t.config, t.val_error) for t in trials]
