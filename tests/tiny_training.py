"""A training problem small enough to train in a test, shared by the training and the
classifier tests: a small configuration, 8 px images told apart by brightness, and a
fixed 'network' whose predictions are set by hand."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from iishpo.data.splits import ImageSplits

CONFIG = {
    "learning_rate": 0.05, "batch_size": 16, "l1": 0.0, "l2": 0.0, "filter_size": 3,
    "n_conv": 2, "n_fc": 1, "conv_filters_0": 4, "conv_filters_1": 6, "fc_units_0": 8,
}
CPU = torch.device("cpu")


def brightness_splits(seed: int = 0) -> ImageSplits:
    """Two classes told apart by brightness (learnable in an epoch or two), 8 px, grey."""
    rng = np.random.default_rng(seed)
    x, y = {}, {}
    for split, n in (("train", 48), ("val", 24), ("test", 24)):
        y[split] = np.arange(n) % 2
        x[split] = (rng.uniform(0, 80, (n, 8, 8, 1)) + 150 * y[split][:, None, None, None]).astype(np.uint8)
    return ImageSplits(x, y, ["dark", "bright"])


class PixelIsPrediction(nn.Module):
    """A fixed 'network' whose prediction is the value of an image's single pixel."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x[:, 0, 0, 0].round().long(), self.n_classes).float()
