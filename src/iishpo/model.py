"""The CNN family of the paper: conv blocks with 2x2 max pooling, fc layers, softmax."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def build_cnn(config: Mapping[str, Any], in_channels: int, resolution: int, n_classes: int) -> nn.Sequential:
    """Each conv layer ('same' padding, ReLU) is followed by 2x2 max pooling, which
    quarters the input area; then ``n_fc`` hidden fully connected layers (ReLU) and a
    linear classifier whose logits the loss turns into a softmax.

    Raises ``ValueError`` when the pooling would shrink the feature map below 1 px.
    """
    n_conv, n_fc = int(config["n_conv"]), int(config["n_fc"])
    if n_conv < 1 or n_fc < 1:
        raise ValueError(f"need n_conv >= 1 and n_fc >= 1, got n_conv={n_conv}, n_fc={n_fc}")
    side = resolution >> n_conv
    if side < 1:
        raise ValueError(
            f"{n_conv} conv layers with 2x2 pooling need at least {2**n_conv} px input, "
            f"got {resolution} px: at most {resolution.bit_length() - 1} conv layers fit"
        )
    kernel = int(config["filter_size"])
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(n_conv):
        filters = int(config[f"conv_filters_{i}"])
        layers += [nn.Conv2d(channels, filters, kernel, padding=kernel // 2), nn.ReLU(), nn.MaxPool2d(2)]
        channels = filters
    layers.append(nn.Flatten())
    width = channels * side * side
    for j in range(n_fc):
        units = int(config[f"fc_units_{j}"])
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)
