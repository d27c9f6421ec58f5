"""Process-wide settings for a process that trains many models: applied on request only.

Importing an ``iishpo`` module changes nothing global; the job entry points (``python -m
iishpo run-stage`` and ``evaluate-test``, the benchmarks) call :func:`configure_training`
once, before the first training.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import warnings

#: the commands that train models: configured for it before the first training
TRAINING_COMMANDS = ("run-stage", "evaluate-test")

#: PyTorch's CPU convolutions (oneDNN) keep compiled kernels per input shape in two LRU
#: caches of 1024 entries each (oneDNN's primitive cache and ideep's). Hundreds of
#: differently shaped configurations fill them: a stage grew by ~0.3 MB per evaluation,
#: 14% of its RSS over 200 evaluations (benchmarks/memory_growth.py). One evaluation needs
#: at most ~50 entries (6 conv layers x forward/backward x batch shapes), so 128 keeps
#: every training as fast and the process flat. Both are read at the first convolution.
KERNEL_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "128"}

#: Lightning's per-fit INFO lines (devices, precision, ...) would repeat for every trial
QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")

#: warnings that hold for every training of a stage and say nothing about this one: the
#: data are in-memory tensors (no workers), tiny splits give few batches, a visible GPU is
#: deliberately left unused when ``trainer.accelerator=cpu``, and Lightning calls a
#: deprecated PyTorch API (``LeafSpec``), and on a machine with SLURM's tools a job that
#: was not started by ``srun`` (a local study) is told to use it
EXPECTED_WARNINGS = (
    ".*does not have many workers.*",
    ".*number of training batches.*",
    ".*GPU available but not used.*",
    ".*LeafSpec.*",
    ".*The `srun` command is available on your system but is not used.*",
)


def configure_training() -> None:
    """Cap the convolution kernel caches (a value already in the environment wins),
    leave new tensors unfilled in deterministic mode, quiet Lightning's loggers to
    WARNING, ignore the expected warnings and look up Lightning's callback entry points
    once per process. Call it before the first convolution; calling it again changes
    nothing."""
    import torch

    for name, capacity in KERNEL_CACHES.items():
        os.environ.setdefault(name, capacity)
    # A CPU training is deterministic (``Trainer(deterministic=True)``), and PyTorch's
    # deterministic mode also fills every new tensor with NaN, a guard for kernels that
    # read memory they did not write. None of ours does (the default study made the same
    # trials without it), and the filling cost 3-10% of a training at 32 px.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    look_up_entry_points_once()


#: the entry-point group in which every ``Trainer()`` looks for callback factories
CALLBACK_FACTORIES = "lightning.pytorch.callbacks_factory"


def look_up_entry_points_once() -> None:
    """Every ``Trainer()`` asks ``importlib.metadata`` for callback factories registered
    by installed packages, which reads the metadata of every installed distribution:
    30-40 ms per evaluation on a loaded 2-core machine, more than the rest of the
    Trainer's set-up. The installed packages do not change while a job runs, so the
    lookup is cached, and made here: the warm worker calls this before it forks, so that
    its jobs inherit the answer instead of each reading the metadata for its first
    Trainer. The factories found are still called for every Trainer."""
    from lightning.fabric.utilities import registry

    if not hasattr(registry.entry_points, "cache_info"):
        registry.entry_points = functools.cache(importlib.metadata.entry_points)  # type: ignore[assignment]
    registry.entry_points(group=CALLBACK_FACTORIES)
