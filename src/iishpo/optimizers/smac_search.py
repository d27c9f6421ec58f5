"""SMAC3: random-forest Bayesian optimization, driven one trial at a time.

SMAC's :class:`HyperparameterOptimizationFacade` runs through its ask/tell interface; the
stage runner owns the loop. Choices that differ from SMAC's defaults, and why:

* The scenario is deterministic: every configuration is trained once, because the stage
  budget counts trainings and SMAC's intensifier would otherwise spend it re-running good
  configurations on new seeds.
* Initial design: ``n_initial = max(min_initial, ceil(initial_fraction * budget))`` Sobol
  points. SMAC's own rule (10 per hyperparameter, at most 25 % of the trials) always hits
  the 25 % cap for this space, so the default fraction keeps SMAC's behaviour while the
  minimum keeps small stages from starting the model on one or two points. The
  ``initial_points`` come on top, as SMAC's "additional configurations", and are handed out
  *before* the Sobol points; the whole design is cut to the budget.
* ``retrain_after=1``: the surrogate is refitted after every trial (SMAC refits after 8 to
  save time, which is nothing next to training a CNN, and would leave small stages with
  almost no model-based proposals), until the history is long: then every
  ``n // retrain_scale`` trials (:class:`_ScheduledConfigSelector`), since a fit and its
  acquisition search cost over a second at the paper's 1500 trials.
* Beyond ``max_history`` trials the forest is fitted on the best half of that many and
  the most recent others (:func:`model_rows`), as our TPE bounds its history: the fit's
  cost grows with the history. The refit schedule still counts every trial.
* SMAC writes its run history into a private temporary directory, removed with the
  optimizer, and never saves it per trial: resuming replays the stored trials instead.
* The forest is the facade's, but single-threaded and without sklearn's 2**20-leaf cap
  (which preallocates: 0.1 s per tree); neither changes the model, both cost seconds.
  Its trees are asked for their predictions in a plain loop (:class:`_DirectForest`):
  SMAC dispatches every tree of every prediction through joblib, which cost about 1 ms
  per tree, and the acquisition search predicts thousands of times per proposal. The
  same trees give the same numbers, so the proposals do not change. Two more scans over
  all trials are gone, with the same numbers to the last bit: for each leaf's mean cost
  (:func:`_set_leaf_means`) and for the run history's cost bounds on every trial added
  (:class:`_IncrementalBoundsRunHistory`).
* The local search of the acquisition maximizer starts from its points in a fixed order:
  SMAC orders them by string hashes, which made proposals depend on ``PYTHONHASHSEED``.
  With that fixed, a seed gives the same proposals in any process.
* Only SMAC's warnings are shown; the root logger is left untouched.
* Losses must be finite (the forest models log costs); the runner reports failures as 1.0.

Proposals that SMAC repeats (or that map onto an evaluated configuration) are answered
from the losses already known, without spending the budget; should SMAC run out of new
configurations, random ones from the space follow. Asking past the budget keeps working.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ConfigSpace import (
    CategoricalHyperparameter,
    Configuration,
    ConfigurationSpace,
    Constant,
    InCondition,
    UniformFloatHyperparameter,
    UniformIntegerHyperparameter,
)
from sklearn.tree import DecisionTreeRegressor
from smac import HyperparameterOptimizationFacade, Scenario
from smac.acquisition.maximizer import LocalAndSortedRandomSearch, LocalSearch
from smac.initial_design import SobolInitialDesign
from smac.intensifier import Intensifier
from smac.main.config_selector import ConfigSelector
from smac.main.exceptions import ConfigurationSpaceExhaustedException
from smac.model.random_forest import RandomForest
from smac.model.random_forest.random_forest import EPMRandomForest
from smac.runhistory.dataclasses import TrialInfo, TrialValue
from smac.runhistory.enumerations import StatusType
from smac.runhistory.runhistory import RunHistory

from iishpo.optimizers.base import Optimizer, bounded_history
from iishpo.optimizers.settings import SMACSettings
from iishpo.search.space import CATEGORICAL, FLOAT, Config, Param, SearchSpace

#: how often a repeated proposal is answered from the cache before falling back to random
_MAX_REPEATS = 100
_SEED_MOD = 2**31 - 1


class SMAC(Optimizer[SMACSettings]):
    """SMAC3's hyperparameter-optimization facade (random forest + expected improvement)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.settings
        logging.getLogger("smac").setLevel(logging.WARNING)  # SMAC's INFO lines drown the stage log
        self.configspace = build_configspace(self.space)
        points = self.initial_points[: self.budget]
        self.n_initial = settings.n_initial(self.budget, len(points))
        self._tmp = tempfile.TemporaryDirectory(prefix="iishpo-smac-")
        scenario = Scenario(
            self.configspace,
            name="smac",
            output_directory=Path(self._tmp.name),
            deterministic=True,
            n_trials=self.budget,
            seed=self.seed % _SEED_MOD,
        )
        facade = HyperparameterOptimizationFacade
        # ConfigSpace rounds floats to 13 decimals: hand out the initial points as given
        self._initial = {Configuration(self.configspace, values=p): p for p in points}
        design = _PointsFirstDesign(
            scenario,
            n_configs=self.n_initial,
            max_ratio=1.0,
            additional_configs=list(self._initial),
        )
        self._smac = facade(
            scenario,
            target_function=None,
            model=_DirectRandomForest(
                # the facade's forest; single-threaded, no leaf cap (see the module doc)
                self.configspace,
                max_history=settings.max_history,
                log_y=True,
                n_trees=10,
                ratio_features=1.0,
                min_samples_split=2,
                min_samples_leaf=1,
                max_depth=2**20,
                max_leaf_nodes=None,  # type: ignore[arg-type]  # passed on to sklearn
                bootstrapping=True,
                seed=scenario.seed,
                n_jobs=1,
            ),
            initial_design=design,
            intensifier=_IndexedIntensifier(scenario, max_config_calls=3, max_incumbents=10),
            acquisition_maximizer=_OrderedLocalAndSortedRandomSearch(
                self.configspace,
                challengers=settings.challengers,
                local_search_iterations=settings.local_search_iterations,
                seed=scenario.seed,
            ),
            random_design=facade.get_random_design(scenario, probability=settings.random_probability),
            config_selector=_ScheduledConfigSelector(scenario, settings=settings),
            logging_level=False,
            overwrite=True,
        )
        # the facade builds its run history itself; it is empty, so it can become the subclass
        self._smac.runhistory.__class__ = _IncrementalBoundsRunHistory
        self._losses: dict[tuple[Any, ...], float] = {}
        self._pending: TrialInfo | None = None
        self._exhausted = False

    def ask(self) -> Config:
        if self._pending is not None:
            raise RuntimeError("ask() called twice without tell() in between")
        for _ in range(_MAX_REPEATS):
            info = self._next_trial()
            point = self._initial.get(info.config)
            config = dict(point) if point is not None else self._to_config(info.config)
            known = self._losses.get(_key(config))
            if known is None:
                self._pending = info
                return config
            # a configuration that maps onto one already evaluated: answer it from the cache
            self._smac.tell(info, TrialValue(cost=known), save=False)
        config = self._random_new_config()
        self._pending = TrialInfo(Configuration(self.configspace, values=config), seed=info.seed)
        return config

    def tell(self, config: Config, loss: float) -> None:
        if self._pending is None:
            raise RuntimeError("tell() without a preceding ask()")
        if not math.isfinite(loss):
            raise ValueError(
                f"smac: the loss must be finite, got {loss}; report a failed trial as the worst "
                "finite loss (the stage runner tells 1.0)"
            )
        info, self._pending = self._pending, None
        self._losses[_key(config)] = float(loss)
        self._smac.tell(info, TrialValue(cost=float(loss)), save=False)

    def _next_trial(self) -> TrialInfo:
        """SMAC's next trial; random ones once SMAC has run out of new configurations."""
        if not self._exhausted:
            try:
                with warnings.catch_warnings():
                    # SMAC's local search computes np.mean([]) for a debug message
                    for message in ("Mean of empty slice", "invalid value encountered in scalar"):
                        warnings.filterwarnings("ignore", message, RuntimeWarning)
                    return self._smac.ask()
            except (StopIteration, ConfigurationSpaceExhaustedException):
                self._exhausted = True
        config = self._random_new_config()
        return TrialInfo(Configuration(self.configspace, values=config), seed=self.seed % _SEED_MOD)

    def _random_new_config(self) -> Config:
        for _ in range(_MAX_REPEATS):
            config = self.space.sample(self.rng)
            if _key(config) not in self._losses:
                break
        return config

    def _to_config(self, configuration: Configuration) -> Config:
        """Our flat dict with plain Python values; anything outside the space is clipped."""
        config: Config = {}
        for p in self.space.params:
            if p.is_active(config):
                config[p.name] = _decode(p, configuration[p.name])
        return config


