"""Hyperparameter importance by functional ANOVA, per resolution (the paper's Experiment 1).

fANOVA (Hutter et al. 2014) fits a random forest to (configuration, validation error) and
splits the variance of the forest's prediction over the whole space into the share each
hyperparameter explains alone (main effect) and the share each pair explains beyond both
main effects (interaction). Single shares come from Optuna's maintained
``FanovaImportanceEvaluator``; it has no pairs, so :func:`decompose` computes singles and
pairs by the same marginal-variance decomposition over a forest fitted exactly like
Optuna's (same settings, seed and column order), and the tests check that its singles
equal Optuna's.

What is analysed:

* Only the hyperparameters every configuration has (no ``per_layer_of``). Per-layer
  filters and units exist only for the layers a configuration has; imputing the missing
  ones would invent data, and the paper's Fig. 2 shows global hyperparameters.
  Parameters whose range at a resolution is a single value are left out (nothing varies).
* Each parameter in the scale it is sampled in: log-scaled ranges as log10 of the value,
  so that the decomposition averages uniformly over what the optimizers sample; integers
  over ``[low - 0.5, high + 0.5]`` and categorical choices as their index over
  ``[-0.5, k - 0.5]`` (the choices here are ordered numbers), so that every value weighs
  the same.
* Only successful trials (a failed trial has no validation error). No parameter to
  analyse, fewer than ``len(params) + 1`` trials, or a constant validation error, gives an
  :class:`Importance` with a ``note`` saying why and no numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iishpo.search.space import CATEGORICAL, INT, Param, SearchSpace, build_space
from iishpo.store import Trial

#: Forest settings shared with Optuna's evaluator (its defaults), so both fit the same forest.
N_TREES = 64
MAX_DEPTH = 64

Subset = tuple[str, ...]


@dataclass(frozen=True)
class Importance:
    """Variance shares of the validation error at one resolution.

    ``single[p]``: share explained by ``p`` alone; ``pairs[(p, q)]``: share explained by
    the interaction of ``p`` and ``q`` (beyond both main effects). Fractions of the total
    variance, averaged over the forest's trees. ``note`` is set (and both are empty) when
    the trials do not support an analysis.
    """

    resolution: int
    n_trials: int
    params: tuple[str, ...]
    single: dict[str, float] = field(default_factory=dict)
    pairs: dict[tuple[str, str], float] = field(default_factory=dict)
    note: str | None = None

    def subsets(self) -> list[tuple[Subset, float]]:
        """Every single and pair with its share, largest first (ties: singles, then by name)."""
        entries: list[tuple[Subset, float]] = [((p,), v) for p, v in self.single.items()]
        entries += list(self.pairs.items())
        return sorted(entries, key=lambda e: (-e[1], len(e[0]), e[0]))

    def top(self, k: int) -> list[Subset]:
        if k < 1:
            raise ValueError(f"top-k needs k >= 1, got {k}")
        return [subset for subset, _ in self.subsets()[:k]]


def analysed_params(space: SearchSpace) -> tuple[str, ...]:
    """The always-active hyperparameters of ``space`` that can take more than one value."""
    return tuple(
        p.name for p in space.params
        if p.active_if is None and _bounds(p)[0] < _bounds(p)[1]
        and not (p.kind == CATEGORICAL and len(p.choices or ()) < 2)
    )


def _bounds(param: Param) -> tuple[float, float]:
    if param.kind == CATEGORICAL:
        return -0.5, len(param.choices or ()) - 0.5
    assert param.low is not None and param.high is not None
    low, high = float(param.low), float(param.high)
    if param.kind == INT:
        low, high = low - 0.5, high + 0.5
        if param.low == param.high:
            return low + 0.5, high - 0.5
    return (math.log10(low), math.log10(high)) if param.log else (low, high)


def _encode(param: Param, value: Any) -> float:
    if param.kind == CATEGORICAL:
        return float((param.choices or ()).index(value))
    return math.log10(value) if param.log else float(value)


def encode(trials: Sequence[Trial], space: SearchSpace, params: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``X`` (successful trials x params, sampling scale), ``y`` (validation errors), bounds."""
    ok = [t for t in trials if t.ok and t.val_error is not None]
    missing = sorted({p for t in ok for p in params if p not in t.config})
    if missing:
        raise ValueError(f"trials lack the always-active hyperparameters {missing}")
    x = np.array([[_encode(space[p], t.config[p]) for p in params] for t in ok], dtype=float)
    y = np.array([t.val_error for t in ok], dtype=float)
    bounds = np.array([_bounds(space[p]) for p in params], dtype=float)
    return x.reshape(len(ok), len(params)), y, bounds


