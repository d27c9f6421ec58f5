"""Train one CNN configuration with a Lightning Trainer and report its validation error.

Many trainings run in one process, so everything per-step that Lightning would add on a
tiny CPU workload (progress bars, loggers, checkpoints, model summaries) is switched off,
the images live in memory as one tensor per split, and each trial's objects are dropped
before the next one starts.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn

from iishpo.config import Trainer as TrainerSettings
from iishpo.data.splits import ImageSplits
from iishpo.model import build_cnn

# PyTorch's CPU convolutions (oneDNN) keep compiled kernels per input shape in two LRU
# caches of 1024 entries each (oneDNN's primitive cache and ideep's). Hundreds of
# differently shaped configurations fill them: a stage grew by ~0.3 MB per evaluation,
# 14% of its RSS over 200 evaluations (benchmarks/memory_growth.py). One evaluation needs
# at most ~50 entries (6 conv layers x forward/backward x batch shapes), so 128 keeps
# every training as fast and the process flat. Both are read at the first convolution;
# a value set in the environment wins.
for _cache in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
    os.environ.setdefault(_cache, "128")

for _name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*number of training batches.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class TrialFailed(RuntimeError):
    """Training could not produce a usable model (diverged, out of memory, crashed)."""


#: bytes per parameter, gradient and activation value (float32; mixed precision needs less)
_FLOAT = 4
#: bytes per max-pooling index (int64), kept by autograd for the backward pass
_INDEX = 8


def estimate_memory_mb(
    config: Mapping[str, Any],
    in_channels: int,
    resolution: int,
    n_classes: int,
    train_batch: int,
    eval_batch: int,
) -> float:
    """Peak memory (MB) that training ``config`` needs beyond the data set: an estimate.

    ``train_batch`` and ``eval_batch`` are the largest batches actually formed (batch
    size capped by the split's size). Counted, in float32: the parameters three times
    (weights, gradients, SGD momentum; a fourth copy, the best weights, is made after the
    activations are gone); per training sample the activations autograd keeps (per conv
    block the ReLU output, the pooled output and its int64 indices; per fc layer its
    outputs) plus twice the largest layer output (gradients in flight during backward);
    twice the largest weight tensor (gradients of the L1/L2 penalties); per evaluation
    sample the most values alive at once (no autograd: a layer's input and output).

    Not counted: the frameworks' fixed cost (about 0.5 GB of RSS on CPU once Lightning
    has trained once), allocator caching and fragmentation, library workspaces. On CPU it
    came within -10%..+25% of the measured growth of peak RSS for configurations needing
    0.3 to 2.5 GB. It depends only on the configuration and the data shapes, so a resumed
    stage fails exactly the trials an uninterrupted one would.
    """
    n_conv, n_fc = int(config["n_conv"]), int(config["n_fc"])
    k = int(config["filter_size"])
    channels, side = in_channels, resolution
    params = heaviest = 0  # all parameters; the largest weight tensor
    kept = in_channels * resolution**2  # per training sample: the batch itself ...
    largest = kept  # ... the largest single activation ...
    pair = 0  # ... and per evaluation sample the most values alive at once
    for i in range(n_conv):
        filters = int(config[f"conv_filters_{i}"])
        params += channels * filters * k * k + filters
        heaviest = max(heaviest, channels * filters * k * k)
        out = filters * side * side
        pooled = out // 4
        kept += out + pooled + pooled * _INDEX // _FLOAT
        largest = max(largest, out)
        pair = max(pair, channels * side * side + out, 2 * out)
        channels, side = filters, side // 2
    width = channels * side * side
    for j in range(n_fc + 1):
        units = int(config[f"fc_units_{j}"]) if j < n_fc else n_classes
        params += width * units + units
        heaviest = max(heaviest, width * units)
        kept += 2 * units
        largest = max(largest, units)
        pair = max(pair, width + units, 2 * units)
        width = units
    training = train_batch * (kept + 2 * largest) + 2 * heaviest
    evaluation = eval_batch * pair
    return (3 * params + max(training, evaluation, params)) * _FLOAT / 2**20


def _check_memory(
    config: Mapping[str, Any], data: TrainingData, settings: TrainerSettings,
    train_split: TensorSplit, val_split: TensorSplit,
) -> None:
    """Fail a configuration whose estimated memory exceeds ``trainer.memory_limit_mb``."""
    limit = settings.memory_limit_mb
    if limit is None:
        return
    needed = estimate_memory_mb(
        config, data.in_channels, data.resolution, data.n_classes,
        train_batch=min(int(config["batch_size"]), len(train_split)),
        eval_batch=min(settings.eval_batch_size, len(val_split)),
    )
    if needed > limit:
        raise TrialFailed(f"out of memory: needs ~{needed:.0f} MB > memory_limit_mb={limit:g}")


def _is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure: CUDA/MPS out of memory, or the CPU allocator refusing."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message or "not enough memory" in message
    )


@dataclass(frozen=True)
class TrainResult:
    val_error: float
    epochs: int
    best_epoch: int


def device_for(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(f"trainer.accelerator={accelerator!r} but no CUDA GPU is visible")
        return torch.device("cuda")
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


class TensorSplit:
    """Images of one split as a float tensor on the training device, normalised once."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device, mean: float, std: float):
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        self.x = ((images.float() / 255.0 - mean) / std).to(device)
        self.y = torch.from_numpy(y.astype(np.int64)).to(device)

    def __len__(self) -> int:
        return len(self.y)


class Batches:
    """A re-iterable of mini-batches; shuffled with its own seeded generator."""

    def __init__(self, split: TensorSplit, batch_size: int, shuffle: bool, seed: int = 0):
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.split.x.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.split.x[idx], self.split.y[idx]


class Classifier(L.LightningModule):
    """Cross-entropy with explicit L1 and L2 penalties on the weights, SGD with momentum."""

    def __init__(self, net: nn.Module, lr: float, momentum: float, l1: float, l2: float) -> None:
        super().__init__()
        self.net, self.lr, self.momentum, self.l1, self.l2 = net, lr, momentum, l1, l2
        self._weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
        self._errors = 0
        self._seen = 0
        self.best_error: float | None = None
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        if self.l1:
            loss = loss + self.l1 * sum(w.abs().sum() for w in self._weights)
        if self.l2:
            loss = loss + self.l2 * sum(w.pow(2).sum() for w in self._weights)
        if not torch.isfinite(loss):
            raise TrialFailed(f"loss became {loss.item()} in epoch {self.current_epoch}")
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._errors += int((self.net(x).argmax(1) != y).sum())
        self._seen += len(y)

    def on_validation_epoch_end(self) -> None:
        """Log for early stopping and keep the best weights in memory (no checkpoint files)."""
        error = self._errors / max(self._seen, 1)
        self._errors = self._seen = 0
        self.log("val_error", error, prog_bar=False, logger=False)
        if self.best_error is None or error < self.best_error:
            self.best_error, self.best_epoch = error, self.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum)


