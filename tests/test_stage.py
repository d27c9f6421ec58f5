"""The stage runner on its own, with training replaced by a stand-in (an error from the
learning rate, a fake clock that moves only while it trains), so that every number a stage
records can be written down by hand: the warm start from a ranges or promotions file for
every optimizer, the trial records and the summary, failures and the failure limit, the
journal's name, resuming, and the signal handling that makes an interruption clean. The
same with real training and real processes: ``test_failures.py``, ``test_reliability.py``."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from helpers import TINY, compose, journal_in
from iishpo.data.splits import ImageSplits, save_splits
from iishpo.jobs import stage as stage_module
from iishpo.jobs.stage import (
    SUMMARY,
    TRIALS,
    StageFailed,
    StageInterrupted,
    StageKey,
    _Signals,
    journal_path,
    run_stage,
)
from iishpo.narrowing.ranges import describe
from iishpo.optimizers import OptimizerSettings, create_optimizer
from iishpo.plan.layout import stage_config
from iishpo.results.artifacts import (
    BestTrial,
    PromotionsRecord,
    RangesRecord,
    read_ranges,
    read_stage,
    write_record,
)
from iishpo.search.space import SearchSpace, build_space
from iishpo.seeds import Stream, derive_seed
from iishpo.settings.config import Settings
from iishpo.store import TrialStore, read_trials
from iishpo.training.failures import Diverged, TrialFailed
from iishpo.training.fit import TrainResult

RESOLUTION = 32
#: the smoke study's standard stage: 4 evaluations at 32 px, at most 2 failures (0.5 x 4)
KEY = StageKey("synthetic", "random", "standard", 0, 0)
LABEL = "synthetic/random/standard/seed0/stage0"
#: seconds of the fake clock one stand-in training takes, and the wall time it reports:
#: more decimals than the 4 a trial records
TRAINING, WALL = 0.123456, 0.0123456
#: the elapsed time after each of the first four trainings, rounded to 4 decimals
ELAPSED = [0.1235, 0.2469, 0.3704, 0.4938]
OPTIMIZERS = ["random", "tpe", "ga", "smac"]


def image_file(path: Path, resolution: int) -> Path:
    """Random images of 2 classes: the stand-in never looks at them."""
    rng = np.random.default_rng(0)
    x = {s: rng.integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8) for s, n in (("train", 8), ("val", 4), ("test", 4))}
    save_splits(ImageSplits(x, {s: np.arange(len(images)) % 2 for s, images in x.items()}, ["a", "b"]), path)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_file(tmp_path_factory.mktemp("data") / f"{RESOLUTION}px.npz", RESOLUTION)


def val_error(config: dict[str, Any]) -> float:
    """The stand-in's validation error: 0 at a learning rate of 10**-2.5, at most 0.5."""
    return abs(math.log10(config["learning_rate"]) + 2.5) / 4


class StandIn:
    """Training replaced: the stage's clock moves ``TRAINING`` seconds per evaluation and
    nowhere else; evaluation ``n`` in ``fail`` raises ``fail[n]`` (an exception) or sends
    the process ``fail[n]`` (a signal) instead of returning."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, key: StageKey = KEY,
                 fail: dict[int, BaseException | signal.Signals] | None = None) -> None:
        self.now = 100.0
        self.trained: list[int] = []  # evaluation numbers, in order
        self.given: list[tuple[Any, Any]] = []  # the data and the trainer settings of each
        self.fail = fail or {}
        self._number = {derive_seed(key.seed, Stream.TRAINING, key.stage, n): n for n in range(20)}
        monkeypatch.setattr(stage_module, "evaluate_trial", self.train)
        monkeypatch.setattr(stage_module, "time", SimpleNamespace(perf_counter=lambda: self.now))

    def train(self, config: dict[str, Any], data: Any, settings: Any, seed: int) -> tuple[TrainResult, float]:
        number = self._number[seed]
        self.trained.append(number)
        self.given.append((data, settings))
        self.now += TRAINING
        failure = self.fail.get(number)
        if isinstance(failure, signal.Signals):
            signal.raise_signal(failure)
        elif failure is not None:
            raise failure
        return TrainResult(val_error(config), epochs=3, best_epoch=1), WALL


@pytest.fixture
def outside_handlers() -> Iterator[Callable[[int, Any], None]]:
    """A handler of the test's own for SIGINT and SIGTERM while it runs: a signal that the
    stage does not take fails the test instead of ending pytest."""

    def outside(signum: int, frame: Any) -> None:
        raise AssertionError(f"{signal.Signals(signum).name} reached the handler outside the stage")

    saved = {signum: signal.signal(signum, outside) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield outside
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(inputs: Any) -> str:
    """The project's digest of a JSON-able value, written out: sha256 of its canonical JSON."""
    return sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode())[:16]


