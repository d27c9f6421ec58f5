"""The search space is the data in conf/space: checked at load, built per resolution, and a
new hyperparameter declared there reaches every optimizer and the model."""

from __future__ import annotations

import copy
import json
import math
import random
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from helpers import TINY, compose
from iishpo import cli
from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch
from iishpo.jobs.stage import TRIALS, StageKey, run_stage
from iishpo.optimizers import REGISTRY
from iishpo.search.space import (
    CATEGORICAL,
    FLOAT,
    INT,
    Param,
    ResolutionBound,
    SearchSpace,
    build_space,
    parse_space,
)
from iishpo.settings.config import ConfigError
from iishpo.store import read_trials
from iishpo.training import fit as training


@cache
def composed_spec(space: str) -> dict[str, Any]:
    return compose(f"space={space}").space


def cnn_spec() -> dict[str, Any]:
    """A fresh copy of the shipped ``cnn`` mapping, as the configuration composes it."""
    return copy.deepcopy(composed_spec("cnn"))


# -- the shipped spaces, built per resolution ----------------------------------------------
SHIPPED_ORDER = ["learning_rate", "batch_size", "l1", "l2", "filter_size", "n_conv", "n_fc"]


@pytest.mark.parametrize(
    ("space", "resolution", "n_conv", "n_fc"),
    [("cnn", 8, 2, 3), ("cnn", 16, 3, 3), ("cnn", 64, 5, 3), ("cnn", 128, 6, 3), ("cnn", 512, 6, 3),
     ("cnn_small", 16, 3, 2), ("cnn_small", 64, 4, 2)],
)
def test_shipped_space_at_a_resolution(space: str, resolution: int, n_conv: int, n_fc: int) -> None:
    built = build_space(composed_spec(space), resolution)
    conv = [f"conv_filters_{i}" for i in range(n_conv)]
    fc = [f"fc_units_{j}" for j in range(n_fc)]
    # declared order, then each per-layer parameter once per layer the (bounded) count allows
    assert [p.name for p in built.params] == SHIPPED_ORDER + conv + fc
    assert (built["n_conv"].low, built["n_conv"].high) == (1, n_conv)
    assert built.layer_counts == ("n_conv", "n_fc")
    assert [p.name for p in built.layers_of("n_conv")] == conv
    assert [p.active_if for p in built.layers_of("n_fc")] == [("n_fc", j) for j in range(n_fc)]
    assert built.resolution_bound == ResolutionBound("n_conv", 2)
    kinds = {p.name: p.kind for p in built.params}
    assert kinds["learning_rate"] == kinds["l1"] == kinds["l2"] == FLOAT
    assert kinds["batch_size"] == kinds["filter_size"] == CATEGORICAL
    assert {kinds[name] for name in ["n_conv", "n_fc", *conv, *fc]} == {INT}
    assert all(type(p.low) is int and type(p.high) is int for p in built.params if p.kind == INT)


def test_cnn_ranges_are_the_documented_ones() -> None:
    space = build_space(cnn_spec(), 128)
    assert space["learning_rate"] == Param("learning_rate", FLOAT, low=1e-4, high=0.3, log=True)
    assert space["batch_size"].choices == (16, 32, 64, 128, 256)
    assert space["filter_size"].choices == (3, 5, 7)
    assert space["conv_filters_5"] == Param(
        "conv_filters_5", INT, low=8, high=256, log=True, active_if=("n_conv", 5)
    )
    assert space["fc_units_2"] == Param(
        "fc_units_2", INT, low=16, high=1024, log=True, active_if=("n_fc", 2)
    )


@pytest.mark.parametrize(
    ("resolution", "min_feature_size", "layers"),
    [(3, 2, 0), (4, 2, 1), (16, 2, 3), (17, 2, 3), (31, 2, 3), (32, 2, 4), (32, 4, 3), (128, 1, 7)],
)
def test_resolution_bound_counts_halvings(resolution: int, min_feature_size: int, layers: int) -> None:
    assert ResolutionBound("n_conv", min_feature_size).max_layers(resolution) == layers


def test_without_a_resolution_bound_the_count_keeps_its_range() -> None:
    spec = {k: v for k, v in cnn_spec().items() if k != "resolution_bound"}
    space = build_space(spec, 8)
    assert space.resolution_bound is None
    assert space["n_conv"].high == 6 and "conv_filters_5" in space


