"""The CNN family of the paper: conv blocks with 2x2 max pooling, fc layers, softmax.

The model reads its hyperparameters by the names declared in ``conf/space``; optional ones
(``fc_dropout``) are used when the configuration has them. ``READS`` lists them: the space
is checked against it when the configuration is loaded (:mod:`iishpo.search.hyperparameters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iishpo.search.hyperparameters import HyperparameterNames
from iishpo.search.space import layer_name

if TYPE_CHECKING:
    from torch import nn

#: what :func:`build_cnn` reads (literals: read from source)
READS = HyperparameterNames(
    required=("n_conv", "n_fc", "filter_size", "conv_filters", "fc_units"),
    optional=("fc_dropout",),
    per_layer={"conv_filters": "n_conv", "fc_units": "n_fc", "fc_dropout": "n_fc"},
)


def build_cnn(config: Mapping[str, Any], in_channels: int, resolution: int, n_classes: int) -> nn.Sequential:
    """Each conv layer ('same' padding, ReLU) is followed by 2x2 max pooling, which
    quarters the input area; then ``n_fc`` hidden fully connected layers (ReLU) and a
    linear classifier whose logits the loss turns into a softmax. A hidden fc layer ``j``
    gets dropout after its ReLU when the configuration has ``fc_dropout_j``.

    Raises ``ValueError`` when the pooling would shrink the feature map below 1 px.
    """
    # torch is imported here, not with the module: the workflow reads the memory estimate
    # below while it builds the DAG, and importing torch took 2 s of every `snakemake` run
    from torch import nn

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
        filters = int(config[layer_name("conv_filters", i)])
        layers += [nn.Conv2d(channels, filters, kernel, padding=kernel // 2), nn.ReLU(), nn.MaxPool2d(2)]
        channels = filters
    layers.append(nn.Flatten())
    width = channels * side * side
    for j in range(n_fc):
        units = int(config[layer_name("fc_units", j)])
        layers += [nn.Linear(width, units), nn.ReLU()]
        dropout = config.get(layer_name("fc_dropout", j))
        if dropout is not None:
            layers.append(nn.Dropout(float(dropout)))
        width = units
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)
