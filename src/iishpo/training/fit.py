"""Train one CNN configuration with a Lightning Trainer, report its validation error,
and score a trained model on a split.

Many trainings run in one process, so everything per-step that Lightning would add on a
tiny CPU workload is switched off (``barebones``: no progress bar, logger, checkpoints,
model summary or logging; the module steps its optimizer through each epoch, validates
and stops early itself, see :class:`~iishpo.training.classifier.Classifier`), the images live in memory as
one tensor per split (:mod:`iishpo.training.batches`), and each trial's objects are dropped before
the next one starts (:mod:`iishpo.training.memory`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch

from iishpo.search.hyperparameters import HyperparameterNames
from iishpo.settings.config import Trainer as TrainerSettings
from iishpo.training.batches import Batches, EpochLoader, TensorSplit, TrainingData
from iishpo.training.classifier import Classifier
from iishpo.training.device import precision_for
from iishpo.training.failures import TrialFailed
from iishpo.training.memory import (
    allocation_failures_as_out_of_memory,
    check_memory_limit,
    release_memory,
)
from iishpo.training.model import build_cnn

#: what :func:`train` reads of a configuration itself, the network's names aside (those are
#: :data:`iishpo.training.model.READS`); literals, read from source: :mod:`iishpo.search.hyperparameters`
READS = HyperparameterNames(required=("learning_rate", "batch_size", "l1", "l2"))


@dataclass(frozen=True)
class TrainResult:
    val_error: float
    epochs: int
    best_epoch: int


def _trainer(settings: TrainerSettings, device: torch.device) -> L.Trainer:
    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else device.type,
        devices=1,
        precision=precision_for(settings.precision, device),  # type: ignore[arg-type]
        max_epochs=settings.max_epochs,
        barebones=True,
        deterministic=device.type == "cpu",
    )


def train(
    config: Mapping[str, Any],
    data: TrainingData,
    settings: TrainerSettings,
    seed: int,
    train_split: TensorSplit | None = None,
    val_split: TensorSplit | None = None,
) -> tuple[TrainResult, Classifier]:
    """Train until early stopping; the returned model holds the best validation weights.

    Raises :class:`~iishpo.training.failures.TrialFailed` (a subclass naming the cause) when no
    usable model comes out: over the memory limit, out of memory, diverged.
    """
    train_split = train_split or data.tensors["train"]
    val_split = val_split or data.tensors["val"]
    check_memory_limit(
        config, data.in_channels, data.resolution, data.n_classes,
        train_batch=min(int(config["batch_size"]), len(train_split)),
        eval_batch=min(settings.eval_batch_size, len(val_split)),
        limit_mb=settings.memory_limit_mb,
    )
    L.seed_everything(seed, workers=True, verbose=False)
    # channels-last convolutions and pooling: 17-28% faster per evaluation on a CPU (8-64
    # px, benchmarks/throughput.py); the same arithmetic, summed in another order
    net = build_cnn(config, data.in_channels, data.resolution, data.n_classes).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    module = Classifier(
        net, float(config["learning_rate"]), settings.momentum, float(config["l1"]), float(config["l2"]),
        patience=settings.patience,
    )
    trainer = _trainer(settings, data.device)
    with allocation_failures_as_out_of_memory():
        trainer.fit(
            module,
            train_dataloaders=EpochLoader(
                Batches(train_split, int(config["batch_size"]), shuffle=True, seed=seed),
                Batches(val_split, settings.eval_batch_size, shuffle=False),
            ),
        )
    if module.best_error is None:
        raise TrialFailed("training ended before the first validation")
    module.net.load_state_dict(module.best_state)
    result = TrainResult(module.best_error, epochs=trainer.current_epoch, best_epoch=module.best_epoch)
    return result, module


def evaluate(module: Classifier, split: TensorSplit, batch_size: int, metric: str, n_classes: int) -> float:
    """Accuracy, or the mean of per-class accuracies over the classes present in ``split``
    (102 Flowers' test protocol)."""
    predicted, labels = module.predicted_labels(Batches(split, batch_size, shuffle=False))
    pred, truth = predicted.numpy(), labels.numpy()
    if metric == "accuracy":
        return float((pred == truth).mean())
    per_class = [float((pred[truth == c] == c).mean()) for c in range(n_classes) if (truth == c).any()]
    return float(np.mean(per_class))


def evaluate_trial(
    config: Mapping[str, Any], data: TrainingData, settings: TrainerSettings, seed: int
) -> tuple[TrainResult, float]:
    """Train once and release everything: the hot loop of a stage.

    The objects that predate the training (imported modules, the data, the optimizer's
    history: some 400 000 with torch and Lightning loaded) are frozen while it runs, so
    that releasing the training's objects scans only those it made: a full collection
    took 0.4 s per evaluation on a loaded 2-core machine, an hour over a stage of 1500
    evaluations. They are unfrozen afterwards, so that Python's own collections still
    reach any garbage among them.
    """
    start = time.perf_counter()
    gc.freeze()
    try:
        result, module = train(config, data, settings, seed)
        del module
        release_memory(data.device)
    finally:
        gc.unfreeze()
    return result, time.perf_counter() - start
