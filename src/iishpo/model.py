"""The CNN family of the paper: conv blocks with 2x2 max pooling, fc layers, softmax.

The model reads its hyperparameters by the names declared in ``conf/space``; optional ones
(``fc_dropout``) are used when the configuration has them. ``READS`` lists them: the space
is checked against it when the configuration is loaded (:mod:`iishpo.hyperparameters`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iishpo.hyperparameters import HyperparameterNames
from iishpo.space import layer_name

if TYPE_CHECKING:
    from torch import nn

#: what :func:`build_cnn` and :func:`estimate_memory_mb` read (literals: read from source)
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
        filters = int(config[layer_name("conv_filters", i)])
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
        units = int(config[layer_name("fc_units", j)]) if j < n_fc else n_classes
        params += width * units + units
        heaviest = max(heaviest, width * units)
        kept += 2 * units
        if layer_name("fc_dropout", j) in config:  # the dropout output and its mask
            kept += 2 * units
        largest = max(largest, units)
        pair = max(pair, width + units, 2 * units)
        width = units
    training = train_batch * (kept + 2 * largest) + 2 * heaviest
    evaluation = eval_batch * pair
    return (3 * params + max(training, evaluation, params)) * _FLOAT / 2**20
