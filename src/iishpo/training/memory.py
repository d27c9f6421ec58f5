"""Memory of one training: the estimate checked against ``trainer.memory_limit_mb``,
allocation failures turned into :class:`~iishpo.training.failures.OutOfMemory`, and the release of
a finished training's objects so that a stage of many trainings stays flat."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from iishpo.plan.memory_estimate import estimate_memory_mb
from iishpo.training.failures import MemoryLimitExceeded, OutOfMemory, TrialFailed

#: what PyTorch's allocators say when they raise a plain RuntimeError instead of
#: ``torch.OutOfMemoryError``: the CPU allocator on Linux/macOS and on Windows, and MPS
_ALLOCATOR_REFUSED = ("can't allocate memory", "not enough memory", "out of memory")


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
