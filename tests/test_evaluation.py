"""Test-set evaluation: the best trial is retrained on the right images and scored, with either protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import TINY, compose
from iishpo import evaluation as evaluation_module
from iishpo.artifacts import read_evaluation
from iishpo.batches import TrainingData
from iishpo.classifier import Classifier
from iishpo.data.splits import ImageSplits, save_splits
from iishpo.evaluation import evaluate_test
from iishpo.seeds import Stream, derive_seed
from iishpo.store import Trial, TrialStore

CONFIG = {
    "learning_rate": 0.05, "batch_size": 16, "l1": 1e-7, "l2": 1e-6, "filter_size": 3,
    "n_conv": 1, "n_fc": 1, "conv_filters_0": 4, "fc_units_0": 8,
}


def _images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes told apart by brightness: learnable in a few epochs."""
    y = np.arange(n) % 2
    x = (rng.uniform(0, 80, (n, 8, 8, 1)) + 150 * y[:, None, None, None]).astype(np.uint8)
    return x, y


def _trials(path: Path) -> Path:
    store = TrialStore(path)
    worse = {**CONFIG, "learning_rate": 1e-4}
    for number, (config, error) in enumerate([(worse, 0.4), (CONFIG, 0.1)]):
        store.append(Trial(number, config, "ok", error, error, 3, 1, 0.1, 0.1, None, number, "t"))
    store.append(Trial(2, CONFIG, "failed", None, 1.0, 0, -1, 0.1, 0.2, "boom", 2, "t"))
    return path


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.cpu()}


@pytest.mark.parametrize(
    ("folds", "metric"), [(False, "accuracy"), (True, "accuracy"), (False, "mean_class_accuracy")]
)
def test_best_trial_is_retrained_and_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folds: bool, metric: str
) -> None:
    """The best trial is retrained on the training images of its protocol and never sees
    the test images. With folds the train and val labels are inverted: only a model
    trained on the pool's folds can score well on the test set."""
    rng = np.random.default_rng(0)
    x = {}
    y = {}
    for split, n in (("train", 40), ("val", 20), ("test", 30)):
        x[split], y[split] = _images(rng, n)
    extra: dict = {}
    if folds:  # STL-10's protocol: train on each fold of the pool, average the test scores
        y["train"], y["val"] = 1 - y["train"], 1 - y["val"]
        pool_x, pool_y = _images(rng, 60)
        extra = {"pool_x": pool_x, "pool_y": pool_y, "test_folds": [np.arange(i, 60, 3) for i in range(3)]}
    splits = ImageSplits(x, y, ["dark", "bright"], **extra)
    save_splits(splits, tmp_path / "8px.npz")
    settings = compose(
        *TINY, "trainer.max_epochs=6", "trainer.patience=3", f"datasets.synthetic.test_metric={metric}"
    )
    trained: list[set[bytes]] = []  # the images of each training's steps
    validated: set[bytes] = set()
    step, validation_step = Classifier.training_step, Classifier.validation_step

    def training_spy(self: Classifier, batch: Any, batch_idx: int) -> Any:
        if batch_idx == 0 and self.current_epoch == 0:
            trained.append(set())
        trained[-1] |= _rows(batch[0])
        return step(self, batch, batch_idx)

    def validation_spy(self: Classifier, batch: Any, batch_idx: int) -> None:
        validated.update(_rows(batch[0]))
        validation_step(self, batch, batch_idx)

    seeds: list[int] = []
    train = evaluation_module.train

    def train_spy(config: Any, data: Any, trainer: Any, seed: int, *args: Any) -> Any:
        seeds.append(seed)
        return train(config, data, trainer, seed, *args)

    monkeypatch.setattr(evaluation_module, "train", train_spy)
    monkeypatch.setattr(Classifier, "training_step", training_spy)
    monkeypatch.setattr(Classifier, "validation_step", validation_spy)
    out = evaluate_test(
        settings, "synthetic", 0, _trials(tmp_path / "trials.jsonl"), tmp_path / "8px.npz", tmp_path / "test.json"
    )

    tensors = TrainingData(splits, torch.device("cpu"))  # the same normalisation as the run's
    test_rows = _rows(tensors.tensors["test"].x)
    assert not validated & test_rows and not any(rows & test_rows for rows in trained)
    if folds:
        pool = tensors.tensor(splits.pool_x, splits.pool_y).x
        assert trained == [_rows(pool[fold]) for fold in splits.test_folds]
    else:
        assert trained == [_rows(tensors.tensors["train"].x)] * 3  # evaluation.repeats retrainings
    assert out.metric == metric
    assert out.config == CONFIG and out.val_error == 0.1 and out.trial == 1
    assert len(out.scores) == 3  # three folds, or three retrainings (evaluation.repeats)
    assert out.test_score == pytest.approx(np.mean(out.scores))
    assert out.test_score_std == pytest.approx(np.std(out.scores, ddof=1))
    # each retraining (fold or repeat) has its own seed of the TEST stream
    assert seeds == [derive_seed(0, Stream.TEST, 0, i) for i in range(3)]
    assert out.test_score > 0.8  # the classes are separable: a broken retraining would not be
    assert read_evaluation(tmp_path / "test.json") == out
    assert out.provenance.config["study"]["name"] == "smoke"
