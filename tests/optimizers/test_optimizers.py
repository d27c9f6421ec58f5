"""One contract for every optimizer that ``conf/optimizer/`` has (random, TPE, GA, SMAC),
and for one added the way the README says (a module and its YAML, nothing else).

Each runs against a cheap synthetic objective over the real CNN space, so the suite checks
the ask/tell behaviour the stage runner relies on: proposals inside the (narrowed) space,
initial points first, reproducibility across processes, exact resumption by replay, and
that the model-based and evolutionary algorithms actually optimise. Like Optuna's
reusable sampler tests, :class:`OptimizerContract` runs against each optimizer found, and
the optimizer class declares what it can do (does it learn from losses?) instead of the
tests asking for an optimizer by name.

Run as a script (``python test_optimizers.py RES BUDGET SEED...``) it prints the proposals
of every optimizer as JSON; the reproducibility test compares two such processes.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from iishpo.cli import check_optimizers
from iishpo.optimizers import (
    GROUP,
    Optimizer,
    OptimizerSettings,
    Registry,
    algorithm,
    build_settings,
    create_optimizer,
)
from iishpo.optimizers.genetic import _mutate_gene
from iishpo.optimizers.hyperopt_search import TPE
from iishpo.optimizers.settings import TPE_GOOD_CAP, RandomSettings
from iishpo.search.space import CATEGORICAL, FLOAT, INT, Config, Param, SearchSpace, build_space
from iishpo.settings.config import ConfigError, load_settings
from iishpo.typed import SettingsError

CONF = Path(__file__).resolve().parents[2] / "conf"
NAMES = sorted(Registry(CONF))
#: SMAC's shipped acquisition search (10000 challengers, 10 local searches) costs about a
#: second per proposal here; a cruder search keeps the suite fast and tests the same code.
SPEED = {"smac": {"challengers": 500, "local_search_iterations": 1}}


@cache
def space_at(resolution: int) -> SearchSpace:
    return build_space(yaml.safe_load((CONF / "space" / "cnn.yaml").read_text()), resolution)


@dataclass(frozen=True)
class Subject:
    """An optimizer under test: its name and the configuration directory of its YAML."""

    name: str
    conf: Path = CONF

    def shipped(self) -> Any:
        raw = yaml.safe_load((self.conf / GROUP / f"{self.name}.yaml").read_text())
        return build_settings(self.name, raw)

    def settings(self, **changes: Any) -> Any:
        return replace(self.shipped(), **{**SPEED.get(self.name, {}), **changes})

    def create(self, space: SearchSpace, *, budget: int, seed: int, initial_points: Sequence[Config] = (),
               settings: OptimizerSettings | None = None) -> Optimizer[Any]:
        return create_optimizer(self.name, space, budget=budget, seed=seed, initial_points=initial_points,
                                settings=self.settings() if settings is None else settings)

    def run(self, space: SearchSpace, *, budget: int, seed: int, trials: int | None = None,
            initial_points: Sequence[Config] = (), settings: OptimizerSettings | None = None,
            loss_of: Callable[[Config, SearchSpace], float] | None = None,
            ) -> list[tuple[Config, float]]:
        """A new optimizer driven ``trials`` times (default: the budget): :func:`drive`."""
        optimizer = self.create(space, budget=budget, seed=seed, initial_points=initial_points, settings=settings)
        return drive(optimizer, space, budget if trials is None else trials, loss_of)

    def performance(self, seeds: Sequence[int]) -> tuple[float, float]:
        """Over ``seeds``: the mean best loss, and the mean loss of the second half of each run."""
        space = space_at(16)
        runs = [[loss for _, loss in self.run(space, budget=BUDGET, seed=s)] for s in seeds]
        best = statistics.mean(min(losses) for losses in runs)
        late = statistics.mean(statistics.mean(losses[BUDGET // 2 :]) for losses in runs)
        return best, late


RANDOM, TPE_, GA, SMAC = (Subject(name) for name in ("random", "tpe", "ga", "smac"))


def drive(optimizer: Optimizer[Any], space: SearchSpace, trials: int,
          loss_of: Callable[[Config, SearchSpace], float] | None = None) -> list[tuple[Config, float]]:
    """Ask and tell ``trials`` times, the loss by ``loss_of`` (default: :func:`objective`);
    the history of (config, loss)."""
    history = []
    for _ in range(trials):
        config = optimizer.ask()
        loss = (loss_of or objective)(config, space)
        optimizer.tell(config, loss)
        history.append((config, loss))
    return history


def objective(config: Mapping[str, Any], space: SearchSpace) -> float:
    """Sum of seven terms, each 0 at the optimum and at most about 1.

    Optimum: learning rate 0.01, l2 1e-4, l1 as small as possible, as many conv layers as
    fit, 64 filters per conv layer, batch size 64, 3 px filters.
    """
    n_conv = config["n_conv"]
    filters = [config[f"conv_filters_{i}"] for i in range(n_conv)]
    return (
        (math.log10(config["learning_rate"]) + 2.0) ** 2 / 4
        + abs(math.log10(config["l2"]) + 4.0) / 3
        + (math.log10(config["l1"]) + 7.0) / 4
        + (space["n_conv"].high - n_conv) / max(1, space["n_conv"].high - 1)
        + sum(abs(math.log2(f / 64)) for f in filters) / n_conv / 3
        + abs(math.log2(config["batch_size"] / 64)) / 2
        + 0.5 * (config["filter_size"] != 3)
    )


#: One parameter of every kind a ``conf/space`` file can declare. The CNN space has no
#: plain (not log-scaled) int or float outside its layer counts, and only int choices.
EVERY_KIND = {
    "layers": {"type": "int", "low": 1, "high": 3},
    "width": {"type": "int", "low": 2, "high": 5, "per_layer_of": "layers"},
    "steps": {"type": "int", "low": 1, "high": 4},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-1, "log": True},
    "units": {"type": "int", "low": 1, "high": 4, "log": True},
    "activation": {"type": "categorical", "choices": ["relu", 0.5, 3]},
}


def every_kind_space() -> SearchSpace:
    return build_space(EVERY_KIND, 32)


def every_kind_loss(config: Mapping[str, Any], space: SearchSpace) -> float:
    """0 at 3 layers of width 4, 2 steps, dropout 0.2, rate 0.01, 3 units, choice 0.5."""
    widths = [config[f"width_{i}"] for i in range(config["layers"])]
    return (
        (3 - config["layers"]) / 2 + sum(abs(w - 4) for w in widths) / len(widths) / 2
        + abs(config["steps"] - 2) / 2 + abs(config["dropout"] - 0.2) * 2
        + abs(math.log10(config["rate"]) + 2) + abs(config["units"] - 3) / 2
        + 0.5 * (config["activation"] != 0.5)
    )


def same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal configurations, floats up to rounding."""
    return a.keys() == b.keys() and all(
        math.isclose(a[k], b[k], rel_tol=1e-9) if isinstance(a[k], float) else a[k] == b[k]
        for k in a
    )