class _DirectForest(EPMRandomForest):
    """SMAC's forest with the per-tree predictions made in a plain loop instead of one
    joblib task per tree (``n_jobs=1`` anyway): the same calls, without the dispatch;
    and its leaves' values set from one sort per tree (:func:`_set_leaf_means`)."""

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: None = None) -> None:  # type: ignore[override]
        assert sample_weight is None, "SMAC's forest takes no sample weights"
        super(EPMRandomForest, self).fit(X=X, y=y)  # sklearn's fit, which SMAC's calls first
        self.trainX = X
        self.trainY = y
        if self.log_y:
            for tree, samples in zip(self.estimators_, self.estimators_samples_):
                _set_leaf_means(tree, X[samples], y[samples])

    def all_trees_pred(self, X: np.ndarray) -> np.ndarray:
        X = self._validate_X_predict(X)
        if X.ndim == 1:
            X = X[None, :]
        preds = np.empty((X.shape[0], self.n_estimators), dtype=np.float64)
        for index, tree in enumerate(self.estimators_):
            preds[:, index] = tree.predict(X, check_input=False)
        return preds


def _set_leaf_means(tree: DecisionTreeRegressor, X: np.ndarray, log_costs: np.ndarray) -> None:
    """Each leaf's value: the log of the mean cost of its training samples, as SMAC sets it.

    SMAC finds each leaf's samples with a comparison over all of them, about n**2 / 2
    comparisons per tree (0.2 s per fit at 1500 trials). Here one stable sort groups them:
    every leaf gets the same samples in the same order and the same numpy calls, so the
    same value to the last bit.
    """
    leaves = tree.apply(X)
    order = np.argsort(leaves, kind="stable")
    sorted_leaves = leaves[order]
    starts = np.flatnonzero(np.diff(sorted_leaves, prepend=-1))
    ends = np.append(starts[1:], len(order))
    values = tree.tree_.value  # a view: writing it sets the tree's leaves
    for leaf, start, end in zip(sorted_leaves[starts].tolist(), starts.tolist(), ends.tolist()):
        values[leaf, 0, 0] = np.log(np.exp(log_costs[order[start:end]]).mean())


