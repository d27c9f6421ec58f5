"""Memory of one training: the estimate checked against ``trainer.memory_limit_mb``,
allocation failures turned into :class:`~iishpo.failures.OutOfMemory`, and the release of
a finished training's objects so that a stage of many trainings stays flat."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from iishpo.failures import MemoryLimitExceeded, OutOfMemory, TrialFailed

#: bytes per parameter, gradient and activation value (float32; mixed precision needs less)
_FLOAT = 4
#: bytes per max-pooling index (int64), kept by autograd for the backward pass
_INDEX = 8

#: what PyTorch's allocators say when they raise a plain RuntimeError instead of
#: ``torch.OutOfMemoryError``: the CPU allocator on Linux/macOS and on Windows, and MPS
_ALLOCATOR_REFUSED = ("can't allocate memory", "not enough memory", "out of memory")


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


def check_memory_limit(
    config: Mapping[str, Any],
    in_channels: int,
    resolution: int,
    n_classes: int,
    train_batch: int,
    eval_batch: int,
    limit_mb: float | None,
) -> None:
    """Raise :class:`MemoryLimitExceeded` when the estimate exceeds ``limit_mb`` (None: no limit)."""
    if limit_mb is None:
        return
    needed = estimate_memory_mb(config, in_channels, resolution, n_classes, train_batch, eval_batch)
    if needed > limit_mb:
        raise MemoryLimitExceeded(needed, limit_mb)


@contextmanager
def allocation_failures_as_out_of_memory() -> Iterator[None]:
    """Raise :class:`OutOfMemory` for an allocation that fails inside: ``torch.OutOfMemoryError``,
    ``MemoryError``, or a ``RuntimeError`` with an allocator's message (PyTorch gives the CPU
    allocator's refusal no type of its own, so this is the one place that reads messages)."""
    try:
        yield
    except TrialFailed:
        raise
    except (torch.OutOfMemoryError, MemoryError) as err:
        raise OutOfMemory(f"{type(err).__name__}: {err}") from err
    except RuntimeError as err:
        message = str(err).lower()
        if not any(refusal in message for refusal in _ALLOCATOR_REFUSED):
            raise
        raise OutOfMemory(f"{type(err).__name__}: {err}") from err


def release_memory(device: torch.device) -> None:
    """Free a finished training's objects before the next one, so a stage does not grow."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
