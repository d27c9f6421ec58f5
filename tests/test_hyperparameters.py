"""The names of the hyperparameters the model and the training read: each module's ``READS``
is what its code reads, and the configuration reads it from source as it is written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import TINY, compose
from iishpo.data.splits import ImageSplits
from iishpo.plan import memory_estimate
from iishpo.search.hyperparameters import READERS, HyperparameterNames, declared
from iishpo.training import fit as training
from iishpo.training import model
from iishpo.training.batches import TrainingData


class ReadNames(dict[str, Any]):
    """A configuration that notes every name looked up in it."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.looked_up: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        self.looked_up.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        self.looked_up.add(name)
        return super().get(name, default)

    def __contains__(self, name: object) -> bool:
        self.looked_up.add(str(name))
        return super().__contains__(name)

    def names(self) -> set[str]:
        """The names looked up, per-layer ones by their space name (``fc_units_1``: ``fc_units``)."""
        return {re.sub(r"_\d+$", "", name) for name in self.looked_up}


NETWORK = {
    "filter_size": 3, "n_conv": 2, "n_fc": 2, "conv_filters_0": 2, "conv_filters_1": 3,
    "fc_units_0": 4, "fc_units_1": 5, "fc_dropout_0": 0.1, "fc_dropout_1": 0.2,
}
MODEL_NAMES = {"n_conv", "n_fc", "filter_size", "conv_filters", "fc_units", "fc_dropout"}


@pytest.mark.parametrize("read", [
    lambda config: model.build_cnn(config, 1, 8, 2),
    lambda config: memory_estimate.estimate_memory_mb(config, 1, 8, 2, train_batch=4, eval_batch=4),
], ids=["build_cnn", "estimate_memory_mb"])
def test_the_network_is_read_by_the_names_declared(read: Any) -> None:
    for config in (ReadNames(NETWORK), ReadNames({k: v for k, v in NETWORK.items() if "dropout" not in k})):
        read(config)
        assert config.names() == MODEL_NAMES
    network = HyperparameterNames(
        required=("n_conv", "n_fc", "filter_size", "conv_filters", "fc_units"),
        optional=("fc_dropout",),
        per_layer={"conv_filters": "n_conv", "fc_units": "n_fc", "fc_dropout": "n_fc"},
    )
    assert model.READS == memory_estimate.READS == network


def test_a_training_reads_the_names_it_declares_and_the_models() -> None:
    rng = np.random.default_rng(0)
    splits = ImageSplits(
        {split: rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8) for split in ("train", "val", "test")},
        {split: np.array([0, 1, 0, 1]) for split in ("train", "val", "test")},
        ["a", "b"],
    )
    config = ReadNames({**NETWORK, "learning_rate": 0.01, "batch_size": 4, "l1": 0.0, "l2": 0.0})
    settings = compose(*TINY, "trainer.max_epochs=1", "trainer.memory_limit_mb=1000").trainer
    training.train(config, TrainingData(splits, torch.device("cpu")), settings, seed=0)
    assert config.names() == {"learning_rate", "batch_size", "l1", "l2"} | MODEL_NAMES
    assert training.READS == HyperparameterNames(required=("learning_rate", "batch_size", "l1", "l2"))


@pytest.mark.parametrize("module", [model, training, memory_estimate])
def test_the_declaration_read_from_source_is_the_modules(module: Any) -> None:
    assert declared(Path(module.__file__)) == module.READS


def test_every_module_declaring_names_is_checked() -> None:
    """A module of the package with ``READS = HyperparameterNames(...)`` that the check does
    not read would be a reader the configuration is never checked against."""
    package = Path(model.__file__).parents[1]
    declaring = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py")
        if "\nREADS = HyperparameterNames(" in path.read_text()
    )
    assert declaring == sorted(READERS)


@pytest.mark.parametrize(
    "source",
    [
        "NAMES = ('l1',)\nREADS = HyperparameterNames(required=NAMES)\n",  # not a literal
        "READS = HyperparameterNames(('l1',))\n",  # positional
        "READS = HyperparameterNames(needed=('l1',))\n",  # no such field
        "READS = dict(required=('l1',))\n",
        "READ = HyperparameterNames(required=('l1',))\n",
    ],
)
def test_a_declaration_that_is_not_literal_names_is_refused(source: str, tmp_path: Path) -> None:
    module = tmp_path / "reader.py"
    module.write_text(source)
    with pytest.raises(RuntimeError, match=rf"^{re.escape(str(module))} must declare the hyperparameters it reads as READS ="):
        declared(module)