class _IncrementalBoundsRunHistory(RunHistory):
    """SMAC's run history, its cost bounds updated from the trial just added.

    SMAC recomputes the bounds (the lowest and highest cost of the successful trials) from
    every trial whenever a trial is added, twice per proposal (running, then done): about
    12 ms per proposal at 1500 trials. A new successful cost can only widen them, so
    single-objective bounds are widened by it instead; when a successful trial is
    overwritten (its cost may have set a bound) or there is no bound yet, SMAC's full
    recomputation runs. The bounds are the same numbers either way.
    """

    _replaced: TrialValue | None = None
    _added: TrialValue | None = None

    def _add(self, k: Any, v: TrialValue, status: StatusType) -> None:
        self._replaced, self._added = self._data.get(k), v
        super()._add(k, v, status)

    def _update_objective_bounds(self) -> None:
        added, replaced = self._added, self._replaced
        if (
            added is None
            or not isinstance(added.cost, (int, float))
            or self._n_objectives != 1
            or len(self._objective_bounds) != 1
            or (replaced is not None and replaced.status == StatusType.SUCCESS)
        ):
            super()._update_objective_bounds()
        elif added.status == StatusType.SUCCESS:
            cost = np.float64(added.cost)
            ((low, high),) = self._objective_bounds
            self._objective_bounds = [(min(low, cost), max(high, cost))]