def test_resolution_below_the_count_low_is_rejected() -> None:
    spec = cnn_spec()
    spec["n_conv"]["low"] = 3
    with pytest.raises(ValueError, match=r"8 px fits at most 2 n_conv layers.*lower space.n_conv.low"):
        build_space(spec, 8)


def test_space_round_trips_through_its_dict() -> None:
    space = build_space(cnn_spec(), 32)
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.params == space.params
    assert again.resolution_bound == space.resolution_bound


# -- malformed declarations fail at load, naming the parameter, the key and what is allowed -
BAD_SPECS = [
    ({"dropout": {"low": 0.1, "high": 0.5}},
     "space.dropout: missing key 'type'; allowed types: float, int, categorical"),
    ({"dropout": {"type": "double", "low": 0.1, "high": 0.5}},
     "space.dropout.type: 'double' is not a type; allowed: float, int, categorical"),
    ({"dropout": {"type": "float", "low": 0.1, "high": 0.5, "scale": 2}},
     "space.dropout: unknown key 'scale' for type float; allowed: type, low, high, log, per_layer_of"),
    ({"batch_size": {"type": "categorical", "choices": [16], "log": True}},
     "space.batch_size: unknown key 'log' for type categorical; allowed: type, choices, per_layer_of"),
    ({"dropout": {"type": "float", "low": 0.5, "high": 0.1}},
     "space.dropout: low must be <= high, got low=0.5 high=0.1"),
    ({"l1": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}},
     "space.l1.low: a log-scaled range needs low > 0, got 0.0"),
    ({"dropout": {"type": "float", "high": 0.5}},
     "space.dropout: missing key 'low'; a float parameter needs low and high"),
    ({"dropout": {"type": "float", "low": "abc", "high": 0.5}},
     "space.dropout.low must be a finite number, got 'abc'"),
    ({"n_fc": {"type": "int", "low": 1.5, "high": 3}},
     "space.n_fc.low must be a whole number for an int parameter, got 1.5"),
    ({"l2": {"type": "float", "low": 1e-7, "high": 1e-2, "log": "yes"}},
     "space.l2.log must be true or false, got 'yes'"),
    ({"batch_size": {"type": "categorical", "choices": []}},
     "space.batch_size.choices must be a non-empty list, got []"),
    ({"batch_size": {"type": "categorical", "choices": [16, 32, 16]}},
     "space.batch_size.choices has duplicates: [16, 32, 16]"),
    ({"fc_dropout": {"type": "float", "low": 0.0, "high": 0.5, "per_layer_of": "learning_rate"}},
     ("space.fc_dropout.per_layer_of: 'learning_rate' is not a layer count; allowed: a declared "
      "int parameter without per_layer_of, one of ['n_conv', 'n_fc']")),
    ({"fc_dropout": {"type": "float", "low": 0.0, "high": 0.5, "per_layer_of": "n_dense"}},
     "space.fc_dropout.per_layer_of: 'n_dense' is not a layer count"),
    ({"fc_dropout": {"type": "float", "low": 0.0, "high": 0.5, "per_layer_of": "fc_units"}},
     "space.fc_dropout.per_layer_of: 'fc_units' is not a layer count"),
    ({"n_fc": {"type": "int", "low": -1, "high": 3}},
     "space.n_fc.low: a layer count needs low >= 0, got -1"),
    ({"min_feature_size": 2},
     ("space.min_feature_size: a parameter is declared by a mapping with 'type' (float, int, "
      "categorical), or the key must be 'resolution_bound'; got 2")),
    ({"fc_dropout": {"type": "float", "low": 0.0, "high": 0.5, "per_layer_of": 3}},
     "space.fc_dropout.per_layer_of must name a layer count parameter, got 3"),
    ({"batch_size": {"type": "categorical", "choices": "16"}},
     "space.batch_size.choices must be a non-empty list, got '16'"),
    ({"resolution_bound": {"param": "n_fc", "min_feature_size": 2, "stride": 2}},
     "space.resolution_bound must be a mapping with exactly the keys param, min_feature_size"),
    ({"resolution_bound": {"param": "learning_rate", "min_feature_size": 2}},
     "space.resolution_bound.param: 'learning_rate' is not a declared int parameter"),
    ({"resolution_bound": {"param": "n_conv", "min_feature_size": 0}},
     "space.resolution_bound.min_feature_size must be a whole number >= 1, got 0"),
    ({"resolution_bound": {"param": "n_conv", "min_feature_size": True}},
     "space.resolution_bound.min_feature_size must be a whole number >= 1, got True"),
    ({"resolution_bound": {"param": "n_conv", "min_feature_size": 2.5}},
     "space.resolution_bound.min_feature_size must be a whole number >= 1, got 2.5"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SPECS)
