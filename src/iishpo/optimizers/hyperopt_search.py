"""Random search and TPE through hyperopt, driven one trial at a time.

hyperopt's ``fmin`` owns the loop and restarts its random stream on resume; here the
``suggest`` functions are called directly with a seed derived from (run seed, trial
number), so a proposal depends only on the seed and the history, never on how many
processes the run took.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from hyperopt import hp, rand, tpe
from hyperopt.base import JOB_STATE_DONE, STATUS_OK, Domain, Trials

from iishpo.optimizers.base import Optimizer, S, bounded_history
from iishpo.optimizers.settings import TPE_GOOD_CAP, RandomSettings, TPESettings
from iishpo.search.space import CATEGORICAL, INT, Config, Param
from iishpo.seeds import Stream, derive_seed


class _HyperoptOptimizer(Optimizer[S]):
    """Shared machinery: the conditional hyperopt space and the Trials bookkeeping."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # hyperopt logs several INFO lines per proposal; the stage log reports progress itself
        logging.getLogger("hyperopt").setLevel(logging.WARNING)
        # a layer count becomes an hp.choice of one branch per count, holding its layers
        self._children = {count: self.space.layers_of(count) for count in self.space.layer_counts}
        expr = {}
        for p in self.space.params:
            if p.active_if is not None:
                continue
            expr[p.name] = self._branches(p) if p.name in self._children else _hp(p, p.name)
        self._domain = Domain(lambda _: 0.0, expr)
        self._trials = Trials()
        self._pending: tuple[int, dict[str, list[Any]]] | None = None

    # -- hyperopt space <-> configurations ----------------------------------------------
    def _branches(self, parent: Param) -> Any:
        options = []
        for count in range(int(parent.low), int(parent.high) + 1):  # type: ignore[arg-type]
            branch: dict[str, Any] = {parent.name: count}
            for child in self._children[parent.name]:
                if child.active_if[1] < count:  # type: ignore[index]
                    branch[child.name] = _hp(child, _label(child.name, count))
            options.append(branch)
        return hp.choice(parent.name, options)

    def _labels(self) -> list[str]:
        return list(self._domain.params)

    def _to_config(self, vals: dict[str, list[Any]]) -> Config:
        config: Config = {}
        for p in self.space.params:
            if p.active_if is not None:
                continue
            if p.name in self._children:
                count = int(p.low) + int(vals[p.name][0])  # type: ignore[arg-type]
                config[p.name] = count
                for child in self._children[p.name]:
                    if child.active_if[1] < count:  # type: ignore[index]
                        config[child.name] = _decode(child, vals.get(_label(child.name, count)))
            else:
                config[p.name] = _decode(p, vals.get(p.name))
        return {p.name: config[p.name] for p in self.space.params if p.name in config}

    def _to_vals(self, config: Config) -> dict[str, list[Any]]:
        vals: dict[str, list[Any]] = {label: [] for label in self._labels()}
        for p in self.space.params:
            if p.active_if is not None:
                continue
            if p.name in self._children:
                count = int(config[p.name])
                vals[p.name] = [count - int(p.low)]  # type: ignore[arg-type]
                for child in self._children[p.name]:
                    if child.active_if[1] < count and not _fixed(child):  # type: ignore[index]
                        vals[_label(child.name, count)] = [_encode(child, config[child.name])]
            elif not _fixed(p):
                vals[p.name] = [_encode(p, config[p.name])]
        return vals

    # -- ask / tell ---------------------------------------------------------------------
    def _suggest(self, tid: int) -> dict[str, list[Any]]:
        raise NotImplementedError

    def ask(self) -> Config:
        tid = len(self._trials.trials)
        if tid < len(self.initial_points):
            vals = self._to_vals(self.initial_points[tid])
        else:
            vals = self._suggest(tid)
        self._pending = (tid, vals)
        return self._to_config(vals)

    def tell(self, config: Config, loss: float) -> None:
        if self._pending is None:
            raise RuntimeError("tell() without a preceding ask()")
        tid, vals = self._pending
        self._pending = None
        misc = {
            "tid": tid,
            "cmd": self._domain.cmd,
            "workdir": None,
            "idxs": {label: [tid] if v else [] for label, v in vals.items()},
            "vals": vals,
        }
        result = {"status": STATUS_OK, "loss": float(loss)}
        (doc,) = self._trials.new_trial_docs([tid], [None], [result], [misc])
        doc["state"] = JOB_STATE_DONE
        self._trials.insert_trial_docs([doc])
        self._trials.refresh()

    def _seed(self, tid: int) -> int:
        return derive_seed(self.seed, Stream.PROPOSAL, 0, tid)


