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

import experiment_stores
from helpers import compose
from iishpo.importance import (
    Importance,
    analysed_params,
    decompose,
    encode,
    importance,
    importance_by_resolution,
    markdown,
    optuna_singles,
    overlap,
    top_subsets_table,
)
from iishpo.space import build_space
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


def test_singles_equal_optunas_fanova_on_the_same_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (40, 3))
    y = np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * rng.normal(size=40)
    bounds = np.array([[0.0, 1.0]] * 3)
    single, _ = decompose(x, y, bounds, seed=3)
    reference = optuna_singles(x, y, bounds, ["p", "q", "r"], seed=3)
    assert single == pytest.approx([reference[p] for p in "pqr"], rel=1e-9, abs=1e-12)


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
    result = importance(trials, space)
    assert result.note == "7 successful trials at 32 px; fANOVA of 7 hyperparameters needs at least 8"
    assert not result.single and not result.pairs and result.n_trials == 7
    constant = [trial(i, t.config, 0.5) for i, t in enumerate(synthetic_trials(space, 10))]
    assert "the same (0.5000) in all 10" in (importance(constant, space).note or "")
    table = markdown([result], "notes")
    assert "not analysed: 7 successful trials at 32 px" in table


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


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return experiment_stores.make_stores(tmp_path_factory)


def test_importance_from_real_stores_equals_an_independent_recomputation(stores: Path) -> None:
    """Pooled per resolution as in the paper's Fig. 2; singles recomputed here with Optuna
    from the raw trial records, pairs from the top-k table's own inputs."""
    settings = experiment_stores.settings()
    by_resolution = experiment_stores.trials_by_resolution(stores)
    pooled = {r: [t for ts in by_o.values() for t in ts] for r, by_o in by_resolution.items()}
    results = importance_by_resolution(pooled, settings.space, seed=0)
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
        expected = optuna.importance.FanovaImportanceEvaluator(seed=0).evaluate(study, params=list(result.params))
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