def assert_in_space(config: Config, space: SearchSpace) -> None:
    space.validate(config)
    for param in space.active_params(config):
        value = config[param.name]
        expected = {FLOAT: float, INT: int}.get(param.kind)
        assert expected is None or type(value) is expected, (param.name, value, type(value))
        if param.kind == CATEGORICAL:  # the choice itself, not an equal one of another type
            assert any(type(c) is type(value) and c == value for c in param.choices or ()), (param.name, value)


def narrowed(space: SearchSpace) -> SearchSpace:
    """Narrower ranges, fewer choices, a constant, an unreachable layer: as IIS produces."""
    narrower = {
        "learning_rate": Param("learning_rate", FLOAT, low=1e-3, high=2e-2, log=True),
        "batch_size": Param("batch_size", CATEGORICAL, choices=(32, 64)),
        "l1": Param("l1", FLOAT, low=1e-5, high=1e-5, log=True),
        "filter_size": Param("filter_size", CATEGORICAL, choices=(3,)),
        "n_conv": Param("n_conv", INT, low=2, high=3),
        "n_fc": Param("n_fc", INT, low=1, high=2),
    }
    params = []
    for p in space.params:
        if p.name.startswith("conv_filters"):
            p = Param(p.name, INT, low=16, high=64, log=True, active_if=p.active_if)
        params.append(narrower.get(p.name, p))
    return space.with_params(params)


def fixed(p: Param) -> Param:
    """``p`` narrowed to its first value."""
    if p.kind == CATEGORICAL:
        return Param(p.name, CATEGORICAL, choices=(p.choices or ())[:1], active_if=p.active_if)
    return Param(p.name, p.kind, low=p.low, high=p.low, log=p.log, active_if=p.active_if)


# -- how well an optimizer does on the synthetic objective -------------------------------
BUDGET, SEEDS, RANDOM_SEEDS = 30, range(5), range(100, 120)
#: how far below random search's mean best loss an optimizer's must be (random search's
#: own mean best over 5 seeds scatters with a standard deviation of about 0.14)
BEST_MARGIN = 0.2


@cache
def random_search_performance() -> tuple[float, float]:
    return RANDOM.performance(RANDOM_SEEDS)


def learns(best: float, late: float) -> bool:
    """The criterion of learning from losses, relative to random search over 20 other seeds."""
    random_best, random_late = random_search_performance()
    return best < random_best - BEST_MARGIN and late < 0.85 * random_late


class OptimizerContract:
    """What the stage runner relies on, checked for the optimizer of the ``subject`` fixture.

    Whether its proposals improve with the losses it is told is the optimizer class's own
    declaration (``learns_from_losses``), held against random search.
    """

    # -- (a) every proposal of a full run lies in the space -------------------------------
    @pytest.mark.parametrize("resolution", [16, 64])
    def test_proposals_stay_in_space(self, subject: Subject, resolution: int) -> None:
        space = space_at(resolution)
        budget = 20
        history = subject.run(space, budget=budget, seed=3, trials=budget + 2)  # past the budget
        for config, _ in history:
            assert_in_space(config, space)
            assert config["n_conv"] <= space["n_conv"].high
        # the conditional parts were explored, not stuck at one architecture
        assert len({c["n_conv"] for c, _ in history}) > 1
        assert len({c["n_fc"] for c, _ in history}) > 1

    def test_every_kind_of_parameter(self, subject: Subject) -> None:
        space = every_kind_space()
        history = subject.run(space, budget=16, seed=2, loss_of=every_kind_loss)
        for config, _ in history:
            assert_in_space(config, space)
        assert len({c["layers"] for c, _ in history}) > 1
        assert len({c["activation"] for c, _ in history}) > 1

    def test_shipped_settings_work(self, subject: Subject) -> None:
        space = space_at(32)
        for config, _ in subject.run(space, budget=6, seed=0, settings=subject.shipped()):
            assert_in_space(config, space)

    # -- (c) narrowed spaces and initial points, proposed first and in order ---------------
    def test_narrowed_space_and_initial_points(self, subject: Subject) -> None:
        space = narrowed(space_at(32))
        rng = random.Random(123)
        points = [space.sample(rng) for _ in range(3)]
        proposals = [c for c, _ in subject.run(space, budget=12, seed=5, initial_points=points)]
        for config in proposals:
            assert_in_space(config, space)
        assert all(same(p, c) for p, c in zip(points, proposals, strict=False))

    @pytest.mark.parametrize("promoted", [1, 3])
    def test_a_promoted_rung_evaluates_exactly_the_promoted_configurations(self, subject: Subject, promoted: int) -> None:
        # successive halving's later rungs: the promoted configurations fill the budget, so
        # the optimizer proposes them, in order, and is told their losses (no model of its own)
        space = space_at(32)
        rng = random.Random(7)
        points = [space.sample(rng) for _ in range(promoted)]
        proposals = [c for c, _ in subject.run(space, budget=promoted, seed=3, initial_points=points)]
        assert len(proposals) == promoted
        assert all(same(p, c) for p, c in zip(points, proposals, strict=True))

    def test_space_of_two_configurations(self, subject: Subject) -> None:
        # more trials than configurations: SMAC runs out of new ones, the GA of novel children
        space = space_at(16)
        two_sizes = Param("batch_size", CATEGORICAL, choices=(32, 64))
        tiny = space.with_params(
            [two_sizes if p.name == "batch_size" else fixed(p) for p in space.params]
        )
        history = subject.run(tiny, budget=6, seed=0)
        for config, _ in history:
            assert_in_space(config, tiny)
        assert {c["batch_size"] for c, _ in history} == {32, 64}

    # -- (d) an interrupted run resumes exactly -------------------------------------------
    def test_replay_resumes_the_same_sequence(self, subject: Subject) -> None:
        space = space_at(32)
        # 7 of 14: past TPE's random start-up and SMAC's initial design (4 each), and within
        # the GA's second generation (5 individuals, then 3 offspring each)
        budget, done = 14, 7
        uninterrupted = subject.run(space, budget=budget, seed=11)
        resumed = subject.create(space, budget=budget, seed=11)
        resumed.replay(uninterrupted[:done])
        for expected, _ in uninterrupted[done:]:
            config = resumed.ask()
            assert same(config, expected)
            resumed.tell(config, objective(config, space))

    def test_replay_detects_a_different_history(self, subject: Subject) -> None:
        space = space_at(32)
        history = subject.run(space, budget=6, seed=1)
        other = subject.create(space, budget=6, seed=2)
        with pytest.raises(RuntimeError, match="cannot resume"):
            other.replay(history)

    # -- (e) learning from the losses -----------------------------------------------------
    def test_learns_from_losses_as_declared(self, subject: Subject) -> None:
        # Random search's best of 30 averages about 1.5 and its later proposals about 3.0;
        # TPE, the GA and SMAC reach about 1.1-1.2 and 2. The criterion is checked against
        # random search itself too, so it is one that an optimizer ignoring losses fails.
        declared = algorithm(subject.name, subject.shipped()).learns_from_losses
        assert learns(*subject.performance(SEEDS)) == declared