def test_malformed_space_is_rejected_naming_what_is_allowed(change: dict[str, Any], message: str) -> None:
    spec = {**cnn_spec(), **change}
    with pytest.raises(ValueError) as err:
        parse_space(spec)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "space must map parameter names to declarations, got [1, 2]"),
        ({}, "space declares no parameter"),
        ({"resolution_bound": {"param": "n_conv", "min_feature_size": 2}},
         "space declares no parameter"),
    ],
)
def test_a_space_that_is_no_mapping_of_parameters_is_rejected(spec: Any, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_space(spec)
    assert str(err.value) == message


def test_declarations_at_the_edges_of_what_is_allowed_build() -> None:
    """A fixed range (low == high), a layer count that may be 0, a categorical per-layer
    parameter and a minimum feature size of 1 px are all valid declarations."""
    spec = cnn_spec()
    spec["dropout"] = {"type": "float", "low": 0.3, "high": 0.3}
    spec["n_fc"]["low"] = 0
    spec["activation"] = {
        "type": "categorical", "choices": ["relu", "tanh"], "per_layer_of": "n_conv"
    }
    spec["resolution_bound"]["min_feature_size"] = 1
    space = build_space(spec, 16)  # 16 -> 8 -> 4 -> 2 -> 1: four halvings keep >= 1 px
    assert space["dropout"] == Param("dropout", FLOAT, low=0.3, high=0.3)
    assert (space["n_fc"].low, space["n_fc"].high) == (0, 3)
    assert (space["n_conv"].low, space["n_conv"].high) == (1, 4)
    assert [p for p in space.params if p.name.startswith("activation")] == [
        Param(f"activation_{i}", CATEGORICAL, choices=("relu", "tanh"), active_if=("n_conv", i))
        for i in range(4)
    ]
    no_fc = {k: v for k, v in GOOD.items() if k != "fc_units_0"}
    config = {**no_fc, "n_fc": 0, "dropout": 0.3, "activation_0": "tanh", "activation_1": "relu"}
    assert space.violations(config) == []


def test_a_resolution_that_fits_exactly_the_count_low_is_accepted() -> None:
    spec = cnn_spec()
    spec["n_conv"]["low"] = 2
    space = build_space(spec, 8)  # 8 -> 4 -> 2: two halvings keep >= 2 px
    assert (space["n_conv"].low, space["n_conv"].high) == (2, 2)
    assert [p.name for p in space.layers_of("n_conv")] == ["conv_filters_0", "conv_filters_1"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+space.dropout={low:0.1,high:0.5}", "space.dropout: missing key 'type'"),
        ("space.n_conv.low=5", "space.n_conv: low must be <= high, got low=5 high=4"),
        ("space.n_conv.type=float", "space.conv_filters.per_layer_of: 'n_conv' is not a layer count"),
        ("+space.conv_filters.step=2", "space.conv_filters: unknown key 'step' for type int"),
    ],
)
def test_check_rejects_a_malformed_space(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose(override)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+space.fc_dropuot={type: float, low: 0.0, high: 0.5, per_layer_of: n_fc}",
         "space parameter 'fc_dropuot' is read by no code"),
        ("~space.l1", "space parameter 'l1' is required by src/iishpo/training/fit.py"),
        # spaces that some optimizer of the study cannot search: SMAC's ConfigSpace cannot
        # normalise this log range, the GA cannot hash lists as choices
        ("space.l1.low=1e-300",
         "optimizer 'smac' cannot search the space at 32 px: ValueError: Hyperparameter 'l1' has illegal settings"),
        ("space.filter_size.choices=[[3,3],[5,5]]",
         "optimizer 'ga' cannot search the space at 32 px: TypeError: unhashable type: 'list'"),
    ],
)
def test_check_rejects_a_space_the_code_or_an_optimizer_cannot_use(
    override: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", *TINY, override]) == 2
    assert message in capsys.readouterr().err


def test_search_space_rejects_a_layer_without_an_int_count_before_it() -> None:
    lr = Param("learning_rate", FLOAT, low=1e-3, high=1e-1)
    count = Param("n", INT, low=1, high=2)
    on_lr = Param("width_0", INT, low=1, high=2, active_if=("learning_rate", 0))
    on_n = Param("width_0", INT, low=1, high=2, active_if=("n", 0))
    message = (
        "active_if names {!r}, which must be an earlier unconditional int parameter (a layer count)"
    )
    with pytest.raises(ValueError, match=re.escape("width_0: " + message.format("learning_rate"))):
        SearchSpace((lr, on_lr), resolution=16)
    with pytest.raises(ValueError, match=re.escape("width_0: " + message.format("n"))):
        SearchSpace((on_n, count), resolution=16)  # the count after its layer
    with pytest.raises(ValueError, match="two parameters named 'n'"):
        SearchSpace((count, count), resolution=16)
    assert SearchSpace((count, on_n), resolution=16).layer_counts == ("n",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "double"}, "x: kind 'double' is not one of ('float', 'int', 'categorical')"),
        ({"kind": CATEGORICAL, "choices": ()},
         "x: a categorical parameter needs non-empty choices"),
        ({"kind": FLOAT, "low": 2.0, "high": 1.0}, "x: needs low <= high, got low=2.0 high=1.0"),
        ({"kind": FLOAT, "high": 1.0}, "x: needs low <= high, got low=None high=1.0"),
        ({"kind": INT, "low": 1}, "x: needs low <= high, got low=1 high=None"),
        ({"kind": FLOAT, "low": 0.0, "high": 1.0, "log": True},
         "x: a log-scaled range needs low > 0, got 0.0"),
    ],
)
def test_param_rejects_a_domain_it_cannot_sample(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        Param("x", **fields)
    assert str(err.value) == message


def test_a_log_scaled_int_draws_each_value_with_its_log_uniform_share() -> None:
    """Each integer k owns [k - 0.5, k + 0.5] of a log-uniform draw on [low - 0.5, high + 0.5]:
    on [0.5, 3.5] that is ln(3)/ln(7), ln(5/3)/ln(7) and ln(7/5)/ln(7)."""
    param = Param("n", INT, low=1, high=3, log=True)
    rng = random.Random(0)
    draws = Counter(param.sample(rng) for _ in range(4000))
    expected = {k: math.log((k + 0.5) / (k - 0.5)) / math.log(3.5 / 0.5) for k in (1, 2, 3)}
    assert set(draws) == {1, 2, 3}
    for value, share in expected.items():
        assert draws[value] / 4000 == pytest.approx(share, abs=0.03), (value, draws)


def test_the_unit_interval_of_a_numeric_parameter_is_its_sampling_scale() -> None:
    rate = Param("rate", FLOAT, low=1e-4, high=1e-2, log=True)
    assert rate.to_unit(1e-3) == pytest.approx(0.5, rel=1e-12)
    assert rate.from_unit(0.5) == pytest.approx(1e-3, rel=1e-12)
    assert rate.from_unit(-0.3) == pytest.approx(1e-4, rel=1e-12) and rate.from_unit(1.7) == pytest.approx(1e-2, rel=1e-12)
    shift = Param("shift", FLOAT, low=-1.0, high=3.0)
    assert (shift.to_unit(0.0), shift.from_unit(0.75), shift.from_unit(2.0)) == (0.25, 2.0, 3.0)
    # an integer owns a third each of [0.5, 3.5] (less 1e-9 at both ends), rounded back
    count = Param("count", INT, low=1, high=3)
    assert count.unit_bounds() == (0.5 + 1e-9, 3.5 - 1e-9)
    assert count.to_unit(2) == pytest.approx(0.5, rel=1e-12)
    values = [count.from_unit(u) for u in (0.0, 0.32, 0.34, 0.66, 0.67, 1.0)]
    assert values == [1, 1, 2, 2, 3, 3] and all(type(v) is int for v in values)
    log_count = Param("filters", INT, low=4, high=32, log=True)
    assert log_count.unit_bounds() == (math.log(3.5 + 1e-9), math.log(32.5 - 1e-9))


def test_clip_of_a_categorical_keeps_a_choice_takes_the_nearest_number_or_the_first() -> None:
    sizes = Param("batch_size", CATEGORICAL, choices=(16, 32, "auto"))
    activation = Param("activation", CATEGORICAL, choices=("relu", "tanh"))
    assert sizes.clip("auto") == "auto" and sizes.clip(27) == 32 and sizes.clip("large") == 16
    assert activation.clip("tanh") == "tanh"
    assert activation.clip("gelu") == "relu" and activation.clip(0.5) == "relu"


# -- membership: every kind of violation is found ------------------------------------------
GOOD = {
    "learning_rate": 0.01, "batch_size": 32, "l1": 1e-5, "l2": 1e-4, "filter_size": 3,
    "n_conv": 2, "n_fc": 1, "conv_filters_0": 16, "conv_filters_1": 32, "fc_units_0": 64,
}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


@pytest.mark.parametrize(
    ("config", "problems"),
    [
        (without("conv_filters_1"), ["missing conv_filters_1"]),
        (without("n_fc"), ["missing n_fc"]),  # its layers cannot be judged without it
        ({**GOOD, "conv_filters_2": 8}, ["conv_filters_2 given but inactive"]),
        ({**GOOD, "learning_rate": 0.5}, ["learning_rate=0.5 outside [0.0001, 0.3] (log)"]),
        ({**GOOD, "fc_units_0": 8}, ["fc_units_0=8 outside [16, 1024] (log)"]),
        ({**GOOD, "conv_filters_0": 16.5}, ["conv_filters_0=16.5 outside [8, 256] (log)"]),
        ({**GOOD, "n_fc": True}, ["n_fc=True outside [1, 3]"]),
        ({**GOOD, "l1": "small"}, ["l1='small' outside [1e-07, 0.001] (log)"]),
        ({**GOOD, "batch_size": 48}, ["batch_size=48 outside choices [16, 32, 64, 128, 256]"]),
        ({**GOOD, "momentum": 0.9}, ["unknown parameter momentum"]),
        (  # the conv layers cannot be judged without n_conv, the fc layers after them still are
            {**without("n_conv"), "fc_units_0": 8},
            ["missing n_conv", "fc_units_0=8 outside [16, 1024] (log)"],
        ),
        (
            {**GOOD, "n_conv": 4, "conv_filters_2": 8, "conv_filters_3": 8},
            ["n_conv=4 outside [1, 3]", "unknown parameter conv_filters_3"],  # 16 px: 3 layers
        ),
    ],
)
def test_violations_name_every_problem(config: dict[str, Any], problems: list[str]) -> None:
    space = build_space(cnn_spec(), 16)
    assert space.violations(GOOD) == [] and space.contains(GOOD)
    space.validate(GOOD)
    assert space.violations(config) == problems
    assert not space.contains(config)
    with pytest.raises(ValueError) as err:
        space.validate(config)
    assert str(err.value).endswith("is not in the space: " + "; ".join(problems))


def test_project_clips_and_fills_new_layers() -> None:
    space = build_space(cnn_spec(), 16)
    config = {**GOOD, "learning_rate": 5.0, "batch_size": 40, "n_conv": 9, "conv_filters_0": 300}
    projected = space.project(config, random.Random(0))
    assert projected["learning_rate"] == 0.3 and projected["batch_size"] == 32
    assert projected["n_conv"] == 3 and projected["conv_filters_0"] == 256
    assert projected["conv_filters_1"] == 32  # kept
    assert space["conv_filters_2"].contains(projected["conv_filters_2"])  # newly active: drawn
    space.validate(projected)


def test_project_draws_newly_active_layers_from_the_given_rng_or_a_seed_of_0() -> None:
    space = build_space(cnn_spec(), 16)
    config = {**GOOD, "n_conv": 3, "n_fc": 3}
    new_layers = ["conv_filters_2", "fc_units_1", "fc_units_2"]
    for seed in (0, 5):
        rng = random.Random(seed)
        drawn = {name: space[name].sample(rng) for name in new_layers}  # in the space's order
        projected = space.project(config, random.Random(seed))
        assert projected == {**config, **drawn}
        if seed == 0:
            assert space.project(config) == projected  # no rng: the same as seed 0, reproducible


def test_sample_draws_exactly_the_layers_its_count_enables() -> None:
    count = Param("n", INT, low=0, high=2)
    widths = [Param(f"width_{i}", INT, low=1, high=4, active_if=("n", i)) for i in range(2)]
    rate = Param("rate", FLOAT, low=0.1, high=0.2)
    space = SearchSpace((count, rate, *widths), resolution=16)
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(60)]
    assert {s["n"] for s in samples} == {0, 1, 2}
    for s in samples:
        layers = [f"width_{i}" for i in range(s["n"])]
        assert list(s) == ["n", "rate", *layers], s
        assert 0.1 <= s["rate"] <= 0.2 and all(s[name] in range(1, 5) for name in layers)
        assert [p.name for p in space.active_params(s)] == ["n", "rate", *layers]


