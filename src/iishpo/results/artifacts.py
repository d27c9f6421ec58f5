"""The JSON files a run leaves behind, as typed records: ``stage.json``, ``ranges.json``,
``promotions.json``, ``test.json``.

Each file holds one JSON object with ``"format": 1`` (like the trial journal, whose
records are :class:`iishpo.store.Trial`) and the fields of its record class below. Jobs
write them with :func:`write_record` and read them with ``read_<kind>``; a file of
another format, or with missing or unknown fields, is a ``ValueError`` naming the file,
so a results folder from an incompatible version is never half-read.

Every record carries ``config_digest``, the fingerprint of the configuration slice its
job read (:mod:`iishpo.plan.layout`), so a reader can tell whether it is current.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from iishpo.results.provenance import Provenance
from iishpo.search.space import Config, SearchSpace
from iishpo.store import write_json_atomic

FORMAT = 1


class StaleFiles(ValueError):
    """Files were made under another configuration than the current one (their recorded
    ``config_digest`` differs): an analysis refuses to read them, naming the files."""


@dataclass(frozen=True)
class BestTrial:
    number: int
    val_error: float
    config: Config


@dataclass(frozen=True)
class StageRecord:
    """``stage.json``: what a finished stage did, and under which configuration."""

    dataset: str
    optimizer: str
    strategy: str
    seed: int
    stage: int
    resolution: int
    budget: int
    n_trials: int
    n_failed: int
    wall_time: float
    best: BestTrial | None
    config_digest: str
    provenance: Provenance


@dataclass(frozen=True)
class RangesRecord:
    """``ranges.json``: the narrowed space for the next IIS stage and its starting points."""

    space: SearchSpace
    initial_points: list[Config]
    ranges: dict[str, Any]  # human-readable bounds per hyperparameter
    config_digest: str


@dataclass(frozen=True)
class PromotionsRecord:
    """``promotions.json``: the configurations the next rung of successive halving or
    Hyperband trains again, best first; none: the next stage starts a bracket, and the
    optimizer proposes."""

    #: the next stage's resolution
    resolution: int
    configs: list[Config]
    #: the promoted trials' numbers in the rung they come from, and their validation errors
    #: (``None``: failed, promoted only because the rung had too few successes)
    trials: list[int]
    val_errors: list[float | None]
    config_digest: str


@dataclass(frozen=True)
class EvaluationRecord:
    """``test.json``: a run's best configuration, retrained and scored on the test set."""

    metric: str
    #: the mean of ``scores``
    test_score: float
    #: their sample standard deviation (0 for a single retraining)
    test_score_std: float
    #: one per retraining: per repeat (single split) or per fold (fold protocol)
    scores: list[float]
    val_error: float
    trial: int
    config: Config
    resolution: int
    wall_time: float
    config_digest: str
    provenance: Provenance


Record = StageRecord | RangesRecord | PromotionsRecord | EvaluationRecord
R = TypeVar("R", StageRecord, RangesRecord, PromotionsRecord, EvaluationRecord)


def write_record(path: Path, record: Record) -> None:
    """Write ``record`` atomically, with the format number."""
    data = asdict(record)
    if isinstance(record, RangesRecord):
        data["space"] = record.space.to_dict()
    write_json_atomic(path, {"format": FORMAT, **data})


def _load(path: Path, cls: type[R]) -> dict[str, Any]:
    """The fields of a ``cls`` file, checked against the format and the field names."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a JSON {cls.__name__} file: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")  # noqa: TRY004 (bad file content)
    found = data.pop("format", None)
    if found != FORMAT:
        raise ValueError(
            f"{path}: {cls.__name__} format {found!r} is not readable by this version "
            f"(it reads format {FORMAT}); rerun the job that wrote it"
        )
    names = [f.name for f in fields(cls)]
    missing = [n for n in names if n not in data]
    unknown = sorted(set(data) - set(names))
    if missing or unknown:
        raise ValueError(f"{path}: {cls.__name__} with missing fields {missing} and unknown fields {unknown}")
    return data


def _provenance(data: Mapping[str, Any]) -> Provenance:
    return Provenance(**data)


def read_stage(path: Path) -> StageRecord:
    data = _load(path, StageRecord)
    best = data["best"]
    return StageRecord(**{
        **data,
        "best": None if best is None else BestTrial(**best),
        "provenance": _provenance(data["provenance"]),
    })


def read_ranges(path: Path) -> RangesRecord:
    data = _load(path, RangesRecord)
    return RangesRecord(**{**data, "space": SearchSpace.from_dict(data["space"])})


def read_promotions(path: Path) -> PromotionsRecord:
    return PromotionsRecord(**_load(path, PromotionsRecord))


def read_evaluation(path: Path) -> EvaluationRecord:
    data = _load(path, EvaluationRecord)
    return EvaluationRecord(**{**data, "provenance": _provenance(data["provenance"])})