def told_losses(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], float]]:
    """Every (configuration, loss) the stage's optimizer is told, in order."""
    told: list[tuple[dict[str, Any], float]] = []
    create = stage_module.create_optimizer

    def spied(*args: Any, **kwargs: Any) -> Any:
        optimizer = create(*args, **kwargs)
        tell = optimizer.tell

        def tell_spied(config: dict[str, Any], loss: float) -> None:
            told.append((config, loss))
            tell(config, loss)

        optimizer.tell = tell_spied
        return optimizer

    monkeypatch.setattr(stage_module, "create_optimizer", spied)
    return told


# -- warm start ---------------------------------------------------------------------------


def narrowed_ranges(path: Path, settings: Settings, resolution: int, initial: list[dict[str, Any]]) -> Path:
    """A ranges file as ``extract-ranges`` writes it: the learning rate narrowed to 1e-3 ..
    2e-3 (a draw from the full 1e-4 .. 0.3 lands there with probability log 2 / log 3000,
    under 9%), ``initial`` to start from."""
    spec = build_space(settings.space, resolution).to_dict()
    for param in spec["params"]:
        if param["name"] == "learning_rate":
            param["low"], param["high"] = 1e-3, 2e-3
    narrowed = SearchSpace.from_dict(spec)
    write_record(path, RangesRecord(narrowed, initial, describe(narrowed), config_digest=""))
    return path