def test_space_without_a_resolution_bound_round_trips_through_its_dict() -> None:
    spec = {k: v for k, v in cnn_spec().items() if k != "resolution_bound"}
    space = build_space(spec, 8)
    data = space.to_dict()
    assert data["resolution_bound"] is None
    assert SearchSpace.from_dict(json.loads(json.dumps(data))) == space


def test_with_params_replaces_the_parameters_and_keeps_the_rest() -> None:
    space = build_space(cnn_spec(), 16)
    kept = [space["n_conv"], space["conv_filters_0"]]
    narrowed = space.with_params(kept)
    assert narrowed.params == tuple(kept)
    assert (narrowed.resolution, narrowed.resolution_bound) == (16, ResolutionBound("n_conv", 2))
    assert "conv_filters_0" in narrowed and "learning_rate" not in narrowed
    assert space["learning_rate"].name == "learning_rate"  # the original is unchanged


# -- a new hyperparameter is a YAML change: dropout per fully connected layer --------------
FC_DROPOUT = "+space.fc_dropout={type: float, low: 0.1, high: 0.6, per_layer_of: n_fc}"
BUDGET = 3


@pytest.fixture(scope="module")
def dropout_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    settings = compose(*TINY)
    cfg = settings.datasets["synthetic"]
    root = tmp_path_factory.mktemp("data")
    fetch(cfg, root / "raw")
    resolution = settings.study.ladder[-1]
    prepare_dataset("synthetic", cfg, root / "raw", {resolution: root / f"{resolution}px.npz"})
    return root / f"{resolution}px.npz", resolution


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_declared_fc_dropout_reaches_the_optimizer_and_the_model(
    name: str, dropout_data: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_file, resolution = dropout_data
    settings = compose(
        *TINY, FC_DROPOUT, "study.strategies=[standard]", f"study.optimizers=[{name}]",
        f"study.budget={BUDGET}",
    )
    space = build_space(settings.space, resolution)
    assert [p.name for p in space.layers_of("n_fc")] == [
        "fc_units_0", "fc_units_1", "fc_dropout_0", "fc_dropout_1"
    ]
    built: list[nn.Sequential] = []
    build_cnn = training.build_cnn

    def recording_build_cnn(*args: Any, **kwargs: Any) -> nn.Sequential:
        built.append(build_cnn(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(training, "build_cnn", recording_build_cnn)
    run_stage(settings, StageKey("synthetic", name, "standard", 0, 0), data_file, None, tmp_path)

    trials = read_trials(tmp_path / TRIALS)
    assert len(trials) == BUDGET and all(t.ok for t in trials)
    assert len(built) == BUDGET
    for trial, net in zip(trials, built, strict=True):
        config = trial.config
        dropouts = sorted(k for k in config if k.startswith("fc_dropout"))
        assert dropouts == [f"fc_dropout_{j}" for j in range(config["n_fc"])], config
        assert all(type(config[k]) is float and 0.1 <= config[k] <= 0.6 for k in dropouts)
        # one Dropout right after each hidden fc layer's ReLU, at the proposed rate
        layers = list(net)
        hidden = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)][:-1]
        assert [type(layers[i + 1]) for i in hidden] == [nn.ReLU] * len(hidden)
        assert [type(layers[i + 2]) for i in hidden] == [nn.Dropout] * len(hidden)
        assert [layers[i + 2].p for i in hidden] == [config[k] for k in dropouts]
