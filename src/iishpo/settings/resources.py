"""The ``resources`` settings group (``conf/resources``): what light rules ask for, and
how training jobs are sized (:mod:`iishpo.plan.job_resources` does the sizing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iishpo.typed import build


@dataclass(frozen=True)
class Light:
    """Fixed request of the data, range-extraction and summary rules."""

    threads: int
    mem_mb: int
    runtime: int

    def __post_init__(self) -> None:
        if min(self.threads, self.mem_mb, self.runtime) < 1:
            raise ValueError(f"threads, mem_mb and runtime must be >= 1, got {self}")


@dataclass(frozen=True)
class Training:
    """How run_stage and evaluate_test are sized (see conf/resources/default.yaml)."""

    base_mb: int
    margin: float
    startup_minutes: int
    minutes_per_epoch_gb: float
    max_runtime: int
    gpus: int

    def __post_init__(self) -> None:
        if self.base_mb < 0 or self.startup_minutes < 1 or self.minutes_per_epoch_gb < 0:
            raise ValueError(
                f"base_mb and minutes_per_epoch_gb must be >= 0 and startup_minutes >= 1, got {self}"
            )
        if self.margin < 1:
            raise ValueError(f"margin must be >= 1 (a factor on the estimate), got {self.margin}")
        if self.max_runtime < self.startup_minutes:
            raise ValueError(
                f"max_runtime={self.max_runtime} must be >= startup_minutes={self.startup_minutes}"
            )
        if self.gpus not in (0, 1):
            raise ValueError(f"gpus must be 0 (CPU) or 1 (a job trains on one device), got {self.gpus}")


@dataclass(frozen=True)
class Gpus:
    """How training jobs on one machine divide its GPUs (see :mod:`iishpo.jobs.gpus`)."""

    share: int
    lock_dir: str
    devices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.share < 1:
            raise ValueError(f"share must be >= 1 (jobs per GPU), got {self.share}")
        if not self.lock_dir:
            raise ValueError("lock_dir must be a directory path, got an empty string")
        if self.devices is not None and (
            min(self.devices, default=0) < 0 or len(set(self.devices)) != len(self.devices)
        ):
            raise ValueError(f"devices must be distinct ids >= 0 or null, got {list(self.devices)}")


@dataclass(frozen=True)
class Resources:
    light: Light
    training: Training
    gpus: Gpus
    #: a local run's jobs are forked from one process that imported torch and Lightning
    #: once (:mod:`iishpo.worker`); never on a cluster, never for GPU jobs
    warm_worker: bool

    @property
    def uses_warm_worker(self) -> bool:
        """Whether a local run starts a warm worker: asked for, and the jobs train on the
        CPU (a process that may have touched CUDA cannot hand it to forked children)."""
        return self.warm_worker and self.training.gpus == 0


def from_config(raw: Any) -> Resources:
    """The ``resources`` mapping of the composed configuration, checked key by key.

    Raises :class:`iishpo.typed.SettingsError` (a ``ValueError``) naming the key.
    """
    return build(Resources, raw, "resources")
