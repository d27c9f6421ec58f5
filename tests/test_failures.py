"""Failed trials are counted by the type of their failure, and real allocation failures
inside a stage's training end as out-of-memory trials while the stage goes on."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from helpers import TINY, compose, journal_in
from iishpo.data.splits import ImageSplits, save_splits
from iishpo.jobs.stage import TRIALS, StageFailed, StageKey, run_stage
from iishpo.narrowing.ranges import describe
from iishpo.results.artifacts import RangesRecord, write_record
from iishpo.search.space import SearchSpace, build_space
from iishpo.settings.config import Settings
from iishpo.store import read_trials
from iishpo.training import fit as training
from iishpo.training.failures import (
    CAUSES,
    Diverged,
    MemoryLimitExceeded,
    OutOfMemory,
    TrialFailed,
    failure_cause,
    failure_record,
)
from iishpo.training.memory import allocation_failures_as_out_of_memory

KEY = StageKey("synthetic", "tpe", "standard", 0, 0)
RESOLUTION = 32  # the smoke study's standard stage
OVERRIDES = [*TINY, "study.strategies=[standard]", "study.optimizers=[tpe]"]
SMALL = {
    "learning_rate": 0.01, "batch_size": 16, "l1": 1e-6, "l2": 1e-6, "filter_size": 3,
    "n_conv": 1, "n_fc": 1, "conv_filters_0": 4, "fc_units_0": 8,
}
#: a real refusal of PyTorch's CPU allocator: 2**60 bytes exist nowhere
IMPOSSIBLE_BYTES = 2**60


def cuda_out_of_memory() -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def cpu_allocator_refuses() -> None:
    torch.empty(IMPOSSIBLE_BYTES, dtype=torch.uint8)


def python_memory_error() -> None:
    raise MemoryError()


def a_bug() -> None:
    raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


# -- causes from types ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("err", "cause"),
    [
        (Diverged("loss became nan in epoch 0"), "diverged (non-finite loss)"),
        (OutOfMemory("OutOfMemoryError: CUDA out of memory"), "out of memory"),
        (MemoryLimitExceeded(900.0, 8.0), "out of memory"),
        (TrialFailed("training ended before the first validation"), "no usable model"),
        # the message's words never decide: only the type does
        (ZeroDivisionError("out of memory: loss became nan"), "ZeroDivisionError"),
        (RuntimeError("can't allocate memory"), "RuntimeError"),
    ],
)
def test_the_cause_comes_from_the_recorded_type(err: Exception, cause: str) -> None:
    record = failure_record(err)
    assert record == f"{type(err).__name__}: {err}"
    assert failure_cause(record) == cause


def test_every_trial_failure_type_has_a_cause() -> None:
    kinds = {TrialFailed, *TrialFailed.__subclasses__(), *OutOfMemory.__subclasses__()}
    assert set(CAUSES) == {kind.__name__ for kind in kinds}
    assert MemoryLimitExceeded(900.0, 8.0).args == ("needs ~900 MB > trainer.memory_limit_mb=8",)


@pytest.mark.parametrize(
    "raise_it",
    [cpu_allocator_refuses, cuda_out_of_memory, python_memory_error],
)
def test_allocation_failures_become_out_of_memory(raise_it: Callable[[], None]) -> None:
    with pytest.raises(OutOfMemory) as caught, allocation_failures_as_out_of_memory():
        raise_it()
    assert caught.value.__cause__ is not None
    assert str(caught.value).startswith(f"{type(caught.value.__cause__).__name__}: ")


@pytest.mark.parametrize("err", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), Diverged("loss became nan")])
def test_other_errors_pass_through_unchanged(err: Exception) -> None:
    with pytest.raises(type(err)) as caught, allocation_failures_as_out_of_memory():
        raise err
    assert caught.value is err


# -- in a real stage --------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random 32 px images of 2 classes: the stage only has to train, not learn."""
    rng = np.random.default_rng(0)
    x = {s: rng.integers(0, 256, (n, RESOLUTION, RESOLUTION, 3), dtype=np.uint8) for s, n in (("train", 20), ("val", 10), ("test", 10))}
    y = {s: np.arange(len(images)) % 2 for s, images in x.items()}
    path = tmp_path_factory.mktemp("data") / f"{RESOLUTION}px.npz"
    save_splits(ImageSplits(x, y, ["a", "b"]), path)
    return path


