"""Every configuration in conf/ composes and validates; bad input fails with a clear message."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from helpers import CONF, compose
from iishpo.optimizers import GROUP, build_settings, locate, optimizer_names, settings_values
from iishpo.optimizers.settings import RandomSettings, TPESettings
from iishpo.settings import config as config_module
from iishpo.settings.config import (
    PRECISIONS,
    ConfigError,
    compose_config,
    load_settings,
    overrides_from_mapping,
)
from iishpo.typed import SettingsError

STUDIES = sorted(p.stem for p in (CONF / "study").glob("*.yaml"))


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_composes_and_validates(study: str) -> None:
    settings = compose(f"study={study}")
    assert settings.study.datasets
    for strategy in settings.study.strategies:
        stages = settings.study.stages(strategy)
        if strategy == "independent":  # the whole budget at every resolution
            assert stages == [(r, settings.study.budget) for r in settings.study.ladder]
        else:  # the same number of evaluations in every run
            assert sum(b for _, b in stages) == settings.study.budget
        assert stages[-1][0] == settings.study.ladder[-1]


@pytest.mark.parametrize("group", ["space", "trainer"])
def test_every_group_option_composes_with_its_own_values(group: str) -> None:
    for path in sorted((CONF / group).glob("*.yaml")):
        own = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "defaults"}
        settings = compose(f"{group}={path.stem}")
        composed = settings.space if group == "space" else dataclasses.asdict(settings.trainer)
        assert_within(own, composed, path.name)


def assert_within(own: dict, composed: dict, where: str) -> None:
    """Every value a group file sets (recursively) is in the composed configuration."""
    for key, value in own.items():
        if isinstance(value, dict):
            assert_within(value, composed[key], f"{where}:{key}")
        else:
            assert composed[key] == value, f"{where}:{key}"


@pytest.mark.parametrize("name", optimizer_names(CONF))
def test_every_optimizer_has_typed_settings_from_its_yaml(name: str) -> None:
    shipped = yaml.safe_load((CONF / GROUP / f"{name}.yaml").read_text())
    settings = compose().optimizers[name]
    assert type(settings) is locate(shipped["_target_"])
    assert dataclasses.asdict(settings) == settings_values(shipped)


def test_every_optimizer_file_is_composed_where_a_study_may_override_it(tmp_path: Path) -> None:
    """conf/config.yaml lists no optimizer: a new file is composed under its name, before
    the study, so that a study's own optimizer settings win."""
    conf = shutil.copytree(CONF, tmp_path / "conf")
    shutil.copy(conf / GROUP / "random.yaml", conf / GROUP / "blind.yaml")
    study = yaml.safe_load((conf / "study" / "smoke.yaml").read_text())
    study["optimizers"] = {"tpe": {"gamma": 0.4}}
    (conf / "study" / "tuned.yaml").write_text("# @package _global_\n" + yaml.safe_dump(study))
    settings = load_settings(["study=tuned", "study.optimizers=[blind,tpe]"], config_dir=conf)
    assert sorted(settings.optimizers) == sorted([*optimizer_names(CONF), "blind"])
    assert settings.optimizers["blind"] == RandomSettings()
    assert isinstance(settings.optimizers["tpe"], TPESettings) and settings.optimizers["tpe"].gamma == 0.4


def test_paper_study_encodes_the_protocol() -> None:
    study = compose("study=paper").study
    assert study.budget == 1500
    assert study.stages("iis") == [(32, 750), (64, 500), (128, 250)]
    assert study.stages("standard") == [(128, 1500)]
    assert study.seeds == (0, 1, 2)
    assert study.datasets == ("flowers102",)


def test_narrowing_runs_the_iis_budgets_at_the_largest_resolution() -> None:
    study = compose("study.strategies=[standard,iis,narrowing]").study
    assert study.ladder == (8, 16, 32) and study.iis_budgets == (6, 4, 2)
    assert study.stages("iis") == [(8, 6), (16, 4), (32, 2)]
    assert study.stages("narrowing") == [(32, 6), (32, 4), (32, 2)]
    assert study.stages("standard") == [(32, 12)]


