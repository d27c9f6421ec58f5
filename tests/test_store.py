"""The result files: the trial journal (durable appends, torn last records, corrupt middles)
and the typed stage, ranges and test records (round trip, unknown formats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TINY, compose
from iishpo.narrowing.ranges import describe
from iishpo.results.artifacts import (
    BestTrial,
    EvaluationRecord,
    RangesRecord,
    StageRecord,
    read_evaluation,
    read_ranges,
    read_stage,
    write_record,
)
from iishpo.results.provenance import Provenance
from iishpo.search.space import build_space
from iishpo.store import Trial, TrialStore, read_trials


def _trial(number: int, status: str = "ok") -> Trial:
    return Trial(
        number=number, config={"learning_rate": 0.01 * (number + 1)}, status=status,
        val_error=0.5 if status == "ok" else None, loss=0.5 if status == "ok" else 1.0,
        epochs=3, best_epoch=1, wall_time=0.1, elapsed=0.1 * (number + 1),
        error=None if status == "ok" else "TrialFailed: loss became nan", seed=number,
        finished_at="2026-01-01T00:00:00+00:00",
    )


def test_appended_trials_read_back_in_order(tmp_path: Path) -> None:
    store = TrialStore(tmp_path / "journal.jsonl")
    for i in range(3):
        store.append(_trial(i, "failed" if i == 1 else "ok"))
    trials = TrialStore(store.path).load()
    assert [t.number for t in trials] == [0, 1, 2]
    assert trials[1].error == "TrialFailed: loss became nan" and not trials[1].ok
    assert read_trials(store.path) == trials


def test_torn_last_record_is_cut_off_and_earlier_trials_kept(tmp_path: Path) -> None:
    store = TrialStore(tmp_path / "journal.jsonl")
    for i in range(2):
        store.append(_trial(i))
    intact = store.path.read_bytes()
    with open(store.path, "ab") as fh:
        fh.write(b'{"format": 1, "number": 2, "config": {"learn')  # killed mid-write
    trials = store.load()
    assert [t.number for t in trials] == [0, 1]
    assert store.path.read_bytes() == intact  # the torn bytes are gone: appends start clean
    store.append(_trial(2))
    assert [t.number for t in store.load()] == [0, 1, 2]


def test_corrupt_record_in_the_middle_is_an_error(tmp_path: Path) -> None:
    store = TrialStore(tmp_path / "journal.jsonl")
    store.append(_trial(0))
    with open(store.path, "ab") as fh:
        fh.write(b"garbage\n")
    store.append(_trial(1))
    with pytest.raises(ValueError, match="corrupt trial record at byte"):
        store.load()


# -- stage, ranges and test files ---------------------------------------------------------

PROVENANCE = Provenance(
    config={"study": {"name": "smoke"}}, overrides=["study=smoke"], packages={"torch": "2.13.0"},
    python="3.11.0", git={"commit": "0" * 40, "dirty": False}, host="h", created_at="2026-01-01T00:00:00+00:00",
    device="cpu (x86_64)", seed=3,
)


def _records() -> list[StageRecord | RangesRecord | EvaluationRecord]:
    space = build_space(compose(*TINY).space, 16)
    best = {"learning_rate": 0.02, "n_conv": 1}
    return [
        StageRecord(
            dataset="synthetic", optimizer="tpe", strategy="iis", seed=3, stage=1, resolution=16,
            budget=4, n_trials=4, n_failed=1, wall_time=12.5, best=BestTrial(2, 0.25, best),
            config_digest="abc", provenance=PROVENANCE,
        ),
        StageRecord(
            dataset="synthetic", optimizer="tpe", strategy="iis", seed=3, stage=0, resolution=8,
            budget=2, n_trials=2, n_failed=2, wall_time=1.0, best=None, config_digest="abc",
            provenance=PROVENANCE,
        ),
        RangesRecord(space=space, initial_points=[best], ranges=describe(space), config_digest="def"),
        EvaluationRecord(
            metric="accuracy", test_score=0.75, test_score_std=0.0, scores=[0.75], val_error=0.25, trial=2,
            config=best, resolution=16, wall_time=3.0, config_digest="ghi", provenance=PROVENANCE,
        ),
    ]


READERS = {StageRecord: read_stage, RangesRecord: read_ranges, EvaluationRecord: read_evaluation}


@pytest.mark.parametrize("index", range(4))
def test_records_read_back_equal(tmp_path: Path, index: int) -> None:
    record = _records()[index]
    write_record(tmp_path / "record.json", record)
    assert json.loads((tmp_path / "record.json").read_text())["format"] == 1
    assert READERS[type(record)](tmp_path / "record.json") == record


@pytest.mark.parametrize("index", [0, 2, 3])
@pytest.mark.parametrize("edit", ["format 2", "no format", "unknown field", "missing field"])
def test_unreadable_record_is_an_error_naming_the_file(tmp_path: Path, index: int, edit: str) -> None:
    record = _records()[index]
    path = tmp_path / "record.json"
    write_record(path, record)
    data = json.loads(path.read_text())
    if edit == "format 2":
        data["format"] = 2
        message = "format 2 is not readable by this version"
    elif edit == "no format":
        del data["format"]
        message = "format None is not readable by this version"
    elif edit == "unknown field":
        data["extra"] = 1
        message = r"unknown fields \['extra'\]"
    else:
        del data["config_digest"]
        message = r"missing fields \['config_digest'\]"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as error:
        READERS[type(record)](path)
    assert str(path) in str(error.value)