INITIAL = [
    {"learning_rate": 1.1e-3, "batch_size": 16, "l1": 1e-6, "l2": 1e-5, "filter_size": 3,
     "n_conv": 1, "n_fc": 1, "conv_filters_0": 4, "fc_units_0": 8},
    {"learning_rate": 1.9e-3, "batch_size": 64, "l1": 1e-4, "l2": 1e-3, "filter_size": 5,
     "n_conv": 2, "n_fc": 2, "conv_filters_0": 8, "conv_filters_1": 16, "fc_units_0": 32, "fc_units_1": 16},
    {"learning_rate": 1.5e-3, "batch_size": 32, "l1": 1e-5, "l2": 1e-4, "filter_size": 3,
     "n_conv": 3, "n_fc": 1, "conv_filters_0": 4, "conv_filters_1": 6, "conv_filters_2": 10, "fc_units_0": 64},
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_stage_with_ranges_starts_from_their_initial_points_inside_their_space(
    optimizer: str, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first proposals are the initial points, every one lies in the narrowed space,
    and each is what the optimizer, seeded for the stage and given the ranges, proposes
    when told the same losses."""
    settings = compose(*TINY, "study.budget=7", "study.iis_budgets=[2,5]")
    key = StageKey("synthetic", optimizer, "iis", 0, 1)
    assert settings.study.stages("iis")[1] == (RESOLUTION, 5)
    StandIn(monkeypatch, key)
    ranges = narrowed_ranges(tmp_path / "ranges.json", settings, RESOLUTION, INITIAL)
    run_stage(settings, key, data_file, ranges, tmp_path / "out")
    trials = read_trials(tmp_path / "out" / TRIALS)
    configs = [t.config for t in trials]
    assert len(configs) == 5
    assert configs[: len(INITIAL)] == INITIAL
    assert all(1e-3 <= c["learning_rate"] <= 2e-3 for c in configs), configs
    alone = create_optimizer(
        optimizer, read_ranges(ranges).space, budget=5, seed=derive_seed(0, Stream.OPTIMIZER, 1),
        initial_points=INITIAL, settings=settings.optimizers[optimizer],
    )
    for trial in trials:
        assert alone.ask() == trial.config
        alone.tell(trial.config, trial.loss)


def test_ranges_for_another_resolution_are_refused(data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = compose(*TINY, "study.budget=7", "study.iis_budgets=[2,5]")
    ranges = narrowed_ranges(tmp_path / "ranges.json", settings, 16, [])
    StandIn(monkeypatch)
    with pytest.raises(ValueError, match=f"^{ranges} is for 16 px, stage needs 32 px$"):
        run_stage(settings, StageKey("synthetic", "random", "iis", 0, 1), data_file, ranges, tmp_path / "out")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_a_promoted_rung_evaluates_exactly_the_promoted_configurations(
    optimizer: str, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = compose(*TINY, "study.strategies=[standard,halving]", "study.budget=12")
    key = StageKey("synthetic", optimizer, "halving", 0, 1)
    assert settings.study.stages("halving")[1] == (RESOLUTION, 3)
    promotions = tmp_path / "promotions.json"
    write_record(promotions, PromotionsRecord(RESOLUTION, INITIAL, [4, 0, 7], [0.1, 0.2, 0.3], config_digest=""))
    StandIn(monkeypatch, key)
    run_stage(settings, key, data_file, promotions, tmp_path / "out")
    assert [t.config for t in read_trials(tmp_path / "out" / TRIALS)] == INITIAL


def test_a_promoted_rung_whose_configurations_all_fail_is_a_result_not_a_stop(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configurations that trained at the rung below and diverge at this resolution: the
    rung records them as failed (more than max_failure_fraction 0.5 of its 3 would stop any
    other stage); a stage that proposes its own configurations still stops."""
    settings = compose(*TINY, "study.strategies=[standard,halving]", "study.budget=12")
    key = StageKey("synthetic", "tpe", "halving", 0, 1)
    promotions = tmp_path / "promotions.json"
    write_record(promotions, PromotionsRecord(RESOLUTION, INITIAL, [4, 0, 7], [0.1, 0.2, 0.3], config_digest=""))
    StandIn(monkeypatch, key, fail={n: Diverged("loss became nan") for n in range(3)})
    run_stage(settings, key, data_file, promotions, tmp_path / "out")
    trials = read_trials(tmp_path / "out" / TRIALS)
    assert [(t.config, t.status, t.loss) for t in trials] == [(c, "failed", 1.0) for c in INITIAL]
    StandIn(monkeypatch, KEY, fail={n: Diverged("loss became nan") for n in range(3)})
    with pytest.raises(StageFailed, match="3 of 3 evaluations failed"):
        run_stage(compose(*TINY), KEY, data_file, None, tmp_path / "standard")


# -- what a stage records -----------------------------------------------------------------


def test_a_stage_records_every_evaluation_its_failures_and_its_summary(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Evaluations 1 and 3 (numbers 0 and 2) fail, an expected failure and a bug: the
    limit of 2 failures is reached, not exceeded. A failed evaluation is told to the
    optimizer as loss 1, takes the clock's time and frees memory; only the bug's
    traceback is logged."""
    caplog.set_level(logging.INFO, logger="iishpo.jobs.stage")
    settings = compose(*TINY)
    stand_in = StandIn(monkeypatch, fail={0: TrialFailed("no usable model"), 2: RuntimeError("a bug")})
    told = told_losses(monkeypatch)
    released: list[tuple[torch.device, int]] = []  # and the evaluation it followed
    monkeypatch.setattr(stage_module, "release_memory", lambda device: released.append((device, stand_in.trained[-1])))
    out = tmp_path / "out"
    before = datetime.now(UTC).replace(microsecond=0)

    record = run_stage(settings, KEY, data_file, None, out)

    trials = read_trials(out / TRIALS)
    configs = [t.config for t in trials]
    e1, e3 = val_error(configs[1]), val_error(configs[3])
    seeds = [derive_seed(0, Stream.TRAINING, 0, n) for n in range(4)]
    assert [(t.number, t.status, t.val_error, t.loss, t.epochs, t.best_epoch, t.wall_time, t.elapsed, t.error, t.seed)
            for t in trials] == [
        (0, "failed", None, 1.0, 0, -1, 0.1235, ELAPSED[0], "TrialFailed: no usable model", seeds[0]),
        (1, "ok", e1, e1, 3, 1, 0.0123, ELAPSED[1], None, seeds[1]),
        (2, "failed", None, 1.0, 0, -1, 0.1235, ELAPSED[2], "RuntimeError: a bug", seeds[2]),
        (3, "ok", e3, e3, 3, 1, 0.0123, ELAPSED[3], None, seeds[3]),
    ]
    assert all(before <= datetime.fromisoformat(t.finished_at) <= datetime.now(UTC) for t in trials)
    assert stand_in.trained == [0, 1, 2, 3]
    assert told == [(t.config, t.loss) for t in trials]
    assert released == [(torch.device("cpu"), 0), (torch.device("cpu"), 2)]
    data = stand_in.given[0][0]
    assert stand_in.given == [(data, settings.trainer)] * 4
    assert (data.device, data.resolution, len(data.tensors["train"]), len(data.tensors["val"])) == (
        torch.device("cpu"), RESOLUTION, 8, 4)
    assert (out / TRIALS).read_bytes() == journal_in(out).read_bytes()

    best = min((1, 3), key=lambda n: (val_error(configs[n]), n))
    assert record == read_stage(out / SUMMARY)
    assert (record.dataset, record.optimizer, record.strategy, record.seed, record.stage, record.resolution,
            record.budget, record.n_trials, record.n_failed, record.wall_time) == (
        "synthetic", "random", "standard", 0, 0, 32, 4, 4, 2, ELAPSED[3])
    assert record.best == BestTrial(best, val_error(configs[best]), configs[best])
    assert record.config_digest == fingerprint(stage_config(settings, KEY))
    provenance = record.provenance
    assert (provenance.seed, provenance.config, provenance.overrides) == (0, settings.resolved, list(settings.overrides))
    assert provenance.device.startswith("cpu (") and provenance.precision == "32-true"

    messages = [(r.levelname, r.getMessage(), r.exc_info[0] if r.exc_info else None) for r in caplog.records]
    assert messages[0][1].startswith(f"{LABEL}: 4 evaluations at 32 px on cpu (")
    assert messages[0][1].endswith(") (8 train / 4 val images, 2 classes)")
    best1, best3 = f"{e1:.4f}", f"{min(e1, e3):.4f}"
    assert messages[1:] == [
        ("INFO", f"{LABEL}: evaluation 1/4 FAILED (TrialFailed: no usable model) epochs=0 best=n/a elapsed=0.1s", None),
        ("INFO", f"{LABEL}: evaluation 2/4 val_error={e1:.4f} epochs=3 best={best1} elapsed=0.2s", None),
        ("WARNING", f"{LABEL}: evaluation 3 raised", RuntimeError),
        ("INFO", f"{LABEL}: evaluation 3/4 FAILED (RuntimeError: a bug) epochs=0 best={best1} elapsed=0.4s", None),
        ("INFO", f"{LABEL}: evaluation 4/4 val_error={e3:.4f} epochs=3 best={best3} elapsed=0.5s", None),
    ]


def test_a_stage_of_failures_only_has_no_best_trial(data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    StandIn(monkeypatch, fail={n: TrialFailed("no usable model") for n in range(4)})
    record = run_stage(compose(*TINY, "study.max_failure_fraction=1.0"), KEY, data_file, None, tmp_path / "out")
    assert (record.n_trials, record.n_failed, record.best) == (4, 4, None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_a_stage_for_a_gpu_refuses_to_run_without_one(data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    StandIn(monkeypatch)
    with pytest.raises(RuntimeError, match="^trainer.accelerator='gpu' but no CUDA GPU is visible$"):
        run_stage(compose(*TINY, "trainer.accelerator=gpu"), KEY, data_file, None, tmp_path / "out")


def test_the_journal_is_named_by_everything_that_decides_the_trials(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest of the stage's label, its configuration slice and the bytes of its data
    and handoff files (under the key ``ranges``, its first name, so that journals of
    earlier versions resume)."""
    settings = compose(*TINY, "study.budget=7", "study.iis_budgets=[2,5]")
    key = StageKey("synthetic", "random", "iis", 0, 1)
    ranges = narrowed_ranges(tmp_path / "ranges.json", settings, RESOLUTION, [])
    inputs = {"stage": "synthetic/random/iis/seed0/stage1", "config": stage_config(settings, key),
              "data": sha256(data_file.read_bytes()), "ranges": sha256(ranges.read_bytes())}
    named = f"trials.journal.{fingerprint(inputs)}.jsonl"
    assert journal_path(settings, key, data_file, ranges, tmp_path) == tmp_path / named
    without = fingerprint({**inputs, "ranges": None})
    assert journal_path(settings, key, data_file, None, tmp_path) == tmp_path / f"trials.journal.{without}.jsonl"
    StandIn(monkeypatch, key)
    run_stage(settings, key, data_file, ranges, tmp_path / "out")
    assert journal_in(tmp_path / "out").name == named


def test_too_many_failures_stop_the_stage_naming_the_most_common_cause_also_when_resumed(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = compose(*TINY)
    StandIn(monkeypatch, fail={0: Diverged("loss became nan"), 1: TrialFailed("x"), 2: Diverged("loss became inf")})
    out = tmp_path / "out"
    message = (
        f"^{LABEL}: 3 of 3 evaluations failed, more than study.max_failure_fraction=0.5 of the budget 4 "
        r"allows \(2\); most common cause: diverged \(non-finite loss\) \(2x\), e.g. 'Diverged: loss became nan'. "
        r"The journal keeps the finished trials: fix the cause \(or raise study.max_failure_fraction\) and run again.$"
    )
    with pytest.raises(StageFailed, match=message):
        run_stage(settings, KEY, data_file, None, out)
    assert sorted(out.iterdir()) == [journal_in(out)]
    again = StandIn(monkeypatch)
    with pytest.raises(StageFailed, match=message):
        run_stage(settings, KEY, data_file, None, out)
    assert again.trained == []


def test_a_missing_optimizer_library_is_named_before_any_training(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when SMAC is not installed: the stage's error names its optimizer and the library."""

    @dataclass(frozen=True)
    class Elsewhere(OptimizerSettings):
        algorithm: ClassVar[str] = "no_such_library.search.Optimizer"

    settings = compose(*TINY)
    settings = replace(settings, optimizers={**settings.optimizers, "random": Elsewhere()})
    stand_in = StandIn(monkeypatch)
    message = (r"^optimizer 'random' \(no_such_library.search.Optimizer\) needs 'no_such_library', "
               "which is not installed: pip install no_such_library$")
    with pytest.raises(ImportError, match=message):
        run_stage(settings, KEY, data_file, None, tmp_path / "out")
    assert stand_in.trained == []


def test_data_of_another_resolution_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = image_file(tmp_path / "16px.npz", 16)
    StandIn(monkeypatch)
    with pytest.raises(ValueError, match=f"^{data} holds 16 px images, stage needs 32 px$"):
        run_stage(compose(*TINY), KEY, data, None, tmp_path / "out")


# -- resuming -----------------------------------------------------------------------------


def test_an_interrupted_stage_resumes_where_it_stopped(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    outside_handlers: Callable[[int, Any], None],
) -> None:
    """SIGTERM in the last training: three trials kept, nothing written; the rerun trains
    the last and ends with the trials of an uninterrupted stage. Its elapsed time goes on
    from the last kept trial's (rounded) one: the clock of the second process starts
    afresh."""
    caplog.set_level(logging.INFO, logger="iishpo.jobs.stage")
    settings = compose(*TINY)
    StandIn(monkeypatch)
    run_stage(settings, KEY, data_file, None, tmp_path / "reference")
    uninterrupted = read_trials(tmp_path / "reference" / TRIALS)
    out = tmp_path / "out"
    StandIn(monkeypatch, fail={3: signal.SIGTERM})
    with pytest.raises(StageInterrupted) as stop:
        run_stage(settings, KEY, data_file, None, out)
    assert stop.value.code == 128 + signal.SIGTERM
    journal = journal_in(out)
    assert sorted(out.iterdir()) == [journal] and len(read_trials(journal)) == 3
    assert caplog.messages[-1] == (
        f"{LABEL}: interrupted by SIGTERM after 3 finished evaluations, all kept in {journal}; run again to resume"
    )
    resumed = StandIn(monkeypatch)
    run_stage(settings, KEY, data_file, None, out)
    assert resumed.trained == [3]
    assert f"{LABEL}: resuming after 3 finished evaluations" in caplog.messages
    trials = read_trials(out / TRIALS)
    assert [replace(t, finished_at="", elapsed=0) for t in trials] == [replace(t, finished_at="", elapsed=0) for t in uninterrupted]
    assert [t.elapsed for t in trials] == [*ELAPSED[:3], 0.4939]  # 0.3704 + 0.123456
    assert signal.getsignal(signal.SIGTERM) is outside_handlers


def test_a_stage_interrupted_in_its_first_training_has_kept_nothing(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    outside_handlers: Callable[[int, Any], None],
) -> None:
    settings = compose(*TINY)
    StandIn(monkeypatch, fail={0: signal.SIGINT})
    out = tmp_path / "out"
    with pytest.raises(StageInterrupted) as stop:
        run_stage(settings, KEY, data_file, None, out)
    assert stop.value.code == 128 + signal.SIGINT
    journal = journal_path(settings, KEY, data_file, None, out)
    assert not journal.exists()
    assert caplog.messages[-1] == (
        f"{LABEL}: interrupted by SIGINT after 0 finished evaluations, all kept in {journal}; run again to resume"
    )


def test_a_finished_journal_rewrites_lost_outputs_and_a_longer_one_is_refused(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs that the workflow deleted after the stage finished (a job killed before
    Snakemake accepted them) come back from the journal, without training."""
    settings = compose(*TINY)
    StandIn(monkeypatch)
    out = tmp_path / "out"
    run_stage(settings, KEY, data_file, None, out)
    trials, first = (out / TRIALS).read_bytes(), read_stage(out / SUMMARY)
    for name in (TRIALS, SUMMARY):
        (out / name).unlink()
    again = StandIn(monkeypatch)
    run_stage(settings, KEY, data_file, None, out)
    assert again.trained == []
    assert (out / TRIALS).read_bytes() == trials
    rewritten = read_stage(out / SUMMARY)
    assert replace(rewritten, provenance=replace(rewritten.provenance, created_at=first.provenance.created_at)) == first
    journal = journal_in(out)
    TrialStore(journal).append(replace(read_trials(journal)[-1], number=4))
    with pytest.raises(ValueError, match=f"^{journal} holds 5 trials, more than the budget 4$"):
        run_stage(settings, KEY, data_file, None, out)


def test_journals_of_other_inputs_are_kept_and_not_resumed(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iishpo.jobs.stage")
    out = tmp_path / "out"
    out.mkdir()
    others = [out / f"trials.journal.{digits * 16}.jsonl" for digits in "01"]
    for other in others:
        other.write_text("not resumed\n")
    stand_in = StandIn(monkeypatch)
    run_stage(compose(*TINY), KEY, data_file, None, out)
    assert stand_in.trained == [0, 1, 2, 3] and [o.read_text() for o in others] == ["not resumed\n"] * 2
    names = f"{others[0].name}, {others[1].name}"
    assert f"{LABEL}: not resuming {names} (journals of other inputs; kept)" in caplog.messages


# -- signals ------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_stage_like_the_signal_would_end_a_process(
    signum: signal.Signals, outside_handlers: Callable[[int, Any], None]
) -> None:
    with pytest.raises(StageInterrupted) as stop, _Signals():
        signal.raise_signal(signum)
    assert (stop.value.code, stop.value.signum) == (128 + signum, signum)
    assert str(stop.value) == f"interrupted by {signum.name}"
    assert signal.getsignal(signum) is outside_handlers  # restored


def test_a_signal_while_recording_a_trial_stops_the_stage_after_it(outside_handlers: Callable[[int, Any], None]) -> None:
    recorded = []
    with _Signals() as signals:
        with signals.recording():
            pass  # nothing pending: nothing raised
        with pytest.raises(StageInterrupted) as stop, signals.recording():
            signal.raise_signal(signal.SIGTERM)
            recorded.append("trial")
        assert recorded == ["trial"] and stop.value.signum == signal.SIGTERM
        with pytest.raises(StageInterrupted):  # outside a recording again
            signal.raise_signal(signal.SIGINT)


def test_a_signal_after_the_stage_finished_is_ignored(
    outside_handlers: Callable[[int, Any], None], caplog: pytest.LogCaptureFixture
) -> None:
    with _Signals() as signals:
        signals.finished()
        signal.raise_signal(signal.SIGTERM)
    assert caplog.messages == ["ignoring SIGTERM: the stage has finished"]


def test_signals_are_left_alone_outside_the_main_thread(outside_handlers: Callable[[int, Any], None]) -> None:
    """Python takes signals only in the main thread; a stage run by a worker's thread
    leaves them to the process."""
    seen = []

    def in_a_thread() -> None:
        with _Signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [outside_handlers]
