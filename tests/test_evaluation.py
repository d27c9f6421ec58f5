"""Test-set evaluation: the best trial is retrained on the right images and scored, with either protocol."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from helpers import TINY, compose
from iishpo.data.splits import ImageSplits, save_splits
from iishpo.jobs import evaluation as evaluation_module
from iishpo.jobs.evaluation import evaluate_test
from iishpo.plan.layout import digest, evaluation_config
from iishpo.results.artifacts import read_evaluation
from iishpo.seeds import Stream, derive_seed
from iishpo.store import Trial, TrialStore
from iishpo.training.batches import Epoch, TrainingData
from iishpo.training.classifier import Classifier

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
    step, validation_error = Classifier.training_step, Classifier.validation_error

    def training_spy(self: Classifier, epoch: Epoch, batch_idx: int) -> Any:
        if self.current_epoch == 0:
            trained.append(set())
        batches = list(epoch.train)  # iterated once, as the real step would
        for x, _ in batches:
            trained[-1] |= _rows(x)
        return step(self, epoch._replace(train=batches), batch_idx)

    def validation_spy(self: Classifier, batches: Any) -> float:
        batches = list(batches)
        for x, _ in batches:
            validated.update(_rows(x))
        return validation_error(self, batches)

    seeds: list[int] = []
    train = evaluation_module.train

    def train_spy(config: Any, data: Any, trainer: Any, seed: int, *args: Any) -> Any:
        seeds.append(seed)
        return train(config, data, trainer, seed, *args)

    monkeypatch.setattr(evaluation_module, "train", train_spy)
    monkeypatch.setattr(Classifier, "training_step", training_spy)
    monkeypatch.setattr(Classifier, "validation_error", validation_spy)
    out = evaluate_test(
        settings, "synthetic", 0, [_trials(tmp_path / "trials.jsonl")], tmp_path / "8px.npz", tmp_path / "test.json"
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



class _OneClass(torch.nn.Module):
    """Stands in for a retrained net: it predicts one class for every image, so that its
    test score is known by hand."""

    def __init__(self, label: int, n_classes: int) -> None:
        super().__init__()
        self.label, self.n_classes = label, n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), self.n_classes)
        logits[:, self.label] = 1.0
        return logits


@pytest.mark.parametrize(
    ("folds", "metric", "repeats", "scores", "std"),
    [
        (False, "accuracy", 1, [0.6], 0.0),
        (False, "accuracy", 2, [0.6, 0.3], 0.3 / math.sqrt(2)),
        (False, "mean_class_accuracy", 3, [1 / 3] * 3, 0.0),
        (True, "accuracy", 1, [0.6, 0.3, 0.1], math.sqrt(57) / 30),  # three folds, not repeats
        (True, "mean_class_accuracy", 1, [1 / 3] * 3, 0.0),
    ],
)
def test_record_and_log_hold_each_score_their_mean_and_spread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    folds: bool, metric: str, repeats: int, scores: list[float], std: float,
) -> None:
    """The k-th retraining predicts class k for every test image; the test set holds 6, 3
    and 1 images of classes 0, 1 and 2: accuracies 0.6, 0.3 and 0.1, mean per-class
    accuracy 1/3 each. The spread is the sample standard deviation, 0 for one retraining
    (by hand: 0.6 and 0.3 give 0.3/sqrt(2); 18, 9 and 3 thirtieths deviate by 8, -1 and -7
    from their mean, 10: sqrt((64 + 1 + 49) / 2) / 30 = sqrt(57) / 30)."""
    rng = np.random.default_rng(1)
    sizes = {"train": 6, "val": 4, "test": 10}
    x = {split: rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8) for split, n in sizes.items()}
    y = {"train": np.arange(6) % 3, "val": np.arange(4) % 3, "test": np.array([0] * 6 + [1] * 3 + [2])}
    extra: dict = {}
    if folds:
        extra = {
            "pool_x": rng.integers(0, 256, (9, 8, 8, 1), dtype=np.uint8),
            "pool_y": np.arange(9) % 3,
            "test_folds": [np.arange(i, 9, 3) for i in range(3)],
        }
    splits = ImageSplits(x, y, ["a", "b", "c"], **extra)
    save_splits(splits, tmp_path / "8px.npz")
    settings = compose(
        *TINY, "trainer.accelerator=cpu", f"evaluation.repeats={repeats}",
        f"datasets.synthetic.test_metric={metric}",
    )
    calls: list[tuple[Any, int, tuple]] = []

    def one_class_train(config: Any, data: Any, trainer: Any, seed: int, *fit_val: Any) -> Any:
        calls.append((config, seed, fit_val))
        return None, Classifier(_OneClass(len(calls) - 1, 3), 0.1, 0.9, 0.0, 0.0, patience=1)

    monkeypatch.setattr(evaluation_module, "train", one_class_train)
    # the clock reads 1000 s before the retrainings and 1012.3456 s after them
    clock = iter([1000.0, 1012.3456])
    monkeypatch.setattr(evaluation_module, "time", SimpleNamespace(perf_counter=clock.__next__))
    caplog.set_level(logging.INFO, logger="iishpo.jobs.evaluation")
    out = evaluate_test(
        settings, "synthetic", 5, [_trials(tmp_path / "trials.jsonl")], tmp_path / "8px.npz", tmp_path / "test.json"
    )

    mean = sum(scores) / len(scores)
    assert out.scores == pytest.approx(scores)
    assert out.test_score == pytest.approx(mean)
    assert out.test_score_std == pytest.approx(std, abs=1e-12)
    assert [config for config, _, _ in calls] == [CONFIG] * len(scores)
    assert [seed for _, seed, _ in calls] == [derive_seed(5, Stream.TEST, 0, i) for i in range(len(scores))]
    tensors = TrainingData(splits, torch.device("cpu"))
    for i, (_, _, fit_val) in enumerate(calls):
        if folds:  # fold i is the pool's images i, i + 3 and i + 6; the other six validate
            fit, val = fit_val
            fold, rest = [i, i + 3, i + 6], [j for j in range(9) if j % 3 != i]
            assert torch.equal(fit.x, tensors.tensor(splits.pool_x[fold], splits.pool_y[fold]).x)
            assert torch.equal(val.x, tensors.tensor(splits.pool_x[rest], splits.pool_y[rest]).x)
            assert fit.y.tolist() == [i] * 3 and val.y.tolist() == [j % 3 for j in rest]
        else:  # the run's own train and val splits
            assert fit_val == ()
    assert out.resolution == 8
    assert out.wall_time == 12.346  # rounded to the millisecond
    assert out.config_digest == digest(evaluation_config(settings, "synthetic"))  # as the summary checks it
    assert out.provenance.seed == 5 and out.provenance.device.startswith("cpu (")
    assert out.provenance.precision == "32-true"  # precision "auto" on a CPU
    kind = "fold" if folds else "retraining"
    logged = [record.getMessage() for record in caplog.records if record.name == "iishpo.jobs.evaluation"]
    summary = (
        f"test {metric} of the best configuration (val_error 0.1000): {mean:.4f} +- {std:.4f} "
        f"over {len(scores)} retrainings"
    )
    assert logged == [f"test {kind} {i + 1}/{len(scores)}: {metric}={s:.4f}" for i, s in enumerate(scores)] + [summary]
    assert read_evaluation(tmp_path / "test.json") == out


def test_trials_without_a_success_are_refused(tmp_path: Path) -> None:
    store = TrialStore(tmp_path / "trials.jsonl")
    store.append(Trial(0, CONFIG, "failed", None, 1.0, 0, -1, 0.1, 0.2, "boom", 0, "t"))
    message = f"{tmp_path / 'trials.jsonl'}: no successful trial to evaluate on the test set"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        evaluate_test(
            compose(*TINY), "synthetic", 0, [tmp_path / "trials.jsonl"], tmp_path / "8px.npz", tmp_path / "test.json"
        )


def test_a_gpu_run_without_a_gpu_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that asked for a GPU must not be scored on the CPU instead."""
    rng = np.random.default_rng(0)
    images = {split: _images(rng, 4) for split in ("train", "val", "test")}
    splits = ImageSplits({s: x for s, (x, _) in images.items()}, {s: y for s, (_, y) in images.items()}, ["dark", "bright"])
    save_splits(splits, tmp_path / "8px.npz")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=re.escape("trainer.accelerator='gpu' but no CUDA GPU is visible")):
        evaluate_test(
            compose(*TINY, "trainer.accelerator=gpu"), "synthetic", 0, [_trials(tmp_path / "trials.jsonl")],
            tmp_path / "8px.npz", tmp_path / "test.json",
        )