class TestEveryOptimizer(OptimizerContract):
    """The contract for every optimizer of ``conf/optimizer/``, found there."""

    @pytest.fixture(params=NAMES)
    def subject(self, request: pytest.FixtureRequest) -> Subject:
        return Subject(request.param)


class TestRandomSearch:

    def test_every_value_of_an_int_range_is_drawn_as_often_as_its_scale_says(self) -> None:
        # a plain int: each of 1..4 a quarter of the draws, the end points included; a
        # log-scaled one: each integer v its share of the log range [0.5, 4.5],
        # log((v + 0.5) / (v - 0.5)) / log(9), so 1 about half of the draws
        space, n = every_kind_space(), 800
        draws = [c for c, _ in RANDOM.run(space, budget=n, seed=0, loss_of=every_kind_loss)]
        steps, units = Counter(c["steps"] for c in draws), Counter(c["units"] for c in draws)
        for value in range(1, 5):
            assert steps[value] / n == pytest.approx(0.25, abs=0.05), steps
            share = math.log((value + 0.5) / (value - 0.5)) / math.log(9)
            assert units[value] / n == pytest.approx(share, abs=0.05), units
        dropouts = [c["dropout"] for c in draws]
        assert statistics.mean(dropouts) == pytest.approx(0.25, abs=0.02)
        assert min(dropouts) < 0.01 and max(dropouts) > 0.49

    def test_the_first_proposals_of_a_seed_stay_the_same(self) -> None:
        # a finished study resumes by replaying its stored trials: a change that draws
        # other configurations for the same seed makes every stored run refuse to resume
        # (recorded with hyperopt 0.3.0, the version of requirements.lock)
        expected = [
            {"learning_rate": 0.000269851, "batch_size": 64, "l1": 1.56838e-07, "l2": 0.00908253, "filter_size": 7,
             "n_conv": 2, "n_fc": 1, "conv_filters_0": 38, "conv_filters_1": 31, "fc_units_0": 46},
            {"learning_rate": 0.00288301, "batch_size": 64, "l1": 2.82321e-06, "l2": 1.90156e-06, "filter_size": 7,
             "n_conv": 2, "n_fc": 1, "conv_filters_0": 208, "conv_filters_1": 69, "fc_units_0": 299},
            {"learning_rate": 0.000326675, "batch_size": 16, "l1": 1.97432e-07, "l2": 5.93511e-06, "filter_size": 3,
             "n_conv": 1, "n_fc": 1, "conv_filters_0": 141, "fc_units_0": 22},
        ]
        proposals = [c for c, _ in RANDOM.run(space_at(16), budget=3, seed=0)]
        assert [c.keys() for c in proposals] == [e.keys() for e in expected]
        for config, recorded in zip(proposals, expected, strict=True):
            assert config == pytest.approx(recorded, rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_the_libraries_info_lines_stay_out_of_the_stage_log(
    name: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hyperopt and SMAC log several INFO lines per proposal; the stage log reports progress
    # itself. The optimizer quiets them when it is built: not left to an earlier one.
    for library in ("hyperopt", "smac"):
        logger = logging.getLogger(library)
        monkeypatch.setattr(logger, "level", logger.level)  # restored afterwards
        logger.setLevel(logging.NOTSET)  # which also clears the loggers' cached levels
    root = logging.getLogger()
    handlers = list(root.handlers)
    caplog.set_level(logging.INFO)
    Subject(name).run(space_at(16), budget=8, seed=0)
    assert (root.level, root.handlers) == (logging.INFO, handlers)  # the root logger is left as it was
    chatter = [r for r in caplog.records if r.levelno < logging.WARNING and r.name.split(".")[0] in ("hyperopt", "smac")]
    assert not chatter, [r.getMessage() for r in chatter[:3]]


class TestTPE:

    @pytest.mark.parametrize(("budget", "expected"), [(2, 2), (4, 3), (12, 3), (20, 5), (1500, 375)])
    def test_startup_count(self, budget: int, expected: int) -> None:
        # shipped: max(min_startup=3, ceil(0.25 * budget)), at most the budget
        assert TPE_.shipped().n_startup(budget) == expected  # type: ignore[attr-defined]
        optimizer = TPE_.create(space_at(16), budget=budget, seed=0, settings=TPE_.shipped())
        assert isinstance(optimizer, TPE) and optimizer.n_startup == expected

    def test_model_is_fitted_on_the_best_and_the_most_recent_beyond_max_history(self) -> None:
        space, budget, limit = space_at(16), 80, 50
        settings = TPE_.settings(max_history=limit)
        tpe = TPE_.create(space, budget=budget, seed=6, settings=settings)
        assert isinstance(tpe, TPE)
        losses = []
        for told in range(budget):
            trials, gamma = tpe.model_history()
            if told <= limit:  # the whole history, hyperopt's own gamma
                assert trials is tpe._trials and gamma == settings.gamma
            config = tpe.ask()
            losses.append(objective(config, space))
            tpe.tell(config, losses[-1])
        trials, gamma = tpe.model_history()
        best = sorted(range(budget), key=lambda t: (losses[t], t))[:25]
        recent = [t for t in range(budget - 1, -1, -1) if t not in best][: limit - 25]
        assert [doc["tid"] for doc in trials.trials] == sorted(best + recent)
        assert [doc["result"]["loss"] for doc in trials.trials] == [losses[t] for t in sorted(best + recent)]
        # hyperopt's good group: ceil(gamma * sqrt(n)) of n trials, as for all 80 (3), not 50 (2)
        assert math.ceil(gamma * math.sqrt(limit)) == math.ceil(0.25 * math.sqrt(budget)) == 3

    def test_the_kept_best_trials_are_as_many_as_hyperopts_good_group_cap(self) -> None:
        from hyperopt import tpe

        assert TPE_GOOD_CAP == tpe.DEFAULT_LF == 25

    def test_startup_proposals_are_random_search_then_the_model_takes_over(self) -> None:
        space, budget = space_at(16), 20
        n_startup = TPE_.shipped().n_startup(budget)  # type: ignore[attr-defined]
        assert n_startup == 5
        tpe = TPE_.run(space, budget=budget, seed=4)
        rand = RANDOM.run(space, budget=budget, seed=4)
        assert all(same(t, r) for (t, _), (r, _) in zip(tpe[:n_startup], rand[:n_startup], strict=True))
        assert not any(same(t, r) for (t, _), (r, _) in zip(tpe[n_startup:], rand[n_startup:], strict=True))


    @pytest.mark.parametrize("change", [{"gamma": 0.5}, {"n_ei_candidates": 4}])
    def test_the_model_settings_reach_hyperopt(self, change: dict[str, Any]) -> None:
        # the shipped values are hyperopt's defaults: a setting it never received would not
        # show with them
        space, budget = space_at(16), 12
        n_startup = TPE_.shipped().n_startup(budget)  # type: ignore[attr-defined]
        shipped = TPE_.run(space, budget=budget, seed=5)
        changed = TPE_.run(space, budget=budget, seed=5, settings=TPE_.settings(**change))
        pairs = list(zip(shipped, changed, strict=True))
        assert all(same(a, b) for (a, _), (b, _) in pairs[:n_startup])
        assert not all(same(a, b) for (a, _), (b, _) in pairs[n_startup:])


class TestGeneticAlgorithm:
    @pytest.mark.parametrize(("budget", "population", "elites"), [(3, 3, 2), (12, 5, 2), (100, 20, 2), (1000, 30, 2)])
    def test_population_is_clamped(self, budget: int, population: int, elites: int) -> None:
        # shipped: clamp(round(0.2 * budget), 5, 30), at most the budget; 2 elites
        settings = GA.shipped()
        assert settings.population_size(budget) == population
        assert settings.elites(budget) == elites
        assert GA.settings(n_elite=5).elites(3) == 2  # one offspring at least

    def test_elites_are_not_trained_again(self) -> None:
        space, budget = space_at(32), 30
        settings = GA.settings()
        population, elites = settings.population_size(budget), settings.elites(budget)
        assert (population, elites) == (6, 2)
        ga = GA.create(space, budget=budget, seed=2, settings=settings)
        seen = []
        for _ in range(population + (population - elites) + 1):
            config = ga.ask()
            seen.append(config)
            ga.tell(config, objective(config, space))
            if len(seen) == population + (population - elites):
                assert ga.generation == 1  # type: ignore[attr-defined]
        # generation 2 asked only for its offspring: the third generation began right after
        assert ga.generation == 2  # type: ignore[attr-defined]
        keys = [tuple(sorted(c.items())) for c in seen]
        assert len(set(keys)) == len(keys)  # no configuration was proposed twice

    def test_a_child_like_an_earlier_proposal_is_mutated_again(self) -> None:
        # no crossover, no mutation: every offspring is a copy of a parent until it is made new
        space, budget = space_at(16), 20
        history = GA.run(space, budget=budget, seed=3, settings=GA.settings(crossover_prob=0.0, gene_mutation_prob=0.0))
        keys = [tuple(sorted(c.items())) for c, _ in history]
        assert len(set(keys)) == len(keys) == budget

    def test_offspring_are_crossed_in_disjoint_pairs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        space, budget = space_at(16), 40
        settings = GA.settings(crossover_prob=1.0)
        population, elites = settings.population_size(budget), settings.elites(budget)
        assert population - elites == 6  # offspring: three pairs
        ga = GA.create(space, budget=budget, seed=1, settings=settings)
        crossed: list[tuple[int, int]] = []
        crossover = ga._crossover  # type: ignore[attr-defined]
        monkeypatch.setattr(ga, "_crossover", lambda a, b: (crossed.append((id(a), id(b))), crossover(a, b)))
        for _ in range(population + 1):  # the last ask breeds the second generation
            config = ga.ask()
            ga.tell(config, objective(config, space))
        offspring = ga._population[elites:]  # type: ignore[attr-defined]
        assert len(crossed) == 3
        assert sorted(i for pair in crossed for i in pair) == sorted(id(child) for child in offspring)

    def test_a_nan_loss_ranks_last_like_an_infinite_one(self) -> None:
        space, budget = space_at(16), 20

        def proposals(bad: float) -> list[Config]:
            """A run told ``bad`` for every third proposal."""
            ga = GA.create(space, budget=budget, seed=4)
            seen = []
            for number in range(budget):
                config = ga.ask()
                seen.append(config)
                ga.tell(config, bad if number % 3 == 0 else objective(config, space))
            return seen

        assert proposals(math.nan) == proposals(math.inf)
        assert proposals(math.inf) != proposals(0.0)  # those losses do steer the search

    def test_a_categorical_gene_moves_to_another_choice_each_as_likely(self) -> None:
        param, rng = Param("batch_size", CATEGORICAL, choices=(16, 32, 64, 128)), random.Random(0)
        moved = Counter(_mutate_gene(param, 32, 0.05, rng) for _ in range(3000))
        assert set(moved) == {16, 64, 128}
        assert all(count / 3000 == pytest.approx(1 / 3, abs=0.03) for count in moved.values())
        assert _mutate_gene(Param("one", CATEGORICAL, choices=(3,)), 3, 0.05, rng) == 3

    def test_a_numeric_gene_moves_by_the_draw_of_its_generator(self) -> None:
        # plus the Gaussian draw, not minus: the same seed, the same offspring (replay)
        param, middle = Param("momentum", FLOAT, low=0.0, high=2.0), 1.0
        step = random.Random(5).gauss(0.0, 0.05)
        assert _mutate_gene(param, middle, 0.05, random.Random(5)) == pytest.approx(param.from_unit(0.5 + step))
        assert step != 0.0

    @pytest.mark.parametrize("param", [
        Param("momentum", FLOAT, low=0.0, high=2.0), Param("lr", FLOAT, low=1e-4, high=1e-2, log=True),
    ])
    def test_a_numeric_gene_moves_by_a_gaussian_step_of_sigma_times_its_range(self, param: Param) -> None:
        # the middle of the range, on the parameter's own scale, and steps far from its ends
        middle, sigma, rng = param.from_unit(0.5), 0.05, random.Random(0)
        steps = [param.to_unit(_mutate_gene(param, middle, sigma, rng)) - 0.5 for _ in range(4000)]
        assert abs(statistics.mean(steps)) < 0.005
        assert statistics.stdev(steps) == pytest.approx(sigma, rel=0.05)


class TestSMAC:

    @pytest.mark.parametrize(("budget", "points", "expected"), [(4, 0, 3), (12, 0, 3), (12, 2, 3), (30, 0, 8), (4, 2, 2)])
    def test_initial_design_size(self, budget: int, points: int, expected: int) -> None:
        # shipped: max(min_initial=3, ceil(0.25 * budget)), at most what the points leave
        assert SMAC.shipped().n_initial(budget, points) == expected  # type: ignore[attr-defined]

    def test_initial_design_comes_first_then_the_model(self) -> None:
        space, budget = space_at(16), 12
        settings = SMAC.settings()
        n_initial = settings.n_initial(budget, 0)
        smac = SMAC.create(space, budget=budget, seed=0, settings=settings)
        origins = []
        for _ in range(budget):
            config = smac.ask()
            origins.append(smac._pending.config.origin)  # type: ignore[attr-defined]
            smac.tell(config, objective(config, space))
        assert all("Initial Design" in o for o in origins[:n_initial]), origins
        assert not any("Initial Design" in o for o in origins[n_initial:]), origins

    def test_forest_is_refitted_on_a_schedule_that_stretches_with_the_history(self) -> None:
        space, budget = space_at(16), 40
        settings = SMAC.settings(retrain_scale=5)
        smac = SMAC.create(space, budget=budget, seed=1, settings=settings)
        model = smac._smac._model  # type: ignore[attr-defined]
        fitted_on: list[int] = []
        train = model.train
        model.train = lambda X, Y: (fitted_on.append(len(X)), train(X, Y))[1]
        drive(smac, space, budget)
        # after the 10 initial points: a fit every max(1, n // 5) trials of n told
        assert settings.n_initial(budget, 0) == 10
        assert fitted_on == [10, 12, 14, 16, 19, 22, 26, 31, 37]

    def test_forest_is_fitted_on_at_most_max_history_trials(self) -> None:
        space, budget = space_at(16), 30
        smac = SMAC.create(space, budget=budget, seed=2, settings=SMAC.settings(max_history=12))
        model = smac._smac._model  # type: ignore[attr-defined]
        fits: list[tuple[int, int]] = []
        train = model.train

        def train_and_record(X: Any, Y: Any) -> Any:
            fitted = train(X, Y)
            fits.append((len(X), len(model._rf.trainX)))
            return fitted

        model.train = train_and_record
        drive(smac, space, budget)
        # the schedule still counts every trial; the forest sees at most 12 of them
        assert [told for told, _ in fits] == list(range(8, budget))
        assert [fitted for _, fitted in fits] == [min(told, 12) for told, _ in fits]

    def test_model_rows_are_the_best_half_and_the_most_recent(self) -> None:
        import numpy as np

        from iishpo.optimizers.smac_search import model_rows

        costs = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.5, 0.4, 0.95])
        assert model_rows(costs[:6], 6).tolist() == list(range(6))
        # the 3 best (rows 1, 3, 5), then the 3 most recent others
        assert model_rows(costs, 6).tolist() == [1, 3, 5, 7, 8, 9]
        assert model_rows(costs, 7).tolist() == [1, 3, 5, 6, 7, 8, 9]
        # the most recent trial is among the best: an older one takes its place among the recent
        costs = np.array([0.9, 0.1, 0.8, 0.7, 0.6, 0.2, 0.5, 0.05])
        assert model_rows(costs, 4).tolist() == [1, 5, 6, 7]

    def test_the_random_fallback_draws_a_configuration_not_evaluated_yet(self) -> None:
        # what SMAC proposes once it runs out of new configurations or repeats itself: a
        # draw from the space, one not evaluated while there is any
        space = space_at(16)
        sizes = Param("batch_size", CATEGORICAL, choices=(16, 32, 64, 128))
        tiny = space.with_params([sizes if p.name == "batch_size" else fixed(p) for p in space.params])
        smac = SMAC.create(tiny, budget=8, seed=0)
        told = set()
        for _ in range(3):
            config = smac.ask()
            smac.tell(config, objective(config, tiny))
            told.add(config["batch_size"])
        assert len(told) == 3
        drawn = smac._random_new_config()  # type: ignore[attr-defined]
        assert_in_space(drawn, tiny)
        assert {drawn["batch_size"]} == {16, 32, 64, 128} - told

    @pytest.mark.parametrize("change", [{"challengers": 50}, {"random_probability": 0.9}])
    def test_the_acquisition_settings_reach_smac(self, change: dict[str, Any]) -> None:
        space, budget = space_at(16), 12
        n_initial = SMAC.settings().n_initial(budget, 0)  # type: ignore[attr-defined]
        before = SMAC.run(space, budget=budget, seed=5)
        after = SMAC.run(space, budget=budget, seed=5, settings=SMAC.settings(**change))
        pairs = list(zip(before, after, strict=True))
        assert all(same(a, b) for (a, _), (b, _) in pairs[:n_initial])
        assert not all(same(a, b) for (a, _), (b, _) in pairs[n_initial:])

    def test_the_forest_is_the_facades_single_threaded_without_a_leaf_cap(self) -> None:
        from smac import HyperparameterOptimizationFacade

        smac = SMAC.create(space_at(16), budget=8, seed=3)
        ours = smac._smac._model  # type: ignore[attr-defined]
        facades = HyperparameterOptimizationFacade.get_model(smac._smac._scenario)  # type: ignore[attr-defined]
        differing = {k for k in ours._rf_opts if ours._rf_opts[k] != facades._rf_opts[k]}
        assert differing == {"n_jobs", "max_leaf_nodes"}
        assert (ours._rf_opts["n_jobs"], ours._rf_opts["max_leaf_nodes"]) == (1, None)
        assert ours._log_y is facades._log_y is True

    def test_a_proposal_is_the_configuration_smac_chose(self) -> None:
        space = every_kind_space()
        smac = SMAC.create(space, budget=12, seed=4)
        for _ in range(12):
            config = smac.ask()
            chosen = smac._pending.config  # type: ignore[attr-defined]
            assert {name: chosen[name] for name in chosen} == pytest.approx(config)
            smac.tell(config, every_kind_loss(config, space))

    def test_the_predicted_best_is_the_one_smac_finds(self) -> None:
        # ours predicts all evaluated configurations at once; SMAC's own one at a time
        import numpy as np
        from smac.main.config_selector import ConfigSelector

        space, budget = space_at(16), 14
        smac = SMAC.create(space, budget=budget, seed=6)
        selector = smac._smac._config_selector  # type: ignore[attr-defined]
        asked: list[Any] = []
        ours = selector._get_x_best
        selector._get_x_best = lambda X: (asked.append(X), ours(X))[1]
        drive(smac, space, budget)
        assert len(asked) >= 5
        positions = []
        for X in asked:
            (mine, mine_cost), (theirs, theirs_cost) = ours(X), ConfigSelector._get_x_best(selector, X)
            assert np.array_equal(mine, theirs, equal_nan=True) and mine_cost == theirs_cost
            positions.append(next(i for i, row in enumerate(X) if np.array_equal(row, theirs, equal_nan=True)))
        assert any(positions)  # not always the first evaluated one

    def test_the_configspace_has_the_spaces_log_scales(self) -> None:
        from iishpo.optimizers.smac_search import build_configspace

        space = every_kind_space()
        configspace = build_configspace(space)
        numeric = [p for p in space.params if p.kind != CATEGORICAL]
        assert {p.name: configspace[p.name].log for p in numeric} == {p.name: p.log for p in numeric}
        assert any(p.log for p in numeric if p.kind == INT)

    def test_the_acquisition_search_is_seeded_by_the_run(self) -> None:
        smac = SMAC.create(space_at(16), budget=8, seed=7)
        maximizer = smac._smac._config_selector._acquisition_maximizer  # type: ignore[attr-defined]
        searches = (maximizer, maximizer._random_search, maximizer._local_search)
        assert [search._seed for search in searches] == [7, 7, 7]

    @pytest.mark.parametrize("loss", [math.inf, math.nan])
    def test_a_loss_that_is_not_finite_is_refused(self, loss: float) -> None:
        smac = SMAC.create(space_at(16), budget=4, seed=0)
        config = smac.ask()
        message = (f"smac: the loss must be finite, got {loss}; report a failed trial as the worst "
                   "finite loss (the stage runner tells 1.0)")
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            smac.tell(config, loss)

    def test_smac_writes_nothing_outside_its_temporary_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        (tmp_path / "tmp").mkdir()
        smac = SMAC.create(space_at(16), budget=6, seed=0)
        drive(smac, space_at(16), 6)
        assert [p.name for p in tmp_path.iterdir()] == ["tmp"]
        (private,) = (tmp_path / "tmp").iterdir()
        assert private.name.startswith("iishpo-smac-")
        del smac
        gc.collect()
        assert not any((tmp_path / "tmp").iterdir())  # removed with the optimizer

    def test_max_history_is_validated(self) -> None:
        raw = yaml.safe_load((CONF / "optimizer" / "smac.yaml").read_text())
        with pytest.raises(ValueError, match=r"max_history must be >= 2 .*got 1"):
            build_settings("smac", {**raw, "max_history": 1})

    def test_forest_leaves_are_smacs_to_the_last_bit(self) -> None:
        import numpy as np
        from smac.model.random_forest.random_forest import EPMRandomForest

        from iishpo.optimizers.smac_search import _DirectForest

        rng = np.random.default_rng(0)
        X = np.column_stack([rng.random(300), rng.choice([0.0, 0.5, 1.0], 300), rng.random(300)])
        X[100:140] = X[0]  # a leaf of many equal points
        log_costs = np.log(0.05 + rng.random(300))
        log_costs[200:260] = log_costs[0]  # equal costs: leaves of different points
        options: dict[str, Any] = {
            "n_estimators": 5, "max_features": 1.0, "min_samples_split": 2, "min_samples_leaf": 1,
            "max_depth": 2**20, "max_leaf_nodes": None, "bootstrap": True, "random_state": 3,
            "n_jobs": 1, "log_y": True,
        }
        smacs, ours = EPMRandomForest(**options), _DirectForest(**options)
        smacs.fit(X, log_costs)
        ours.fit(X, log_costs)
        assert max(np.bincount(tree.apply(X.astype(np.float32))).max() for tree in ours.estimators_) > 5
        for theirs, mine in zip(smacs.estimators_, ours.estimators_, strict=True):
            assert theirs.tree_.value.tobytes() == mine.tree_.value.tobytes()

    def test_cost_bounds_are_smacs_recomputation(self) -> None:
        from ConfigSpace import Configuration, ConfigurationSpace, Float
        from smac.runhistory.enumerations import StatusType
        from smac.runhistory.runhistory import RunHistory

        from iishpo.optimizers.smac_search import _IncrementalBoundsRunHistory

        space = ConfigurationSpace({"x": Float("x", (0.0, 1.0))})
        ours, smacs = _IncrementalBoundsRunHistory(), RunHistory()
        trials = [  # (x, cost, status, overwrite): running, then done; a crash; a rerun
            (0.1, 0.0, StatusType.RUNNING, False),
            (0.1, 0.5, StatusType.SUCCESS, True),
            (0.2, 0.7, StatusType.SUCCESS, False),
            (0.3, 0.0, StatusType.RUNNING, False),
            (0.3, 0.2, StatusType.CRASHED, True),
            (0.4, 0.9, StatusType.SUCCESS, False),
            (0.4, 0.6, StatusType.SUCCESS, True),  # the highest cost replaced: the bound must fall
            (0.5, 0.3, StatusType.SUCCESS, False),
        ]
        for x, cost, status, overwrite in trials:
            for history in (ours, smacs):
                config = Configuration(space, values={"x": x})
                history.add(config, cost, status=status, seed=0, force_update=overwrite)
            assert ours.objective_bounds == smacs.objective_bounds
        assert ours.objective_bounds == [(0.3, 0.7)]