class RandomSearch(_HyperoptOptimizer[RandomSettings]):
    """Independent draws from the (possibly narrowed) space: hyperopt's ``rand``."""

    learns_from_losses = False

    def _suggest(self, tid: int) -> dict[str, list[Any]]:
        (doc,) = rand.suggest([tid], self._domain, self._trials, self._seed(tid))
        return doc["misc"]["vals"]


class TPE(_HyperoptOptimizer[TPESettings]):
    """Tree-structured Parzen estimator; its random start-up scales with the budget.

    hyperopt's default ``n_startup_jobs=20`` would make any stage of <= 20 evaluations
    pure random search, so the start-up is ``max(min_startup, startup_fraction * budget)``.

    hyperopt's cost per proposal grows with the history (its quantized log-normal
    densities loop over every trial in Python), so beyond ``max_history`` trials the
    densities are fitted on the best ones (as many as hyperopt's cap on its good group,
    which therefore stays the one of the whole history) and the most recent ones. The
    good group's size, ``ceil(gamma * sqrt(n))``, is kept at that of the whole history
    by the gamma handed to hyperopt.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_startup = self.settings.n_startup(self.budget)

    def _suggest(self, tid: int) -> dict[str, list[Any]]:
        if tid < self.n_startup:  # what tpe.suggest does before its start-up count
            (doc,) = rand.suggest([tid], self._domain, self._trials, self._seed(tid))
        else:
            trials, gamma = self.model_history()
            (doc,) = tpe.suggest(
                [tid],
                self._domain,
                trials,
                self._seed(tid),
                n_startup_jobs=0,
                gamma=gamma,
                n_EI_candidates=self.settings.n_ei_candidates,
            )
        return doc["misc"]["vals"]

    def model_history(self) -> tuple[Trials, float]:
        """The trials the densities are fitted on, and the gamma that keeps the good group."""
        settings = self.settings
        docs = self._trials.trials
        if len(docs) <= settings.max_history:
            return self._trials, settings.gamma
        kept = bounded_history([doc["result"]["loss"] for doc in docs], settings.max_history, TPE_GOOD_CAP)
        history = Trials()
        history.insert_trial_docs([docs[i] for i in kept])
        history.refresh()
        n_good = min(math.ceil(settings.gamma * math.sqrt(len(docs))), TPE_GOOD_CAP)
        return history, (n_good - 0.5) / math.sqrt(len(kept))


def _label(name: str, count: int) -> str:
    return f"{name}|{count}"


def _fixed(p: Param) -> bool:
    """A numeric range narrowed to one value: a constant, not a hyperopt dimension."""
    return p.kind != CATEGORICAL and p.low == p.high


def _hp(p: Param, label: str) -> Any:
    if _fixed(p):
        return p.low
    if p.kind == CATEGORICAL:
        return hp.choice(label, list(p.choices))  # type: ignore[arg-type]
    low, high = float(p.low), float(p.high)  # type: ignore[arg-type]
    if p.kind == INT:
        # widen by just under half a step so that both end points are as likely as the rest
        low, high = low - 0.499, high + 0.499
        if p.log:
            return hp.qloguniform(label, math.log(low), math.log(high), 1)
        return hp.quniform(label, low, high, 1)
    if p.log:
        return hp.loguniform(label, math.log(low), math.log(high))
    return hp.uniform(label, low, high)


def _decode(p: Param, raw: list[Any] | None) -> Any:
    """A configuration value from hyperopt's (a numpy scalar): a plain Python one."""
    if _fixed(p):
        return int(p.low) if p.kind == INT else float(p.low)  # type: ignore[arg-type]
    assert raw, f"hyperopt gave no value for {p.name}"
    raw = raw[0]
    if p.kind == CATEGORICAL:
        return p.choices[int(raw)]  # type: ignore[index]
    if p.kind == INT:
        return int(min(max(round(float(raw)), p.low), p.high))  # type: ignore[type-var]
    return min(max(float(raw), p.low), p.high)  # type: ignore[type-var]


def _encode(p: Param, value: Any) -> Any:
    if p.kind == CATEGORICAL:
        return p.choices.index(value)  # type: ignore[union-attr]
    return float(value)


__all__ = ["TPE", "RandomSearch"]
