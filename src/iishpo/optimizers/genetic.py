"""A generational genetic algorithm (DEAP) over the mixed, conditional CNN space.

Genome: one gene per parameter of the space, in the space's order, *including* the
per-layer genes of layers a configuration does not have. Those genes are carried along
silently, so that a child that gains a layer back (by crossover or mutation of ``n_conv``
or ``n_fc``) gets an inherited width instead of a random one. The configuration of an
individual is the active part of its genome; every gene always lies in its parameter's
domain, so every configuration lies in the space.

One generation after the other, one individual per ``ask()``:

* Initial population: the ``initial_points`` first (their missing layer genes drawn at
  random), filled up with random draws from the space.
* Population size ``clamp(round(population_fraction * budget), min_population,
  max_population)``, at most the budget: five to seven generations per stage, so that
  small and large stages both get to select several times, and never fewer individuals
  than a tournament needs to choose between. The first generation has room for every
  initial point.
* Elitism: the ``n_elite`` best individuals so far pass unchanged (and are not trained
  again) into the next generation; the rest are offspring.
* Selection: tournaments of ``tournament_size`` drawn with replacement.
* Crossover: with probability ``crossover_prob`` a pair of parents swaps each gene with
  probability ``gene_swap_prob`` (uniform crossover: the genes have no order that a
  one- or two-point crossover could exploit).
* Mutation: each gene with probability ``gene_mutation_prob``: numeric genes move by a
  Gaussian step of ``mutation_sigma`` times their range, on the log scale where the
  parameter has one (integers on a range widened by half a step, so end points are
  reachable: :meth:`~iishpo.search.space.Param.to_unit`), then are clipped and rounded;
  categorical genes switch to another choice.
* A child identical to a configuration already proposed is mutated again (a few tries),
  since training the same network twice wastes a stage evaluation.

A NaN loss ranks last, like an infinite one. The defaults (``conf/optimizer/ga.yaml``) were
chosen on the synthetic objective of the optimizer tests at budgets 20 to 100, where two
elites and tournaments of three did better than one elite or binary tournaments.

DEAP provides the individuals' fitness (minimised) and the elite selection (``selBest``).
Its selection, crossover and mutation operators draw from the process-global ``random``
module, so the ones here use the optimizer's own ``random.Random(seed)`` instead: the
proposals then depend only on the seed and the history, whatever else runs in the process.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from deap import base, tools

from iishpo.optimizers.base import Optimizer
from iishpo.optimizers.settings import GASettings
from iishpo.search.space import CATEGORICAL, Config, Param

#: how often a duplicate child is mutated again before it is accepted as it is
_MAX_NOVELTY_TRIES = 20


class _FitnessMin(base.Fitness):
    weights = (-1.0,)


class _Individual(list):  # type: ignore[type-arg]
    """A genome (list of gene values) with a DEAP fitness."""

    def __init__(self, genes: Sequence[Any]) -> None:
        super().__init__(genes)
        self.fitness = _FitnessMin()


class GeneticAlgorithm(Optimizer[GASettings]):
    """Generational GA with tournament selection, uniform crossover and elitism."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.settings
        self.tournament_size = settings.tournament_size
        self.crossover_prob = settings.crossover_prob
        self.gene_swap_prob = settings.gene_swap_prob
        self.gene_mutation_prob = settings.gene_mutation_prob
        self.mutation_sigma = settings.mutation_sigma
        self.population_size = settings.population_size(self.budget)
        self.n_elite = settings.elites(self.budget)
        self.generation = 0
        self._params = self.space.params
        self._proposed: set[tuple[Any, ...]] = set()
        self._pending: _Individual | None = None
        self._population = [_Individual(self._genome(p)) for p in self.initial_points]
        while len(self._population) < self.population_size:
            self._population.append(_Individual(self._genome({})))

    # -- ask / tell ---------------------------------------------------------------------
    def ask(self) -> Config:
        if self._pending is not None:
            raise RuntimeError("ask() called twice without tell() in between")
        unasked = [ind for ind in self._population if not ind.fitness.valid]
        if not unasked:
            self._breed()
            unasked = [ind for ind in self._population if not ind.fitness.valid]
        self._pending = unasked[0]
        config = self.config_of(self._pending)
        self._proposed.add(_key(config))
        return config

    def tell(self, config: Config, loss: float) -> None:
        if self._pending is None:
            raise RuntimeError("tell() without a preceding ask()")
        loss = float(loss)
        self._pending.fitness.values = (loss if not math.isnan(loss) else math.inf,)
        self._pending = None

    def config_of(self, genome: Sequence[Any]) -> Config:
        """The active part of a genome: parents precede their layers in the space."""
        config: Config = {}
        for p, value in zip(self._params, genome):
            if p.is_active(config):
                config[p.name] = value
        return config

    # -- the genetic operators ----------------------------------------------------------
    def _genome(self, point: Config) -> list[Any]:
        return [point[p.name] if p.name in point else p.sample(self.rng) for p in self._params]

    def _breed(self) -> None:
        """Replace the fully evaluated population by elites plus new offspring."""
        pool = self._population
        elites = tools.selBest(pool, self.n_elite)
        offspring = [
            _Individual(self._select(pool)) for _ in range(self.population_size - self.n_elite)
        ]
        for first, second in zip(offspring[::2], offspring[1::2]):
            if self.rng.random() < self.crossover_prob:
                self._crossover(first, second)
        for child in offspring:
            self._mutate(child)
            for _ in range(_MAX_NOVELTY_TRIES):
                if _key(self.config_of(child)) not in self._proposed:
                    break
                self._mutate_one(child)
        self._population = elites + offspring
        self.generation += 1

    def _select(self, pool: Sequence[_Individual]) -> _Individual:
        aspirants = [self.rng.choice(pool) for _ in range(self.tournament_size)]
        return max(aspirants, key=attrgetter("fitness"))

    def _crossover(self, first: _Individual, second: _Individual) -> None:
        for i in range(len(first)):
            if self.rng.random() < self.gene_swap_prob:
                first[i], second[i] = second[i], first[i]

    def _mutate(self, child: _Individual) -> None:
        for i, p in enumerate(self._params):
            if self.rng.random() < self.gene_mutation_prob:
                child[i] = _mutate_gene(p, child[i], self.mutation_sigma, self.rng)

    def _mutate_one(self, child: _Individual) -> None:
        """Mutate one gene that shows in the configuration (so the configuration changes)."""
        active = self.config_of(child)
        i = self.rng.choice([i for i, p in enumerate(self._params) if p.name in active])
        child[i] = _mutate_gene(self._params[i], child[i], self.mutation_sigma, self.rng)


def _mutate_gene(p: Param, value: Any, sigma: float, rng: random.Random) -> Any:
    if p.kind == CATEGORICAL:
        others = [c for c in p.choices if c != value]  # type: ignore[union-attr]
        return rng.choice(others) if others else value
    low, high = p.unit_bounds()
    if high <= low:  # a float narrowed to one value
        return value
    return p.from_unit(p.to_unit(value) + rng.gauss(0.0, sigma))


def _key(config: Config) -> tuple[Any, ...]:
    return tuple(sorted(config.items()))


__all__ = ["GeneticAlgorithm"]