# -- (b) reproducible across processes, seed-dependent ----------------------------------
def proposals_in_subprocess(
    resolution: int, budget: int, seeds: Sequence[int], hash_seed: str
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    command = [sys.executable, __file__, str(resolution), str(budget), *map(str, seeds)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def test_same_seed_same_proposals_in_other_processes() -> None:
    # The workflow fixes PYTHONHASHSEED=0; different values here show that no optimizer
    # depends on it (SMAC did, through the order of a set of configurations).
    first = proposals_in_subprocess(32, 10, [7, 8], hash_seed="0")
    second = proposals_in_subprocess(32, 10, [7], hash_seed="1")
    outputs = [first.communicate(timeout=300)[0], second.communicate(timeout=300)[0]]
    assert first.returncode == 0 and second.returncode == 0
    one, two = (json.loads(out) for out in outputs)
    assert sorted(one) == sorted(two) == NAMES
    for name in NAMES:
        assert one[name]["7"] == two[name]["7"], name
        assert one[name]["7"] != one[name]["8"], name


@pytest.mark.parametrize(("path", "missing", "package"), [
    ("no_such_library.search.Optimizer", "no_such_library", "no_such_library"),
    ("hyperopt.no_such_module.Search", "hyperopt.no_such_module", "hyperopt"),  # a part of one
])
def test_a_missing_library_is_named_when_a_stage_builds_the_optimizer(path: str, missing: str, package: str) -> None:
    @dataclass(frozen=True)
    class Elsewhere(OptimizerSettings):
        algorithm: ClassVar[str] = path

    message = (f"optimizer 'x' ({path}) needs '{missing}', which is not installed: pip install {package}")
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
        create_optimizer("x", space_at(16), budget=2, seed=0, settings=Elsewhere())


def test_a_budget_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^budget must be >= 1, got 0$"):
        RANDOM.create(space_at(16), budget=0, seed=0)


@pytest.mark.parametrize("name", ["random", "tpe", "ga", "smac"])
def test_a_tell_without_an_ask_is_refused(name: str) -> None:
    optimizer = Subject(name).create(space_at(16), budget=4, seed=0)
    message = r"^tell\(\) without a preceding ask\(\)$"
    with pytest.raises(RuntimeError, match=message):
        optimizer.tell({}, 0.5)
    config = optimizer.ask()
    optimizer.tell(config, 0.5)
    with pytest.raises(RuntimeError, match=message):  # that ask is answered already
        optimizer.tell(config, 0.5)


@pytest.mark.parametrize("name", ["ga", "smac"])
def test_asking_twice_without_a_tell_is_refused(name: str) -> None:
    optimizer = Subject(name).create(space_at(16), budget=4, seed=0)
    optimizer.ask()
    with pytest.raises(RuntimeError, match=r"^ask\(\) called twice without tell\(\) in between$"):
        optimizer.ask()


class Scripted(Optimizer[RandomSettings]):
    """Proposes the configurations it was given, in order, and learns nothing."""

    learns_from_losses = False

    def __init__(self, proposals: Sequence[Config]) -> None:
        super().__init__(space_at(16), budget=len(proposals), seed=0, settings=RandomSettings())
        self.proposals = list(proposals)

    def ask(self) -> Config:
        return self.proposals.pop(0)

    def tell(self, config: Config, loss: float) -> None:
        """Nothing to learn."""


@pytest.mark.parametrize(("proposed", "stored", "resumes"), [
    ({"lr": 0.1, "n_fc": 2}, {"lr": 0.1 * (1 + 1e-12), "n_fc": 2}, True),  # a float's rounding
    ({"lr": 1000.0}, {"lr": 1000.0 + 5e-7}, True),  # 1e-9 of the value beyond 1 ...
    ({"lr": 0.001}, {"lr": 0.001 + 1.5e-9}, False),  # ... 1e-9 below
    ({"lr": 0.1}, {"lr": 0.1 + 1e-6}, False),
    ({"n_fc": 3}, {"n_fc": 3.0 + 1e-12}, True),  # an int against a float: compared as floats
    ({"n_fc": 2, "lr": 0.1}, {"n_fc": 3, "lr": 0.1}, False),  # another value that is no float
    ({"n_fc": 2}, {"n_fc": 2, "lr": 0.1}, False),  # another parameter
])
def test_replay_accepts_a_stored_trial_equal_up_to_float_rounding(
    proposed: Config, stored: Config, resumes: bool
) -> None:
    """A stored float went through JSON and an optimizer's arithmetic: equal within 1e-9
    relative (absolute below 1); any other value must be equal."""
    optimizer = Scripted([proposed])
    if resumes:
        optimizer.replay([(stored, 0.5)])
        return
    message = (
        f"cannot resume: trial 0 in the store was {stored}, but the optimizer now proposes "
        f"{proposed}. The seed, search space or optimizer settings differ from the run that "
        "wrote the store; delete the store to start over."
    )
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        optimizer.replay([(stored, 0.5)])


def test_an_optimizer_file_without_its_settings_class_is_named(tmp_path: Path) -> None:
    conf = shutil.copytree(CONF, tmp_path / "conf")
    (conf / GROUP / "broken.yaml").write_text("population: 3\n")
    registry = Registry(conf)
    message = (r"^optimizer/broken.yaml: _target_ must name the optimizer's settings class as "
               r"'module.Class' \(a subclass of iishpo.optimizers.settings.OptimizerSettings\), got None$")
    with pytest.raises(SettingsError, match=message):
        registry["broken"]


# -- an optimizer added by the README's recipe: its module and its YAML, nothing else -----
SOBOL_MODULE = '''"""Sobol points over the search space (scipy.stats.qmc)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from iishpo.optimizers import Optimizer, OptimizerSettings
from iishpo.search.space import CATEGORICAL, Config


@dataclass(frozen=True)
class SobolSettings(OptimizerSettings):
    algorithm: ClassVar[str] = "sobol_search.Sobol"
    scramble: bool


class Sobol(Optimizer[SobolSettings]):
    """The initial points, then the points of a Sobol sequence, one coordinate per
    parameter of the space."""

    learns_from_losses = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from scipy.stats import qmc  # its library: imported when a stage builds it

        self._sequence = qmc.Sobol(len(self.space.params), scramble=self.settings.scramble, seed=self.seed)
        self._asked = 0

    def ask(self) -> Config:
        self._asked += 1
        if self._asked <= len(self.initial_points):
            return dict(self.initial_points[self._asked - 1])
        config: Config = {}
        for p, u in zip(self.space.params, self._sequence.random(1)[0]):
            if p.is_active(config):
                if p.kind == CATEGORICAL:
                    config[p.name] = p.choices[min(int(u * len(p.choices)), len(p.choices) - 1)]
                else:
                    config[p.name] = p.from_unit(float(u))
        return config

    def tell(self, config: Config, loss: float) -> None:
        """A sequence fixed in advance learns nothing."""
'''
SOBOL_YAML = """# A scrambled Sobol sequence (scipy.stats.qmc), its scrambling seeded by the stage.
_target_: sobol_search.SobolSettings
scramble: true
"""


def add_sobol(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The recipe: the module (here on the path from ``folder``) and ``optimizer/sobol.yaml``
    in a copy of conf/, which this returns."""
    conf = shutil.copytree(CONF, folder / "conf")
    (conf / GROUP / "sobol.yaml").write_text(SOBOL_YAML)
    (folder / "sobol_search.py").write_text(SOBOL_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    return conf


class TestAnAddedOptimizer(OptimizerContract):
    """An optimizer added as the README says: the configuration composes and checks it,
    a study runs it, and the contract holds for it."""

    @pytest.fixture
    def subject(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Subject:
        return Subject("sobol", add_sobol(tmp_path, monkeypatch))

    def test_the_configuration_composes_checks_and_builds_it(self, subject: Subject) -> None:
        assert "sobol" in Registry(subject.conf) and "sobol" not in NAMES
        files = sorted(path.stem for path in (subject.conf / GROUP).glob("*.yaml"))
        assert list(Registry(subject.conf)) == files and len(Registry(subject.conf)) == len(NAMES) + 1
        settings = load_settings(["study=smoke", "study.optimizers=[sobol,random]"], config_dir=subject.conf)
        assert type(settings.optimizers["sobol"]).__name__ == "SobolSettings"
        assert settings.optimizers["sobol"] == subject.shipped()
        check_optimizers(settings)  # what `iishpo check` does: build it on the study's space, ask once
        with pytest.raises(ConfigError, match=r"optimizers.sobol.scramble must be true or false, got 'often'"):
            load_settings(["optimizers.sobol.scramble=often"], config_dir=subject.conf)
        with pytest.raises(ConfigError, match=r"optimizers.sobol: unknown keys \['seed'\]"):
            load_settings(["+optimizers.sobol.seed=3"], config_dir=subject.conf)


def main(argv: Sequence[str]) -> None:
    resolution, budget, *seeds = map(int, argv)
    space = space_at(resolution)
    out = {
        name: {str(s): [c for c, _ in Subject(name).run(space, budget=budget, seed=s)] for s in seeds}
        for name in NAMES
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
