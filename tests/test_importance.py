"""fANOVA importance: the decomposition against a function with known variance shares and
against Optuna's evaluator, the notes for unusable data, and the top-k table recomputed
from real trial stores."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import optuna
import pytest
from sklearn.ensemble import RandomForestRegressor

import experiment_stores
from helpers import compose
from iishpo.results.importance import (
    Importance,
    analysed_params,
    decompose,
    encode,
    importance,
    importance_by_resolution,
    importance_rows,
    markdown,
    optuna_singles,
    overlap,
    top_subsets_table,
)
from iishpo.search.space import build_space
from iishpo.store import Trial


def trial(number: int, config: dict, val_error: float | None) -> Trial:
    ok = val_error is not None
    return Trial(number, config, "ok" if ok else "failed", val_error, val_error if ok else 1.0,
                 1, 0, 1.0, float(number), None if ok else "Boom: x", 0, "2024-01-01T00:00:00+00:00")


def test_decomposition_recovers_known_main_effects_and_one_interaction() -> None:
    """f = a x1 + b x2^2 + c x3 x4, x ~ U[0, 1]^4: Var(a x1) = a^2/12, Var(b x2^2) =
    4 b^2/45, main effects of x3 and x4 = c^2/48 each, their interaction c^2/144."""
    a, b, c = 2.0, 2.0, 5.0
    main = np.array([a**2 / 12, 4 * b**2 / 45, c**2 / 48, c**2 / 48])
    interaction = c**2 / 144
    total = main.sum() + interaction
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (1000, 4))  # fully grown trees need many points to lose their bias
    y = a * x[:, 0] + b * x[:, 1] ** 2 + c * x[:, 2] * x[:, 3]
    single, pairs = decompose(x, y, np.array([[0.0, 1.0]] * 4), seed=0, n_trees=16)
    assert np.allclose(single, main / total, atol=0.05), (single, main / total)
    assert pairs[2, 3] == pytest.approx(interaction / total, abs=0.03)
    assert pairs[2, 3] > 0.05
    for i, j in itertools.combinations(range(4), 2):
        if (i, j) != (2, 3):
            assert pairs[i, j] < 0.02, (i, j, pairs[i, j])
    assert np.all(np.tril(pairs) == 0)


def optunas_fanova(x: np.ndarray, y: np.ndarray, bounds: np.ndarray, params: list[str], seed: int) -> dict[str, float]:
    """Main-effect shares from Optuna's evaluator, with its default forest, on ``x``, ``y``."""
    study = optuna.create_study()
    distributions = {p: optuna.distributions.FloatDistribution(*b) for p, b in zip(params, bounds, strict=True)}
    for row, value in zip(x, y, strict=True):
        study.add_trial(optuna.trial.create_trial(
            params=dict(zip(params, map(float, row), strict=True)), distributions=distributions, value=float(value),
        ))
    return optuna.importance.FanovaImportanceEvaluator(seed=seed).evaluate(study, params=params)