def test_the_precisions_allowed_are_lightnings() -> None:
    """`trainer.precision` is checked at load without importing Lightning; the list it is
    checked against must be the strings Lightning's Trainer takes, and "auto"."""
    from lightning.fabric.plugins.precision.precision import (
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )

    assert len(set(PRECISIONS)) == len(PRECISIONS)
    assert set(PRECISIONS) == {"auto", *get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS)}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["study.budget=13"], "must be positive and sum to study.budget=13"),
        (["study.unknown_key=1"], "Could not override 'study.unknown_key'"),
        (["study=no_such_study"], "Could not find 'study/no_such_study'"),
        (["study.optimizers=[random,annealing]"], "['annealing'] not available"),
        (["study.strategies=[standard,sideways]"], "['sideways'] not available"),
        (["study.ladder=[32,16,64]"], "strictly increasing"),
        (["study.ladder=[16,32]"], "one budget per ladder resolution"),
        (["study.ladder=[2,4,8]"], ">= 4 px"),
        (["study.seeds=[0,0]"], "duplicates"),
        (["study.ladder=[16,32,256]"], "has 128 px images"),
        (["space.n_conv.low=3"], "impossible ladder"),  # 8 px fits 2 conv layers
        (["trainer.accelerator=tpu"], "allowed: ('auto'"),
        (["trainer.patience=0"], "patience"),
        (["study.ranges.top_fraction=1.5"], "top_fraction must be in (0, 1]"),
        (["study.max_failure_fraction=2"], "max_failure_fraction must be in [0, 1]"),
        (["datasets.synthetic.color=sepia"], "color must be 'rgb' or 'gray'"),
        (["datasets.synthetic.test_metric=f1"], "test_metric must be one of"),
        (["+study.typo=3"], "unknown keys ['typo']"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs must be an integer, got 'abc' (str)"),
        (["trainer.momentum=fast"], "trainer.momentum must be a number, got 'fast'"),
        (["trainer.precision=[32]"], "trainer.precision must be a string"),
        (["trainer.precision=17-true"], "trainer.precision '17-true' not allowed; allowed: ('auto', '64-true'"),
        (["study.budget=1.5"], "study.budget must be an integer, got 1.5"),
        (["study.seeds=7"], "study.seeds must be a list of integers, got 7"),
        (["study.seeds=[0,x]"], "study.seeds[1] must be an integer, got 'x'"),
        (["study.seeds=[-1]"], "study.seeds must be >= 0"),
        (["study.ladder=[]"], "study.ladder must be a non-empty list"),
        (["study.ranges.margin=wide"], "study.ranges.margin must be a number"),
        (["study.ranges=3"], "study.ranges must be a mapping"),
        (["optimizers.ga.min_population=1"], "optimizers.ga: need 2 <= min_population"),
        (["optimizers.ga.gene_mutation_prob=1.5"], "optimizers.ga: gene_mutation_prob must be in [0, 1]"),
        (["optimizers.tpe.gamma=7"], "optimizers.tpe: gamma must be in (0, 1), got 7"),
        (["optimizers.tpe.min_startup=three"], "optimizers.tpe.min_startup must be an integer"),
        (["+optimizers.tpe.gama=0.3"], "optimizers.tpe: unknown keys ['gama']"),
        (["optimizers.tpe=3"], "optimizers.tpe must be a mapping of settings, got 3"),
        (["+optimizers.random.seed=3"], "optimizers.random: unknown keys ['seed']"),
        (["optimizers.smac.initial_fraction=2"], "optimizers.smac: initial_fraction must be in [0, 1]"),
        (["optimizers.smac.retrain_after=0"], "optimizers.smac: retrain_after must be >= 1"),
        (["optimizers.smac.retrain_scale=0"], "optimizers.smac: retrain_scale must be >= 1, got 0"),
        (["optimizers.tpe.max_history=30"], "optimizers.tpe: max_history must be >= 50 (the 25 best trials"),
        (["+optimizers.annealing={}"], "optimizers.annealing: _target_ must name the optimizer's settings class"),
        (["+optimizers.annealing={_target_: iishpo.optimizers.anneal.Settings}"],
         "optimizers.annealing._target_: cannot import 'iishpo.optimizers.anneal.Settings'"),
        (["optimizers.tpe._target_=iishpo.search.space.Param"],
         "optimizers.tpe._target_: 'iishpo.search.space.Param' is not a subclass of OptimizerSettings"),
        (["study.ranges.rule=quantile"], "study.ranges.rule 'quantile' is not a range-extraction rule; allowed: ('evidence', 'hull')"),
        (["study.ranges.min_width=0"], "study.ranges.min_width must be in (0, 1]"),
        (["study.ranges.min_width=1.5"], "study.ranges.min_width must be in (0, 1]"),
        (["study.ranges.alpha=1"], "study.ranges.alpha must be in (0, 1)"),
        (["study.strategies=[standard,narrowing]", "study.ladder=[32]", "study.iis_budgets=[12]"],
         "the narrowing strategy needs a ladder of >= 2 resolutions"),
        (["study.strategies=[iis,narrowing]", "study.ladder=[32]", "study.iis_budgets=[12]"],
         "the iis and narrowing strategies need a ladder of >= 2 resolutions"),
        (["study.transfer.configurations=2"],
         "study.transfer.configurations must be >= 3 (a rank correlation needs at least 3 pairs), got 2"),
        (["study.transfer.top_fraction=0"], "study.transfer.top_fraction must be in (0, 1], got 0.0"),
        (["study.transfer.resamples=10"], "study.transfer.resamples must be >= 100, got 10"),
        (["study.transfer.seed=-1"], "study.transfer.seed must be >= 0, got -1"),
        (["study.transfer.configurations=many"], "study.transfer.configurations must be an integer, got 'many'"),
        (["study.strategies=[standard,transfer]"],
         ("study.strategies: 'transfer' is not listed in a study; its runs come from their own target: "
          "snakemake --cores all transfer")),
    ],
)
def test_bad_configuration_is_rejected_with_a_clear_message(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose(*overrides)
    assert message in str(err.value)


def shipped_with(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """``conf/optimizer/<name>.yaml`` with ``changes``, as the configuration reads it."""
    return {**yaml.safe_load((CONF / GROUP / f"{name}.yaml").read_text()), **changes}


@pytest.mark.parametrize(("name", "changes"), [
    ("tpe", {"startup_fraction": 0.0, "min_startup": 1, "n_ei_candidates": 1, "max_history": 50}),
    ("tpe", {"startup_fraction": 1.0}),
    ("ga", {"population_fraction": 1e-9, "min_population": 2, "max_population": 2, "n_elite": 0, "tournament_size": 1,
            "crossover_prob": 0.0, "gene_swap_prob": 0.0, "gene_mutation_prob": 0.0, "mutation_sigma": 1e-9}),
    ("ga", {"crossover_prob": 1.0, "gene_swap_prob": 1.0, "gene_mutation_prob": 1.0}),
    ("smac", {"initial_fraction": 0.0, "min_initial": 1, "retrain_after": 1, "retrain_scale": 1, "max_history": 2,
              "random_probability": 0.0, "challengers": 1, "local_search_iterations": 1}),
    ("smac", {"initial_fraction": 1.0, "random_probability": 1.0}),
])
def test_optimizer_settings_take_the_values_at_their_limits(name: str, changes: dict[str, Any]) -> None:
    settings = build_settings(name, shipped_with(name, changes))
    assert {key: getattr(settings, key) for key in changes} == changes


@pytest.mark.parametrize(("name", "changes", "message"), [
    ("tpe", {"startup_fraction": -0.5}, "startup_fraction must be in [0, 1], got -0.5"),
    ("tpe", {"startup_fraction": 1.5}, "startup_fraction must be in [0, 1], got 1.5"),
    ("tpe", {"min_startup": 0}, "min_startup must be >= 1, got 0"),
    ("tpe", {"gamma": 0.0}, "gamma must be in (0, 1), got 0.0"),
    ("tpe", {"gamma": 1.0}, "gamma must be in (0, 1), got 1.0"),
    ("tpe", {"n_ei_candidates": 0}, "n_ei_candidates must be >= 1, got 0"),
    ("ga", {"population_fraction": 0.0}, "population_fraction must be > 0, got 0.0"),
    ("ga", {"min_population": 1}, "need 2 <= min_population <= max_population, got 1 and 30"),
    ("ga", {"min_population": 31}, "need 2 <= min_population <= max_population, got 31 and 30"),
    ("ga", {"n_elite": -1}, "n_elite must be >= 0, got -1"),
    ("ga", {"tournament_size": 0}, "tournament_size must be >= 1, got 0"),
    ("ga", {"gene_swap_prob": -0.5}, "gene_swap_prob must be in [0, 1], got -0.5"),
    ("ga", {"crossover_prob": 1.5}, "crossover_prob must be in [0, 1], got 1.5"),
    ("ga", {"mutation_sigma": 0.0}, "mutation_sigma must be > 0, got 0.0"),
    ("smac", {"initial_fraction": -0.5}, "initial_fraction must be in [0, 1], got -0.5"),
    ("smac", {"min_initial": 0}, "min_initial must be >= 1, got 0"),
    ("smac", {"max_history": 1}, "max_history must be >= 2 (the best half of the trials, the most recent half), got 1"),
    ("smac", {"random_probability": -0.5}, "random_probability must be in [0, 1], got -0.5"),
    ("smac", {"random_probability": 1.5}, "random_probability must be in [0, 1], got 1.5"),
    ("smac", {"challengers": 0}, "challengers must be >= 1, got 0"),
    ("smac", {"local_search_iterations": 0}, "local_search_iterations must be >= 1, got 0"),
])
def test_optimizer_settings_refuse_values_beyond_their_limits(name: str, changes: dict[str, Any], message: str) -> None:
    """A value beyond each limit, refused with the whole message (through the loaded
    configuration, above: the same check)."""
    with pytest.raises(SettingsError, match=f"^{re.escape(f'optimizers.{name}: {message}')}$"):
        build_settings(name, shipped_with(name, changes))


#: where the messages say the names that code reads are declared, and what they are
NAMES_READ = (
    "the names read are declared in src/iishpo/training/model.py (required: n_conv, n_fc, filter_size, "
    "conv_filters per layer of n_conv, fc_units per layer of n_fc; optional: fc_dropout per layer of n_fc) "
    "and src/iishpo/training/fit.py (required: learning_rate, batch_size, l1, l2) "
    "and src/iishpo/plan/memory_estimate.py (required: n_conv, n_fc, filter_size, "
    "conv_filters per layer of n_conv, fc_units per layer of n_fc; optional: fc_dropout per layer of n_fc)"
)


@pytest.mark.parametrize(
    ("overrides", "problems"),
    [
        (["+space.fc_dropuot={type: float, low: 0.0, high: 0.5, per_layer_of: n_fc}"],
         "space parameter 'fc_dropuot' is read by no code"),
        (["~space.l1"], "space parameter 'l1' is required by src/iishpo/training/fit.py but the space does not declare it"),
        (["~space.fc_units"],
         ("space parameter 'fc_units' is required by src/iishpo/training/model.py and "
          "src/iishpo/plan/memory_estimate.py but the space does not declare it")),
        # renamed: the new name is read by nothing, the old one is missing
        (["~space.learning_rate", "+space.lr={type: float, low: 0.001, high: 0.1}"],
         ("space parameter 'lr' is read by no code; space parameter 'learning_rate' is required by "
          "src/iishpo/training/fit.py but the space does not declare it")),
        # the model reads fc_dropout_0, fc_dropout_1, ...: one fc_dropout would be ignored
        (["+space.fc_dropout={type: float, low: 0.0, high: 0.5}"],
         "space parameter 'fc_dropout' needs per_layer_of: n_fc (src/iishpo/training/model.py reads one per layer of n_fc)"),
        (["space.conv_filters.per_layer_of=n_fc"],
         "space parameter 'conv_filters' needs per_layer_of: n_conv (src/iishpo/training/model.py reads one per layer of n_conv)"),
        (["+space.l2.per_layer_of=n_conv"],
         "space parameter 'l2' cannot be per_layer_of: n_conv (src/iishpo/training/fit.py reads one value of it)"),
    ],
)
def test_a_space_parameter_no_code_reads_or_a_missing_required_one_is_rejected(
    overrides: list[str], problems: str
) -> None:
    with pytest.raises(ConfigError) as err:
        compose(*overrides)
    assert str(err.value) == f"{problems}; {NAMES_READ}"


def test_an_optional_parameter_may_be_declared_or_left_out() -> None:
    with_dropout = compose("+space.fc_dropout={type: float, low: 0.0, high: 0.5, per_layer_of: n_fc}")
    assert with_dropout.space["fc_dropout"]["per_layer_of"] == "n_fc"
    assert "fc_dropout" not in compose().space


def test_snakemake_config_becomes_hydra_overrides() -> None:
    config = {
        "study": "paper",
        "overrides": "trainer.max_epochs=20 'study.seeds=[0, 1]'",
        "trainer": {"patience": 3},
        "ladder": [8, 16],
    }
    assert overrides_from_mapping(config) == [
        "study=paper",
        "trainer.max_epochs=20",
        "study.seeds=[0, 1]",
        "trainer.patience=3",
        "ladder=[8, 16]",
    ]


def test_claim_study_has_the_evidence_it_claims() -> None:
    study = compose("study=claim").study
    claimed = yaml.safe_load((CONF / "study" / "claim.yaml").read_text())["study"]
    assert study.datasets == ("synthetic",)
    assert study.optimizers == tuple(claimed["optimizers"]) == ("random", "tpe", "ga", "smac")
    assert set(study.strategies) == {"standard", "iis", "narrowing", "halving", "hyperband"}
    real = compose("study=flowers-claim").study
    assert set(real.strategies) == {"standard", "iis", "narrowing"}
    for claim in (study, real):
        assert len(claim.seeds) >= 5
        for strategy in ("iis", "narrowing"):  # every stage that hands ranges on has >= 10 trials
            assert all(budget >= 10 for _, budget in claim.stages(strategy)[:-1])


def test_default_study_shows_a_spread_over_seeds() -> None:
    study = compose().study
    assert len(study.seeds) >= 2 and {"standard", "iis"} <= set(study.strategies)


# -- composing once per configuration ---------------------------------------------------


@pytest.fixture
def hydra_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The overrides of every composition Hydra really makes."""
    calls: list[list[str]] = []
    real = config_module.compose

    def counted(config_name: str, overrides: list[str]) -> Any:
        calls.append(overrides)
        return real(config_name=config_name, overrides=overrides)

    monkeypatch.setattr(config_module, "compose", counted)
    return calls


def test_a_configuration_is_composed_once_per_process(hydra_calls: list[list[str]], tmp_path: Path) -> None:
    """The same directory, overrides, files and environment give Hydra's first result
    again, as a copy of its own."""
    conf = shutil.copytree(CONF, tmp_path / "conf")
    overrides = ["study=smoke", "trainer.max_epochs=3"]
    first = compose_config(overrides, conf)
    first["trainer"]["max_epochs"] = 99
    again = compose_config(overrides, conf)
    assert hydra_calls == [overrides]
    assert again["trainer"]["max_epochs"] == 3 and again["paths"] == first["paths"]
    compose_config(["study=smoke"], conf)
    assert hydra_calls == [overrides, ["study=smoke"]]


def test_a_changed_file_or_variable_is_composed_anew(
    hydra_calls: list[list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = shutil.copytree(CONF, tmp_path / "conf")
    monkeypatch.delenv("IISHPO_ROOT", raising=False)
    assert compose_config([], conf)["trainer"]["momentum"] == 0.9
    trainer = conf / "trainer" / "default.yaml"
    trainer.write_text(trainer.read_text().replace("momentum: 0.9 ", "momentum: 0.8 "))
    assert compose_config([], conf)["trainer"]["momentum"] == 0.8
    monkeypatch.setenv("IISHPO_ROOT", str(tmp_path / "elsewhere"))  # read by conf/config.yaml
    assert compose_config([], conf)["paths"]["root"] == str(tmp_path / "elsewhere")
    (conf / "study" / "extra.yaml").write_text("# @package _global_\n")  # a file more
    compose_config([], conf)
    assert len(hydra_calls) == 4