def ranges_file(path: Path, settings: Settings, initial: list[dict[str, Any]]) -> Path:
    """A narrowed space whose first configurations are ``initial`` (as ``extract-ranges`` writes it)."""
    space = build_space(settings.space, RESOLUTION).to_dict()
    for param in space["params"]:
        if param["name"] == "learning_rate":
            param["low"], param["high"] = 1e-4, 1e31
    narrowed = SearchSpace.from_dict(space)
    write_record(path, RangesRecord(narrowed, initial, describe(narrowed), config_digest=""))
    return path


def failing_forward(monkeypatch: pytest.MonkeyPatch, failures: dict[float, Callable[[], None]]) -> None:
    """The model built for a configuration whose learning rate is in ``failures`` raises
    from its forward pass, i.e. inside Lightning's training step."""
    build = training.build_cnn

    def build_failing(config: dict[str, Any], *args: Any) -> nn.Module:
        net = build(config, *args)
        for lr, fail in failures.items():
            if math.isclose(config["learning_rate"], lr):
                net.forward = lambda x, fail=fail: fail()
        return net

    monkeypatch.setattr(training, "build_cnn", build_failing)


def test_real_allocation_failures_and_divergence_fail_their_trials_and_the_stage_goes_on(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = compose(*OVERRIDES, "study.budget=5", "study.max_failure_fraction=1.0")
    initial = [{**SMALL, "learning_rate": lr} for lr in (0.011, 0.012, 1e30, 0.013, 0.01)]
    failing_forward(monkeypatch, {0.011: cuda_out_of_memory, 0.012: cpu_allocator_refuses, 0.013: a_bug})
    summary = run_stage(settings, KEY, data_file, ranges_file(tmp_path / "ranges.json", settings, initial), tmp_path / "out")

    trials = read_trials(tmp_path / "out" / TRIALS)
    assert [t.config["learning_rate"] for t in trials] == [c["learning_rate"] for c in initial]
    assert [t.status for t in trials] == ["failed", "failed", "failed", "failed", "ok"]
    errors = [t.error or "" for t in trials]
    assert errors[0] == "OutOfMemory: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert errors[1].startswith("OutOfMemory: RuntimeError: ") and "DefaultCPUAllocator" in errors[1]
    assert errors[2].startswith("Diverged: loss became ")
    assert errors[3] == "RuntimeError: mat1 and mat2 shapes cannot be multiplied"
    assert [failure_cause(e) for e in errors[:4]] == [
        "out of memory", "out of memory", "diverged (non-finite loss)", "RuntimeError",
    ]
    assert summary.n_failed == 4 and summary.best is not None and summary.best.number == 4


def test_a_stage_of_out_of_memory_failures_stops_naming_that_cause(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three allocation failures of three different exception types count as one cause."""
    settings = compose(*OVERRIDES, "study.budget=4", "study.max_failure_fraction=0.5")
    initial = [{**SMALL, "learning_rate": lr} for lr in (0.011, 0.012, 0.013)]
    failing_forward(monkeypatch, {
        0.011: cuda_out_of_memory, 0.012: cpu_allocator_refuses, 0.013: python_memory_error,
    })
    out = tmp_path / "out"
    with pytest.raises(StageFailed, match=r"most common cause: out of memory \(3x\)"):
        run_stage(settings, KEY, data_file, ranges_file(tmp_path / "ranges.json", settings, initial), out)
    assert [failure_cause(t.error or "") for t in read_trials(journal_in(out))] == ["out of memory"] * 3