class TrainingData:
    """The train/val/test splits of one resolution, loaded to the device once per process."""

    def __init__(self, splits: ImageSplits, device: torch.device) -> None:
        train = splits.x["train"]
        self.mean = float(train.mean() / 255.0)
        self.std = float(train.std() / 255.0) or 1.0
        self.device = device
        self.splits = splits
        self.in_channels = int(train.shape[-1])
        self.resolution = splits.resolution
        self.n_classes = splits.n_classes
        self.tensors = {
            name: TensorSplit(splits.x[name], splits.y[name], device, self.mean, self.std)
            for name in ("train", "val", "test")
        }

    def tensor(self, x: np.ndarray, y: np.ndarray) -> TensorSplit:
        return TensorSplit(x, y, self.device, self.mean, self.std)


def _trainer(settings: TrainerSettings, device: torch.device) -> L.Trainer:
    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else device.type,
        devices=1,
        precision=settings.precision,  # type: ignore[arg-type]
        max_epochs=settings.max_epochs,
        callbacks=[EarlyStopping(monitor="val_error", mode="min", patience=settings.patience)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
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
    """Train until early stopping; the returned model holds the best validation weights."""
    train_split = train_split or data.tensors["train"]
    val_split = val_split or data.tensors["val"]
    _check_memory(config, data, settings, train_split, val_split)
    L.seed_everything(seed, workers=True, verbose=False)
    net = build_cnn(config, data.in_channels, data.resolution, data.n_classes)
    module = Classifier(
        net, float(config["learning_rate"]), settings.momentum, float(config["l1"]), float(config["l2"])
    )
    trainer = _trainer(settings, data.device)
    try:
        trainer.fit(
            module,
            train_dataloaders=Batches(train_split, int(config["batch_size"]), shuffle=True, seed=seed),
            val_dataloaders=Batches(val_split, settings.eval_batch_size, shuffle=False),
        )
    except (RuntimeError, MemoryError) as err:
        if isinstance(err, TrialFailed) or not _is_out_of_memory(err):
            raise
        raise TrialFailed(f"out of memory: {type(err).__name__}: {err}") from err
    if module.best_error is None:
        raise TrialFailed("training ended before the first validation")
    module.net.load_state_dict(module.best_state)
    result = TrainResult(module.best_error, epochs=trainer.current_epoch, best_epoch=module.best_epoch)
    return result, module


def evaluate(module: Classifier, split: TensorSplit, batch_size: int, metric: str, n_classes: int) -> float:
    """Accuracy, or the mean of per-class accuracies (102 Flowers' test protocol)."""
    module.eval()
    predictions = []
    with torch.no_grad():
        for x, _ in Batches(split, batch_size, shuffle=False):
            predictions.append(module.net(x.to(module.device)).argmax(1).cpu())
    pred = torch.cat(predictions).numpy()
    truth = split.y.cpu().numpy()
    if metric == "accuracy":
        return float((pred == truth).mean())
    per_class = [float((pred[truth == c] == c).mean()) for c in range(n_classes) if (truth == c).any()]
    return float(np.mean(per_class))


def evaluate_trial(
    config: Mapping[str, Any], data: TrainingData, settings: TrainerSettings, seed: int
) -> tuple[TrainResult, float]:
    """Train once and release everything: the hot loop of a stage."""
    start = time.perf_counter()
    result, module = train(config, data, settings, seed)
    del module
    release_memory(data.device)
    return result, time.perf_counter() - start


def release_memory(device: torch.device) -> None:
    """Free a finished training's objects before the next one, so a stage does not grow."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
