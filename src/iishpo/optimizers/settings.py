"""Typed settings of every optimizer, checked when the configuration is loaded.

The values (and their comments) live in ``conf/optimizer/<name>.yaml``, the only place a
default is written; its ``_target_`` names a subclass of :class:`OptimizerSettings`, which
gives each key its type and allowed range, so a typo or an impossible value fails before
any job runs. The shipped optimizers' classes are here, apart from their algorithms: they
import no optimization library, so the Snakefile validates settings without paying for
hyperopt or SMAC (5 s). The numbers each algorithm derives from its settings and the stage
budget (TPE's random start-up, the GA's population, SMAC's initial design) are computed
here, where they can be tested on their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

#: hyperopt's cap on the size of TPE's good group (``hyperopt.tpe.DEFAULT_LF``, not
#: imported here): the best trials TPE keeps when it bounds its history
TPE_GOOD_CAP = 25


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class OptimizerSettings:
    """Base of every optimizer's settings: its fields are the keys of its YAML file."""

    #: the :class:`~iishpo.optimizers.base.Optimizer` subclass these settings are for, as
    #: ``"module.Class"``: imported only when a stage builds the optimizer, so that checking
    #: the configuration does not import the algorithm's library
    algorithm: ClassVar[str]


@dataclass(frozen=True)
class RandomSettings(OptimizerSettings):
    """Random search has no settings."""

    algorithm: ClassVar[str] = "iishpo.optimizers.hyperopt_search.RandomSearch"


@dataclass(frozen=True)
class TPESettings(OptimizerSettings):
    """hyperopt's TPE; see ``conf/optimizer/tpe.yaml``."""

    algorithm: ClassVar[str] = "iishpo.optimizers.hyperopt_search.TPE"

    startup_fraction: float
    min_startup: int
    gamma: float
    n_ei_candidates: int
    max_history: int

    def __post_init__(self) -> None:
        _check(0 <= self.startup_fraction <= 1, f"startup_fraction must be in [0, 1], got {self.startup_fraction}")
        _check(self.min_startup >= 1, f"min_startup must be >= 1, got {self.min_startup}")
        _check(0 < self.gamma < 1, f"gamma must be in (0, 1), got {self.gamma}")
        _check(self.n_ei_candidates >= 1, f"n_ei_candidates must be >= 1, got {self.n_ei_candidates}")
        _check(
            self.max_history >= 2 * TPE_GOOD_CAP,
            f"max_history must be >= {2 * TPE_GOOD_CAP} (the {TPE_GOOD_CAP} best trials, as many recent ones), "
            f"got {self.max_history}",
        )

    def n_startup(self, budget: int) -> int:
        """Random proposals before the density model: ``max(min_startup, ceil(fraction * budget))``."""
        return min(budget, max(self.min_startup, math.ceil(self.startup_fraction * budget)))


@dataclass(frozen=True)
class GASettings(OptimizerSettings):
    """The genetic algorithm (DEAP); see ``conf/optimizer/ga.yaml``."""

    algorithm: ClassVar[str] = "iishpo.optimizers.genetic.GeneticAlgorithm"

    population_fraction: float
    min_population: int
    max_population: int
    n_elite: int
    tournament_size: int
    crossover_prob: float
    gene_swap_prob: float
    gene_mutation_prob: float
    mutation_sigma: float

    def __post_init__(self) -> None:
        _check(self.population_fraction > 0, f"population_fraction must be > 0, got {self.population_fraction}")
        _check(
            2 <= self.min_population <= self.max_population,
            f"need 2 <= min_population <= max_population, got {self.min_population} and {self.max_population}",
        )
        _check(self.n_elite >= 0, f"n_elite must be >= 0, got {self.n_elite}")
        _check(self.tournament_size >= 1, f"tournament_size must be >= 1, got {self.tournament_size}")
        for name in ("crossover_prob", "gene_swap_prob", "gene_mutation_prob"):
            value = getattr(self, name)
            _check(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        _check(self.mutation_sigma > 0, f"mutation_sigma must be > 0, got {self.mutation_sigma}")

    def population_size(self, budget: int) -> int:
        """``clamp(round(fraction * budget), min_population, max_population)``, at most the budget."""
        scaled = max(self.min_population, min(self.max_population, round(self.population_fraction * budget)))
        return min(budget, scaled)

    def elites(self, budget: int) -> int:
        """Elites per generation: at least one offspring must remain."""
        return min(self.n_elite, self.population_size(budget) - 1)


@dataclass(frozen=True)
class SMACSettings(OptimizerSettings):
    """SMAC3's hyperparameter-optimization facade; see ``conf/optimizer/smac.yaml``."""

    algorithm: ClassVar[str] = "iishpo.optimizers.smac_search.SMAC"

    initial_fraction: float
    min_initial: int
    retrain_after: int
    retrain_scale: int
    max_history: int
    random_probability: float
    challengers: int
    local_search_iterations: int

    def __post_init__(self) -> None:
        _check(0 <= self.initial_fraction <= 1, f"initial_fraction must be in [0, 1], got {self.initial_fraction}")
        _check(self.min_initial >= 1, f"min_initial must be >= 1, got {self.min_initial}")
        _check(self.retrain_after >= 1, f"retrain_after must be >= 1, got {self.retrain_after}")
        _check(self.retrain_scale >= 1, f"retrain_scale must be >= 1, got {self.retrain_scale}")
        _check(
            self.max_history >= 2,
            f"max_history must be >= 2 (the best half of the trials, the most recent half), got {self.max_history}",
        )
        _check(
            0 <= self.random_probability <= 1,
            f"random_probability must be in [0, 1], got {self.random_probability}",
        )
        _check(self.challengers >= 1, f"challengers must be >= 1, got {self.challengers}")
        _check(
            self.local_search_iterations >= 1,
            f"local_search_iterations must be >= 1, got {self.local_search_iterations}",
        )

    def n_initial(self, budget: int, n_points: int) -> int:
        """Sobol points of the initial design, after ``n_points`` given initial points."""
        return min(budget - n_points, max(self.min_initial, math.ceil(self.initial_fraction * budget)))

    def retrain_interval(self, n_trials: int) -> int:
        """Trials between two fits of the forest, once it has ``n_trials`` to fit:
        ``max(retrain_after, n_trials // retrain_scale)``."""
        return max(self.retrain_after, n_trials // self.retrain_scale)