def _leaf_boxes(tree: Any, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper corners of every leaf's box inside ``bounds``, and its prediction."""
    lows, highs, values = [], [], []
    stack = [(0, bounds[:, 0].copy(), bounds[:, 1].copy())]
    while stack:
        node, low, high = stack.pop()
        feature = tree.feature[node]
        if feature < 0:
            lows.append(low)
            highs.append(high)
            values.append(float(tree.value[node].reshape(-1)[0]))
            continue
        threshold = tree.threshold[node]
        left_high, right_low = high.copy(), low.copy()
        left_high[feature] = min(high[feature], threshold)
        right_low[feature] = max(low[feature], threshold)
        stack.append((tree.children_left[node], low, left_high))
        stack.append((tree.children_right[node], right_low, high))
    return np.array(lows), np.array(highs), np.array(values)


def _tree_variances(
    tree: Any, bounds: np.ndarray, subsets: Sequence[tuple[int, ...]]
) -> tuple[float, list[float]]:
    """Total variance of one tree's prediction and the variance of its marginal over each subset."""
    lows, highs, values = _leaf_boxes(tree, bounds)
    widths = bounds[:, 1] - bounds[:, 0]
    share = (highs - lows) / widths  # fraction of each dimension a leaf covers
    volume = share.prod(axis=1)
    mean = float(volume @ values)
    total = float(volume @ (values - mean) ** 2)
    marginals = []
    for subset in subsets:
        rest = [k for k in range(len(bounds)) if k not in subset]
        weight = values * share[:, rest].prod(axis=1)  # leaf value times its share of the rest
        inside, cell_share = [], []
        for k in subset:
            cuts = np.unique(np.concatenate([lows[:, k], highs[:, k]]))
            mids = (cuts[1:] + cuts[:-1]) / 2
            inside.append(((lows[:, k] <= mids[:, None]) & (mids[:, None] < highs[:, k])).astype(float))
            cell_share.append(np.diff(cuts) / widths[k])
        if len(subset) == 1:
            marginal = inside[0] @ weight
            cells = cell_share[0]
        else:
            marginal = (inside[0] * weight) @ inside[1].T
            cells = np.outer(cell_share[0], cell_share[1])
        marginals.append(float((cells * (marginal - mean) ** 2).sum()))
    return total, marginals


def decompose(
    x: np.ndarray, y: np.ndarray, bounds: np.ndarray, *, seed: int, n_trees: int = N_TREES
) -> tuple[np.ndarray, np.ndarray]:
    """Main-effect shares (per column) and pair-interaction shares (upper triangle) of ``y``.

    The forest is fitted with Optuna's fANOVA settings; shares are averaged over the trees
    whose prediction varies, as Optuna does.
    """
    from sklearn.ensemble import RandomForestRegressor

    n = x.shape[1]
    forest = RandomForestRegressor(
        n_estimators=n_trees, max_depth=MAX_DEPTH, min_samples_split=2, min_samples_leaf=1,
        random_state=seed,
    ).fit(x, y)
    pairs = list(itertools.combinations(range(n), 2))
    subsets = [(i,) for i in range(n)] + pairs
    singles, interactions = [], []
    for estimator in forest.estimators_:
        total, marginals = _tree_variances(estimator.tree_, bounds, subsets)
        if total <= 0:
            continue
        main = np.array(marginals[:n]) / total
        joint = np.zeros((n, n))
        for (i, j), variance in zip(pairs, marginals[n:], strict=True):
            joint[i, j] = max(variance / total - main[i] - main[j], 0.0)
        singles.append(main)
        interactions.append(joint)
    if not singles:
        raise ValueError("the forest's prediction is constant: no variance to decompose")
    return np.mean(singles, axis=0), np.mean(interactions, axis=0)


def optuna_singles(x: np.ndarray, y: np.ndarray, bounds: np.ndarray, params: Sequence[str], *, seed: int) -> dict[str, float]:
    """Main-effect shares from Optuna's ``FanovaImportanceEvaluator`` on the encoded trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {
        p: optuna.distributions.FloatDistribution(float(low), float(high))
        for p, (low, high) in zip(params, bounds, strict=True)
    }
    study = optuna.create_study()
    study.add_trials([
        optuna.trial.create_trial(
            params={p: float(v) for p, v in zip(params, row, strict=True)},
            distributions=distributions, value=float(value),
        )
        for row, value in zip(x, y, strict=True)
    ])
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=N_TREES, max_depth=MAX_DEPTH, seed=seed)
    return {p: float(v) for p, v in evaluator.evaluate(study, params=list(params)).items()}


def importance(trials: Sequence[Trial], space: SearchSpace, *, seed: int = 0) -> Importance:
    """fANOVA of the validation error over ``trials`` evaluated in ``space`` (one resolution)."""
    params = analysed_params(space)
    x, y, bounds = encode(trials, space, params)
    if not params:
        return Importance(
            space.resolution, len(y), params,
            note=f"no hyperparameter takes more than one value at {space.resolution} px: "
            "nothing to analyse",
        )
    needed = len(params) + 1
    if len(y) < needed:
        return Importance(
            space.resolution, len(y), params,
            note=f"{len(y)} successful trials at {space.resolution} px; fANOVA of "
            f"{len(params)} hyperparameters needs at least {needed}",
        )
    if np.ptp(y) == 0:
        return Importance(
            space.resolution, len(y), params,
            note=f"the validation error is the same ({y[0]:.4f}) in all {len(y)} successful "
            f"trials at {space.resolution} px: nothing to explain",
        )
    single = optuna_singles(x, y, bounds, params, seed=seed)
    # Optuna fits its forest on the columns in name order, and a tree depends on the order
    # (of splits that fit equally well it takes the first it tries): pairs from that forest.
    names = sorted(params)
    columns = [params.index(p) for p in names]
    _, interactions = decompose(x[:, columns], y, bounds[columns], seed=seed)
    shares = interactions + interactions.T  # the upper triangle, either way round
    pairs = {
        (p, q): float(shares[names.index(p), names.index(q)])
        for p, q in itertools.combinations(params, 2)
    }
    return Importance(space.resolution, len(y), params, single, pairs)


def importance_by_resolution(
    trials: Mapping[int, Sequence[Trial]], space_spec: Mapping[str, Any], *, seed: int = 0
) -> list[Importance]:
    """:func:`importance` at every resolution (ascending) from a ``conf/space`` mapping."""
    return [
        importance(trials[resolution], build_space(space_spec, resolution), seed=seed)
        for resolution in sorted(trials)
    ]


def subset_name(subset: Subset) -> str:
    return " x ".join(subset)


def overlap(a: Sequence[Subset], b: Sequence[Subset]) -> float:
    """Fraction of ``a``'s subsets that are also in ``b`` (both top-k lists of one k)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"overlap needs two non-empty lists of one length, got {len(a)} and {len(b)}")
    return len(set(a) & set(b)) / len(a)


def top_subsets_table(importances: Sequence[Importance], ks: Sequence[int] = (5, 10)) -> list[dict[str, Any]]:
    """One row per resolution: its top-k subsets for every k, and each top-k's overlap with
    the top-k at the largest analysed resolution (the target of an IIS run) and the
    fraction of it common to every analysed resolution. A resolution with a note gets the
    note instead."""
    analysed = [imp for imp in importances if imp.note is None]
    rows = []
    for imp in importances:
        row: dict[str, Any] = {"resolution": imp.resolution, "n_trials": imp.n_trials, "note": imp.note or ""}
        for k in ks:
            if imp.note is not None:
                row.update({f"top{k}": "", f"top{k}_overlap_with_largest": "", f"top{k}_common_to_all": ""})
                continue
            top = imp.top(k)
            common = set(top).intersection(*(set(other.top(k)) for other in analysed))
            row[f"top{k}"] = "; ".join(subset_name(s) for s in top)
            row[f"top{k}_overlap_with_largest"] = overlap(top, analysed[-1].top(k))
            row[f"top{k}_common_to_all"] = len(common) / len(top)
        rows.append(row)
    return rows


def importance_rows(importances: Sequence[Importance]) -> list[dict[str, Any]]:
    """Every subset's share at every analysed resolution (long format, for CSV)."""
    return [
        {"resolution": imp.resolution, "n_trials": imp.n_trials, "subset": subset_name(subset),
         "size": len(subset), "explained_variance": share}
        for imp in importances if imp.note is None for subset, share in imp.subsets()
    ]


def markdown(importances: Sequence[Importance], title: str, ks: Sequence[int] = (5, 10)) -> str:
    """The top-k table and the notes, as Markdown."""
    lines = [f"## {title}", ""]
    table = top_subsets_table(importances, ks)
    header = ["resolution (px)", "successful trials"]
    for k in ks:
        header += [f"top {k} (explained variance)", f"top-{k} overlap with largest", f"top-{k} common to all"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for imp, row in zip(importances, table, strict=True):
        cells = [str(imp.resolution), str(imp.n_trials)]
        if imp.note is not None:
            cells += [f"not analysed: {imp.note}"] + [""] * (3 * len(ks) - 1)
        else:
            shares = dict(imp.subsets())
            for k in ks:
                cells.append(", ".join(f"{subset_name(s)} {shares[s]:.1%}" for s in imp.top(k)))
                cells.append(f"{row[f'top{k}_overlap_with_largest']:.0%}")
                cells.append(f"{row[f'top{k}_common_to_all']:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
