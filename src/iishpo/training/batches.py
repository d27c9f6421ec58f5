"""Training data in memory: one normalised tensor per split on the training device, and
seeded mini-batches over it (no DataLoader, no workers: the images are small and already
where the model is)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from iishpo.data.splits import ImageSplits


class TensorSplit:
    """Images of one split as a float tensor on the training device, normalised once, in
    the channels-last memory format that the models use (see :func:`iishpo.training.fit.train`)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device, mean: float, std: float):
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        normalised = ((images.float() / 255.0 - mean) / std).to(device)
        self.x = normalised.contiguous(memory_format=torch.channels_last)
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


class Epoch(NamedTuple):
    """What one training epoch goes through: the mini-batches to train on, in order, then
    those to validate on."""

    train: Batches
    val: Batches


class EpochLoader:
    """The training loader Lightning sees: one item per epoch, an :class:`Epoch`, which
    :meth:`iishpo.training.classifier.Classifier.training_step` steps through and validates itself.

    Lightning's loop around each of its steps (fetching, batch transfer, hooks, progress)
    cost about 1 ms, a sixth of an optimization step of a small CNN at 16 px on a CPU, and
    its validation loop about 3 ms per epoch (``benchmarks/trainer_overhead.py``); once per
    epoch a step is nothing. The batches and their order are those of iterating ``train``
    and ``val`` directly.
    """

    def __init__(self, train: Batches, val: Batches) -> None:
        self.epoch = Epoch(train, val)

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Epoch]:
        yield self.epoch


class TrainingData:
    """The train/val/test splits of one resolution, loaded to the device once per process,
    all normalised with the training split's mean and standard deviation."""

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
        """Other images (e.g. a fold of a pool) normalised like the splits."""
        return TensorSplit(x, y, self.device, self.mean, self.std)
