"""Why a trial failed, as types: the stage counts causes by type, never by message text.

A failed trial is journalled with ``error`` = ``"<TypeName>: <message>"``
(:func:`failure_record`); :func:`failure_cause` reads the cause back from the type name
through :data:`CAUSES`, so rewording a message cannot change how failures are counted.
An exception of any other type (a bug, a data problem) counts under its own type name.
"""

from __future__ import annotations


class TrialFailed(RuntimeError):
    """Training could not produce a usable model; the stage records it and goes on."""

    cause = "no usable model"


class Diverged(TrialFailed):
    """The training loss became NaN or infinite."""

    cause = "diverged (non-finite loss)"


class OutOfMemory(TrialFailed):
    """An allocation failed (GPU or CPU), converted where PyTorch raised it."""

    cause = "out of memory"


class MemoryLimitExceeded(OutOfMemory):
    """The estimated memory exceeds ``trainer.memory_limit_mb``: refused before training."""

    def __init__(self, needed_mb: float, limit_mb: float) -> None:
        super().__init__(f"needs ~{needed_mb:.0f} MB > trainer.memory_limit_mb={limit_mb:g}")
        self.needed_mb, self.limit_mb = needed_mb, limit_mb


#: the cause each failure type stands for, by the type name a journal records
CAUSES: dict[str, str] = {
    kind.__name__: kind.cause for kind in (TrialFailed, Diverged, OutOfMemory, MemoryLimitExceeded)
}


def failure_record(err: BaseException) -> str:
    """The ``error`` of a failed trial's journal record."""
    return f"{type(err).__name__}: {err}"


def failure_cause(record: str) -> str:
    """The cause of a failed trial from its recorded ``error``: the cause of a
    :class:`TrialFailed` type, else the name of the exception's type."""
    name = record.split(":", 1)[0].strip()
    return CAUSES.get(name, name)
