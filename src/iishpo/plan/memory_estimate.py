"""How much memory training a configuration of the paper's CNN family needs, from the
configuration and the data shapes alone: it sizes the jobs of the DAG and refuses a trial
over ``trainer.memory_limit_mb`` before it trains. No torch: the DAG is planned without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iishpo.search.hyperparameters import HyperparameterNames
from iishpo.search.space import layer_name

#: what :func:`estimate_memory_mb` reads (literals: read from source); the layers are the
#: ones :func:`iishpo.training.model.build_cnn` builds
READS = HyperparameterNames(
    required=("n_conv", "n_fc", "filter_size", "conv_filters", "fc_units"),
    optional=("fc_dropout",),
    per_layer={"conv_filters": "n_conv", "fc_units": "n_fc", "fc_dropout": "n_fc"},
)

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