class _DirectRandomForest(RandomForest):
    """The facade's random-forest model, fitting :class:`_DirectForest` on at most
    ``max_history`` trials (:func:`model_rows`)."""

    def __init__(self, configspace: ConfigurationSpace, *, max_history: int, **options: Any) -> None:
        super().__init__(configspace, **options)
        self._max_history = max_history

    def _train(self, X: np.ndarray, y: np.ndarray) -> RandomForest:
        y = y.flatten()
        rows = model_rows(y, self._max_history)
        X = self._impute_inactive(X[rows])
        self._rf = _DirectForest(**self._rf_opts)
        self._rf.fit(X, y[rows])
        return self


def model_rows(costs: np.ndarray, max_history: int) -> np.ndarray:
    """The trials (rows, oldest first) the forest is fitted on: all of them up to
    ``max_history``; beyond, the ``max_history // 2`` best and the most recent others
    (:func:`~iishpo.optimizers.base.bounded_history`: the forest's fit costs 0.3 s at 1500 trials)."""
    return np.array(bounded_history(costs.tolist(), max_history, max_history // 2), dtype=np.intp)


class _ConfigList(list):  # type: ignore[type-arg]
    """A list of configurations whose membership test is a hash lookup.

    SMAC keeps the configurations it has handed out in a plain list and tests every new
    one against it: a full scan, each comparison building two dicts (about 0.2 s per
    proposal at 1500 trials). The key is the very dict those comparisons compare (numpy
    scalars hash as the equal Python numbers), so the answer is the list's.
    """

    def __init__(self, configs: Any = ()) -> None:
        super().__init__(configs)
        self._members = {_values_key(c) for c in self}

    def append(self, config: Configuration) -> None:
        super().append(config)
        self._members.add(_values_key(config))

    def __contains__(self, config: object) -> bool:
        return isinstance(config, Configuration) and _values_key(config) in self._members


class _RejectedConfigs(list):  # type: ignore[type-arg]
    """The intensifier's rejected configurations, tested by their run-history id: one
    lookup, not a scan. The same answer, since no two configurations SMAC handed out
    are equal (:class:`_ConfigList`)."""

    def __init__(self, configs: list[Configuration], ids: list[int], config_ids: dict[Configuration, int]) -> None:
        super().__init__(configs)
        self._ids = set(ids)
        self._config_ids = config_ids

    def __contains__(self, config: object) -> bool:
        return self._config_ids.get(config) in self._ids  # type: ignore[call-overload]


class _IndexedIntensifier(Intensifier):
    """The facade's intensifier, its test for rejected configurations by id."""

    def get_rejected_configs(self) -> list[Configuration]:
        return _RejectedConfigs(super().get_rejected_configs(), self._rejected_config_ids, self.runhistory.config_ids)


class _ScheduledConfigSelector(ConfigSelector):
    """SMAC's configuration selector (as the facade's, 16 retries), with three changes.

    * The forest is refitted on a schedule that stretches with the history:
      :meth:`SMACSettings.retrain_interval` trials per fit, set when SMAC collects the
      data for a fit. Between fits, SMAC hands out the next-best challengers of the same
      acquisition search, as with its own ``retrain_after``.
    * The predicted best of the evaluated configurations (the incumbent of expected
      improvement) comes from one prediction of all of them, not one per configuration:
      the same trees give the same numbers, and the first minimum wins as before.
    * The configurations handed out are a :class:`_ConfigList`.
    """

    @property
    def _processed_configs(self) -> _ConfigList:
        return self._handed_out

    @_processed_configs.setter
    def _processed_configs(self, configs: list[Configuration]) -> None:
        self._handed_out = _ConfigList(configs)

    def __init__(self, scenario: Scenario, *, settings: SMACSettings) -> None:
        super().__init__(scenario, retrain_after=settings.retrain_after, max_new_config_tries=16)
        self._settings = settings

    def _collect_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X, Y, configs = super()._collect_data()
        self._retrain_after = self._settings.retrain_interval(X.shape[0])
        return X, Y, configs

    def _get_x_best(self, X: np.ndarray) -> tuple[np.ndarray, float]:
        assert self._model is not None
        means, _ = self._model.predict_marginalized(X)
        best = int(np.argmin(means[:, 0]))
        return X[best], float(means[best, 0])


class _PointsFirstDesign(SobolInitialDesign):
    """SMAC's Sobol design, but the additional configurations (IIS warm start) go first."""

    def select_configurations(self) -> list[Configuration]:
        configs = super().select_configurations()
        first = [c for c in configs if c in self._additional_configs]
        return first + [c for c in configs if c not in first]


class _OrderedLocalSearch(LocalSearch):
    """SMAC's local search, started from its start points in a fixed order.

    SMAC dedupes the start points through a ``set`` of configurations, whose hash is that of
    a string: their order, and so the proposals, changed with ``PYTHONHASHSEED``.
    """

    def _get_initial_points(self, *args: Any, **kwargs: Any) -> list[Configuration]:
        points = super()._get_initial_points(*args, **kwargs)
        return sorted(points, key=lambda c: tuple(np.nan_to_num(c.get_array(), nan=-1.0)))


class _OrderedLocalAndSortedRandomSearch(LocalAndSortedRandomSearch):
    """The facade's acquisition maximizer with :class:`_OrderedLocalSearch` inside."""

    def __init__(
        self,
        configspace: ConfigurationSpace,
        *,
        challengers: int,
        local_search_iterations: int,
        seed: int,
    ) -> None:
        super().__init__(
            configspace,
            challengers=challengers,
            local_search_iterations=local_search_iterations,
            seed=seed,
        )
        self._local_search = _OrderedLocalSearch(configspace, seed=seed)


def build_configspace(space: SearchSpace) -> ConfigurationSpace:
    """The ConfigSpace twin of ``space``: same names, ranges, log scales and conditions.

    A parameter with a single value becomes a ``Constant``; a per-layer parameter is
    conditioned on the layer counts that enable it, unconditional when every count
    does, and left out when none does.
    """
    cs = ConfigurationSpace()
    hps: dict[str, Any] = {}
    conditions = []
    for p in space.params:
        enabling: list[Any] | None = None
        if p.active_if is not None:
            parent, index = p.active_if
            counts = _values(space[parent])
            enabling = [v for v in counts if int(v) > index]
            if not enabling:
                continue
            if len(enabling) == len(counts):
                enabling = None
        hps[p.name] = _hyperparameter(p)
        cs.add(hps[p.name])
        if enabling is not None:
            parent_hp = hps[p.active_if[0]]  # type: ignore[index]
            conditions.append(InCondition(hps[p.name], parent_hp, enabling))
    cs.add(conditions)
    return cs


def _hyperparameter(p: Param) -> Any:
    if p.kind == CATEGORICAL:
        choices = list(p.choices)  # type: ignore[arg-type]
        if len(choices) == 1:
            return Constant(p.name, choices[0])
        return CategoricalHyperparameter(p.name, choices)
    if p.low == p.high:
        return Constant(p.name, p.low)
    low, high = p.low, p.high
    assert low is not None and high is not None
    if p.kind == FLOAT:
        return UniformFloatHyperparameter(p.name, low, high, log=p.log)
    return UniformIntegerHyperparameter(p.name, int(low), int(high), log=p.log)


def _values(p: Param) -> list[int]:
    """Every value of a layer count (an int parameter: the space checks that)."""
    return list(range(int(p.low), int(p.high) + 1))  # type: ignore[arg-type]


def _decode(p: Param, raw: Any) -> Any:
    if p.kind == CATEGORICAL:
        matches = [c for c in p.choices if c == raw]  # type: ignore[union-attr]
        return matches[0] if matches else p.clip(raw)
    value = raw.item() if hasattr(raw, "item") else raw
    return p.clip(value)


def _values_key(config: Configuration) -> tuple[tuple[str, Any], ...]:
    """What ``Configuration.__eq__`` compares (within one space), hashable."""
    return tuple(dict(config).items())


def _key(config: Config) -> tuple[Any, ...]:
    return tuple(sorted(config.items()))


__all__ = ["SMAC", "build_configspace"]