def fanova_data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Three columns on [0, 1]: ``smooth``, a smooth function with noise; ``deep``, y = 2**i
    along the first column, whose every best split peels off the largest value, so that
    the trees would grow deeper than Optuna's limit of 64; ``partly_constant``, one
    outlier among zeros, so that the trees whose bootstrap sample misses it predict a
    constant."""
    rng = np.random.default_rng(1)
    if kind == "smooth":
        x = rng.uniform(0, 1, (40, 3))
        return x, np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=40)
    if kind == "deep":
        return np.column_stack([np.arange(170) / 170, rng.uniform(0, 1, (170, 2))]), 2.0 ** np.arange(170)
    return rng.uniform(0, 1, (10, 3)), (np.arange(10) == 3).astype(float)


@pytest.mark.parametrize("kind", ["smooth", "deep", "partly_constant"])
def test_singles_equal_optunas_fanova_on_the_same_data(kind: str) -> None:
    x, y = fanova_data(kind)
    trees = RandomForestRegressor(n_estimators=64, random_state=3).fit(x, y).estimators_
    if kind == "deep":  # unlimited, some tree outgrows the limit
        assert max(tree.get_depth() for tree in trees) > 64
    if kind == "partly_constant":
        assert any(tree.get_depth() == 0 for tree in trees)
    bounds = np.array([[0.0, 1.0]] * 3)
    reference = optunas_fanova(x, y, bounds, ["p", "q", "r"], seed=3)
    single, _ = decompose(x, y, bounds, seed=3)
    assert single == pytest.approx([reference[p] for p in "pqr"], rel=1e-9, abs=1e-12)
    assert optuna_singles(x, y, bounds, ["p", "q", "r"], seed=3) == pytest.approx(reference, rel=1e-9, abs=1e-12)


def test_a_forest_of_constant_trees_is_refused() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (10, 2))
    with pytest.raises(ValueError, match="^the forest's prediction is constant: no variance to decompose$"):
        decompose(x, np.full(10, 0.5), np.array([[0.0, 1.0]] * 2), seed=0)


def mean_over(values: np.ndarray, weights: list[np.ndarray], axes: list[int]) -> np.ndarray:
    """The weighted mean of ``values`` over ``axes`` (``weights[k]``: axis k's, summing to 1)."""
    for axis in sorted(axes, reverse=True):
        values = np.tensordot(values, weights[axis], axes=(axis, 0))
    return values


def variance_share(values: np.ndarray, weights: list[np.ndarray], subset: tuple[int, ...]) -> float:
    """The variance of the mean of ``values`` over the axes outside ``subset``, as a share
    of the variance of ``values``."""
    every = list(range(values.ndim))
    mean = mean_over(values, weights, every)
    total = mean_over((values - mean) ** 2, weights, every)
    marginal = mean_over(values, weights, [k for k in every if k not in subset])
    kept = [weights[k] for k in subset]
    return float(mean_over((marginal - mean) ** 2, kept, list(range(len(subset)))) / total)


def grid_decomposition(x: np.ndarray, y: np.ndarray, bounds: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """fANOVA by brute force on the forest Optuna's evaluator fits (sklearn, its default
    64 trees of depth 64, ``seed``): each tree predicted at the centre of every cell of
    the grid its thresholds cut, each cell weighted by its share of the volume; main
    effects per column, pairs less both main effects; averaged over the trees."""
    forest = RandomForestRegressor(
        n_estimators=64, max_depth=64, min_samples_split=2, min_samples_leaf=1, random_state=seed,
    ).fit(x, y)
    n = x.shape[1]
    singles, pairs = [], []
    for tree in forest.estimators_:
        cuts = [np.unique([*bounds[k], *tree.tree_.threshold[tree.tree_.feature == k]]) for k in range(n)]
        centres = np.meshgrid(*[(c[1:] + c[:-1]) / 2 for c in cuts], indexing="ij")
        values = tree.predict(np.stack([c.ravel() for c in centres], axis=1)).reshape(centres[0].shape)
        weights = [np.diff(c) / (c[-1] - c[0]) for c in cuts]
        main = np.array([variance_share(values, weights, (i,)) for i in range(n)])
        joint = np.zeros((n, n))
        for i, j in itertools.combinations(range(n), 2):
            joint[i, j] = variance_share(values, weights, (i, j)) - main[i] - main[j]
        singles.append(main)
        pairs.append(joint)
    return np.mean(singles, axis=0), np.mean(pairs, axis=0)


#: four parameters, one of each encoding (log-scaled, plain, integer, two choices): the
#: grid of a tree's cuts stays small; not in name order, as in conf/space
SMALL_SPACE = {
    "momentum": {"type": "float", "low": 0.0, "high": 1.0},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "pooling": {"type": "categorical", "choices": [2, 3]},
    "n_fc": {"type": "int", "low": 1, "high": 3},
}


def test_singles_and_pairs_come_from_one_forest() -> None:
    """Both shares equal a brute-force decomposition of the one forest Optuna's evaluator
    fits with the default seed 0 (the seed the analysis uses) on the columns in name
    order, so pairs from another forest (another seed, a refit, another column order)
    fail; and singles and pairs of one forest explain at most the whole variance."""
    space = build_space(SMALL_SPACE, 8)
    rng = random.Random(2)
    trials = []
    for number in range(40):
        c = space.sample(rng)
        error = (math.log10(c["learning_rate"]) + 2.5) ** 2 / 6 + c["momentum"] * c["n_fc"] / 3 + c["pooling"] / 20
        trials.append(trial(number, c, error + rng.gauss(0, 0.01)))
    x = np.array([
        [math.log10(t.config["learning_rate"]), t.config["momentum"], t.config["n_fc"], t.config["pooling"] - 2]
        for t in trials
    ])
    bounds = np.array([[-4.0, -1.0], [0.0, 1.0], [0.5, 3.5], [-0.5, 1.5]])
    single, pairs = grid_decomposition(x, np.array([t.val_error for t in trials]), bounds, seed=0)
    names = ("learning_rate", "momentum", "n_fc", "pooling")  # the columns of x
    pairs = pairs + pairs.T  # the upper triangle, either way round
    expected_pairs = {
        (p, q): pairs[names.index(p), names.index(q)] for p, q in itertools.combinations(SMALL_SPACE, 2)
    }
    [by_resolution] = importance_by_resolution({8: trials}, SMALL_SPACE)
    for result in (by_resolution, importance(trials, space)):
        assert result.params == tuple(SMALL_SPACE)
        assert result.single == pytest.approx(dict(zip(names, single, strict=True)), rel=1e-9, abs=1e-12)
        assert result.pairs == pytest.approx(expected_pairs, rel=1e-9, abs=1e-12)
    assert by_resolution.pairs[("momentum", "n_fc")] > 0.01  # an interaction that is there
    assert sum(by_resolution.single.values()) + sum(by_resolution.pairs.values()) <= 1 + 1e-9


def test_encoding_uses_the_sampling_scale(tiny_settings) -> None:
    space = build_space(tiny_settings.space, 32)
    params = analysed_params(space)
    assert params == ("learning_rate", "batch_size", "l1", "l2", "filter_size", "n_conv", "n_fc")
    config = space.sample(random.Random(0))
    x, y, bounds = encode([trial(0, config, 0.25), trial(1, config, None)], space, params)
    assert y.tolist() == [0.25]  # the failed trial has no validation error
    column = dict(zip(params, x[0], strict=True))
    assert column["learning_rate"] == pytest.approx(math.log10(config["learning_rate"]))
    assert column["batch_size"] == space["batch_size"].choices.index(config["batch_size"])
    assert column["n_fc"] == config["n_fc"]
    limits = dict(zip(params, bounds.tolist(), strict=True))
    assert limits["learning_rate"] == pytest.approx([math.log10(1e-4), math.log10(0.3)])
    assert limits["batch_size"] == [-0.5, len(space["batch_size"].choices) - 0.5]
    assert limits["n_conv"] == [0.5, 4.5]  # 1 .. 4 conv layers fit 32 px
    without_n_fc = {k: v for k, v in config.items() if k != "n_fc"}
    with pytest.raises(ValueError, match=r"^trials lack the always-active hyperparameters \['n_fc'\]$"):
        encode([trial(0, without_n_fc, 0.25)], space, params)


def test_single_valued_parameters_are_not_analysed(tiny_settings) -> None:
    space = build_space(tiny_settings.space, 4)  # 4 px fits exactly one conv layer
    assert "n_conv" not in analysed_params(space)


def synthetic_trials(space, n: int, seed: int = 0) -> list[Trial]:
    rng = random.Random(seed)
    out = []
    for number in range(n):
        config = space.sample(rng)
        error = 0.3 + 0.1 * abs(math.log10(config["learning_rate"]) + 2) + 0.05 * config["n_fc"]
        out.append(trial(number, config, error))
    return out


def test_too_few_successful_trials_give_a_note_not_numbers(tiny_settings) -> None:
    space = build_space(tiny_settings.space, 32)
    trials = synthetic_trials(space, 7) + [trial(7, space.sample(random.Random(9)), None)]
    params = ("learning_rate", "batch_size", "l1", "l2", "filter_size", "n_conv", "n_fc")
    result = importance(trials, space)
    assert result.note == "7 successful trials at 32 px; fANOVA of 7 hyperparameters needs at least 8"
    assert not result.single and not result.pairs
    assert (result.resolution, result.n_trials, result.params) == (32, 7, params)
    constant = importance([trial(i, t.config, 0.5) for i, t in enumerate(synthetic_trials(space, 10))], space)
    assert constant.note == "the validation error is the same (0.5000) in all 10 successful trials at 32 px: nothing to explain"
    assert (constant.resolution, constant.n_trials, constant.params) == (32, 10, params)
    assert importance(synthetic_trials(space, 8), space).note is None  # just enough
    table = markdown([result], "notes")
    assert "not analysed: 7 successful trials at 32 px" in table


def test_a_space_where_nothing_varies_gives_a_note() -> None:
    """With no parameter to analyse there is nothing to fit a forest to, whether the
    errors differ or not (one trial would already pass the count of trials needed)."""
    fixed = build_space({
        "n_fc": {"type": "int", "low": 2, "high": 2},
        "pooling": {"type": "categorical", "choices": [2]},
    }, 8)
    for errors in ([0.5], [0.5, 0.6]):
        result = importance([trial(i, {"n_fc": 2, "pooling": 2}, e) for i, e in enumerate(errors)], fixed)
        assert result.note == "no hyperparameter takes more than one value at 8 px: nothing to analyse"
        assert (result.resolution, result.n_trials, result.params) == (8, len(errors), ())
        assert not result.single and not result.pairs


def test_learning_rate_dominates_a_learning_rate_driven_error(tiny_settings) -> None:
    space = build_space(tiny_settings.space, 32)
    result = importance(synthetic_trials(space, 60), space)
    assert result.note is None
    assert max(result.single, key=result.single.get) == "learning_rate"
    assert result.subsets()[0] == (("learning_rate",), result.single["learning_rate"])
    assert len(result.pairs) == 21  # 7 parameters


def made_up(resolution: int, shares: dict[tuple[str, ...], float]) -> Importance:
    single = {s[0]: v for s, v in shares.items() if len(s) == 1}
    pairs = {(s[0], s[1]): v for s, v in shares.items() if len(s) == 2}
    return Importance(resolution, 50, tuple(single), single, pairs)


def test_top_k_table_and_overlaps() -> None:
    low = made_up(8, {("a",): 0.5, ("b",): 0.2, ("c",): 0.1, ("a", "b"): 0.15, ("a", "c"): 0.01, ("b", "c"): 0.0})
    high = made_up(16, {("a",): 0.4, ("b",): 0.05, ("c",): 0.3, ("a", "b"): 0.02, ("a", "c"): 0.2, ("b", "c"): 0.01})
    note = Importance(32, 3, ("a", "b", "c"), note="too few")
    assert low.top(3) == [("a",), ("b",), ("a", "b")]
    assert low.top(1) == [("a",)]
    tie = made_up(8, {("b",): 0.2, ("a",): 0.2, ("b", "c"): 0.2, ("a", "c"): 0.2, ("c",): 0.1})
    assert [s for s, _ in tie.subsets()] == [("a",), ("b",), ("a", "c"), ("b", "c"), ("c",)]
    assert high.top(3) == [("a",), ("c",), ("a", "c")]
    rows = top_subsets_table([low, high, note], ks=(2, 3))
    assert rows[0]["top3"] == "a; b; a x b"
    assert rows[0]["top2_overlap_with_largest"] == 0.5  # {a, b} vs {a, c}
    assert rows[0]["top3_overlap_with_largest"] == pytest.approx(1 / 3)
    assert rows[1]["top3_overlap_with_largest"] == 1.0
    assert rows[1]["top3_common_to_all"] == pytest.approx(1 / 3)
    assert rows[2]["note"] == "too few" and rows[2]["top3"] == ""
    with pytest.raises(ValueError, match="one length"):
        overlap([("a",)], [("a",), ("b",)])
    with pytest.raises(ValueError, match="k >= 1"):
        low.top(0)


def test_overlaps_are_with_the_last_analysed_resolution_and_notes_leave_cells_empty() -> None:
    """By hand: top-2 are a, b at 8 and 64 px and a, c at 16 px; a alone is in all three."""
    low = made_up(8, {("a",): 0.5, ("b",): 0.2, ("c",): 0.1, ("a", "b"): 0.15, ("a", "c"): 0.01, ("b", "c"): 0.0})
    high = made_up(16, {("a",): 0.4, ("b",): 0.05, ("c",): 0.3, ("a", "b"): 0.02, ("a", "c"): 0.2, ("b", "c"): 0.01})
    note = Importance(32, 3, ("a", "b", "c"), note="too few")
    largest = made_up(64, {("a",): 0.5, ("b",): 0.2, ("c",): 0.1, ("a", "b"): 0.15, ("a", "c"): 0.01, ("b", "c"): 0.0})
    importances = [low, high, note, largest]
    keys = ("resolution", "n_trials", "note", "top2", "top2_overlap_with_largest", "top2_common_to_all")
    assert top_subsets_table(importances, ks=(2,)) == [dict(zip(keys, row, strict=True)) for row in [
        (8, 50, "", "a; b", 1.0, 0.5), (16, 50, "", "a; c", 0.5, 0.5),
        (32, 3, "too few", "", "", ""), (64, 50, "", "a; b", 1.0, 0.5),
    ]]
    assert markdown(importances, "Importance", ks=(2,)) == (
        "## Importance\n\n"
        "| resolution (px) | successful trials | top 2 (explained variance) | top-2 overlap with largest | top-2 common to all |\n"
        "|---|---|---|---|---|\n"
        "| 8 | 50 | a 50.0%, b 20.0% | 100% | 50% |\n"
        "| 16 | 50 | a 40.0%, c 30.0% | 50% | 50% |\n"
        "| 32 | 3 | not analysed: too few |  |  |\n"
        "| 64 | 50 | a 50.0%, b 20.0% | 100% | 50% |\n"
    )
    keys = ("resolution", "n_trials", "subset", "size", "explained_variance")
    assert importance_rows([note, high]) == [dict(zip(keys, row, strict=True)) for row in [
        (16, 50, "a", 1, 0.4), (16, 50, "c", 1, 0.3), (16, 50, "a x c", 2, 0.2),
        (16, 50, "b", 1, 0.05), (16, 50, "a x b", 2, 0.02), (16, 50, "b x c", 2, 0.01),
    ]]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return experiment_stores.make_stores(tmp_path_factory)


def test_importance_from_real_stores_equals_an_independent_recomputation(stores: Path) -> None:
    """Pooled per resolution as in the paper's Fig. 2; singles recomputed here with Optuna
    from the raw trial records, pairs from the top-k table's own inputs."""
    settings = experiment_stores.settings()
    by_resolution = experiment_stores.trials_by_resolution(stores)
    pooled = {r: [t for ts in by_o.values() for t in ts] for r, by_o in by_resolution.items()}
    results = importance_by_resolution(pooled, settings.space, seed=3)
    assert [r.resolution for r in results] == [16, 32]
    assert any(r.note is None for r in results), [r.note for r in results]
    for result in results:
        space = build_space(settings.space, result.resolution)
        ok = [t for t in pooled[result.resolution] if t.ok]
        assert result.n_trials == len(ok)
        if len(ok) < 8:
            assert result.note is not None
            continue
        study = optuna.create_study()
        for t in ok:
            values = {
                "learning_rate": math.log10(t.config["learning_rate"]), "l1": math.log10(t.config["l1"]),
                "l2": math.log10(t.config["l2"]), "batch_size": float(space["batch_size"].choices.index(t.config["batch_size"])),
                "filter_size": float(space["filter_size"].choices.index(t.config["filter_size"])),
                "n_conv": float(t.config["n_conv"]), "n_fc": float(t.config["n_fc"]),
            }
            limits = {
                "learning_rate": (-4, math.log10(0.3)), "l1": (-7, -3), "l2": (-7, -2),
                "batch_size": (-0.5, 3.5), "filter_size": (-0.5, 2.5),
                "n_conv": (0.5, space["n_conv"].high + 0.5), "n_fc": (0.5, 2.5),
            }
            study.add_trial(optuna.trial.create_trial(
                params={p: values[p] for p in result.params},
                distributions={p: optuna.distributions.FloatDistribution(*limits[p]) for p in result.params},
                value=t.val_error,
            ))
        expected = optuna.importance.FanovaImportanceEvaluator(seed=3).evaluate(study, params=list(result.params))
        assert result.single == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert all(0 <= v <= 1 for v in [*result.single.values(), *result.pairs.values()])
    rows = top_subsets_table(results)
    analysed = [r for r in results if r.note is None]
    for result, row in zip(results, rows, strict=True):
        if result.note is not None:
            continue
        ranked = sorted(
            [((p,), v) for p, v in result.single.items()] + list(result.pairs.items()),
            key=lambda e: (-e[1], len(e[0]), e[0]),
        )
        for k in (5, 10):
            top = [s for s, _ in ranked[:k]]
            assert row[f"top{k}"] == "; ".join(" x ".join(s) for s in top)
            largest = analysed[-1].top(k)
            assert row[f"top{k}_overlap_with_largest"] == len(set(top) & set(largest)) / k


@pytest.mark.parametrize("name", ["importance", "importance-paper"])
def test_experiment1_studies_run_every_resolution_independently(name: str) -> None:
    study = compose(f"study={name}").study
    assert study.strategies == ("independent",)
    assert study.stages("independent") == [(r, study.budget) for r in study.ladder]
    assert study.optimizers == ("random", "tpe", "ga")
    per_resolution = study.budget * len(study.seeds) * len(study.optimizers)
    assert per_resolution >= 8 * 10  # pooled trials: ten times what fANOVA of 7 needs
    if name == "importance-paper":
        assert (study.datasets, study.ladder, study.budget, study.seeds) == (("stl10",), (32, 48, 96), 1500, (0, 1, 2))
    else:
        assert study.datasets == ("synthetic",) and len(study.ladder) >= 3
        assert per_resolution * len(study.ladder) <= 400  # minutes on 2 cores
