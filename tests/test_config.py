"""Every configuration in conf/ composes and validates; bad input fails with a clear message."""

from __future__ import annotations

import pytest

from helpers import CONF, compose
from iishpo.config import ConfigError, overrides_from_mapping

STUDIES = sorted(p.stem for p in (CONF / "study").glob("*.yaml"))


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_composes_and_validates(study: str) -> None:
    settings = compose(f"study={study}")
    assert settings.study.datasets
    for strategy in settings.study.strategies:
        stages = settings.study.stages(strategy)
        assert sum(b for _, b in stages) == settings.study.budget
        assert stages[-1][0] == settings.study.ladder[-1]


@pytest.mark.parametrize("group", ["space", "trainer"])
def test_every_group_option_composes(group: str) -> None:
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        compose(f"{group}={option}")


def test_paper_study_encodes_the_protocol() -> None:
    study = compose("study=paper").study
    assert study.budget == 1500
    assert study.stages("iis") == [(32, 750), (64, 500), (128, 250)]
    assert study.stages("standard") == [(128, 1500)]
    assert study.seeds == (0, 1, 2)
    assert study.datasets == ("flowers102",)


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
    ],
)
def test_bad_configuration_is_rejected_with_a_clear_message(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose(*overrides)
    assert message in str(err.value)


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
