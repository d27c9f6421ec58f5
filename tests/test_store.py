"""The trial journal: durable appends, torn last records, corrupt middles."""

from __future__ import annotations

from pathlib import Path

import pytest

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
