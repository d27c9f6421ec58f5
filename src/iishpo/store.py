"""Durable, append-only storage of finished trials (one JSON object per line).

Format (stable; ``"format": 1`` in every line):
``number`` (0-based), ``config`` (active hyperparameters), ``status`` ("ok" | "failed"),
``val_error`` (float, null if failed), ``loss`` (what the optimizer was told: the
validation error, or 1.0 for a failed trial), ``epochs``, ``best_epoch``, ``wall_time``
(seconds of this evaluation), ``elapsed`` (seconds since the stage started, summed over
resumed processes), ``error`` (message of a failed trial, else null), ``seed`` (the
training seed) and ``finished_at`` (UTC ISO time).

Each line is written with one ``write`` and fsync'd before the optimizer hears the
result, so a killed process loses at most the trial in progress. A torn last line (the
process died mid-write) is detected on load, reported, and cut off.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1
WORST_LOSS = 1.0


@dataclass(frozen=True)
class Trial:
    number: int
    config: dict[str, Any]
    status: str
    val_error: float | None
    loss: float
    epochs: int
    best_epoch: int
    wall_time: float
    elapsed: float
    error: str | None
    seed: int
    finished_at: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def read_trials(path: Path) -> list[Trial]:
    """Every complete trial in ``path``; a torn last line is ignored (see ``TrialStore``)."""
    return _parse(path.read_bytes(), path)[0]


def _parse(raw: bytes, path: Path) -> tuple[list[Trial], int]:
    """Trials and the byte length of the intact prefix."""
    trials: list[Trial] = []
    good = 0
    for line in raw.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no newline")
            data = json.loads(line)
            data.pop("format")
            trial = Trial(**data)
        except (ValueError, TypeError, KeyError) as err:
            if good + len(line) < len(raw):
                raise ValueError(f"{path}: corrupt trial record at byte {good}: {err}") from err
            log.warning("%s: ignoring a torn last record (%d bytes): %s", path, len(line), err)
            break
        if trial.number != len(trials):
            raise ValueError(f"{path}: trial numbers out of order at {trial.number}")
        trials.append(trial)
        good += len(line)
    return trials, good


class TrialStore:
    """The journal of one stage run; resuming is reading it back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[Trial]:
        """Read the journal, cutting off a torn last record so appends start clean."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        trials, good = _parse(raw, self.path)
        if good < len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
                fh.flush()
                os.fsync(fh.fileno())
        return trials

    def append(self, trial: Trial) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"format": FORMAT, **asdict(trial)}, sort_keys=True) + "\n"
        with open(self.path, "ab") as fh:
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())


def ranked(trials: Iterable[Trial]) -> list[Trial]:
    """The successful trials, best first (lowest validation error, then earliest)."""
    return sorted((t for t in trials if t.ok), key=lambda t: (t.val_error, t.number))


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a synced temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
