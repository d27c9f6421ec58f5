"""Run one optimization stage: N evaluations at one resolution, in one process.

The runner knows nothing about the algorithm: it asks, trains, stores, tells. Trials go
to a journal as they finish (``trials.journal.<inputs>.jsonl``, format in
:mod:`iishpo.store`; not a workflow output, so neither a killed job nor Snakemake's
cleanup of a failed job's outputs removes it); a restarted stage replays the journal into
a fresh optimizer and goes on where it stopped, so a resumed stage ends with the trials an
uninterrupted one would have made (configurations, errors, status; not timings). The
journal is named by the digest of everything that decides the stage's trials (its
configuration slice and the bytes of its data and handoff files), so a stage whose inputs
changed never resumes another configuration's trials, and changing them back resumes.

Interruptions:

* SIGKILL, node loss: at most the evaluation in progress is lost; a torn last journal
  line is cut off on restart.
* SIGTERM (e.g. SLURM at the wall time) and SIGINT (Ctrl-C): the evaluation in progress
  is abandoned, a trial being recorded is finished first, and the process exits with
  ``128 + signal`` (143, 130) via :class:`StageInterrupted`, a ``SystemExit`` that
  Lightning passes through (a plain ``KeyboardInterrupt`` it would swallow and turn into
  ``exit(1)``).

Failures: an evaluation that diverges (non-finite loss), runs out of memory (or exceeds
``trainer.memory_limit_mb``), or raises is recorded as ``failed`` with its error and told
to the optimizer as the worst loss (1.0); the stage goes on. When more than
``study.max_failure_fraction`` of the budget has failed the stage stops with
:class:`StageFailed`, naming the most common cause; the journal is kept. A rung of
successive halving or Hyperband that trains promoted configurations again has no limit.

Outputs are written only when every evaluation is done: ``trials.jsonl`` (a copy of the
journal) and ``stage.json`` (summary and provenance), each atomically. The journal stays:
when the job is killed after writing them but before Snakemake accepts them (a SLURM time
limit in that instant), Snakemake deletes the outputs as incomplete, and the rerun writes
them again from the journal without training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import torch

from iishpo.data.splits import load_splits
from iishpo.optimizers import create_optimizer
from iishpo.plan.layout import STAGE_RECORD as SUMMARY
from iishpo.plan.layout import TRIALS, StageKey, digest, stage_config
from iishpo.results.artifacts import (
    BestTrial,
    StageRecord,
    read_promotions,
    read_ranges,
    write_record,
)
from iishpo.results.provenance import device_description, training_provenance
from iishpo.search.space import Config, SearchSpace, build_space
from iishpo.seeds import Stream, derive_seed
from iishpo.settings.config import Settings
from iishpo.settings.strategies import PROMOTIONS, STRATEGIES
from iishpo.store import WORST_LOSS, Trial, TrialStore, ranked, write_atomic
from iishpo.training.batches import TrainingData
from iishpo.training.device import device_for
from iishpo.training.failures import TrialFailed, failure_cause, failure_record
from iishpo.training.fit import evaluate_trial
from iishpo.training.memory import release_memory

log = logging.getLogger(__name__)

JOURNALS = "trials.journal.*.jsonl"


class StageFailed(RuntimeError):
    """Too many trials failed for the stage's results to mean anything."""


class StageInterrupted(SystemExit):
    """SIGINT or SIGTERM stopped the stage; its finished trials are in the journal.

    A ``SystemExit`` with code ``128 + signal``, so that ``python -m iishpo run-stage``
    exits like a process killed by that signal would (non-zero) but after a clean stop.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


class _Signals:
    """While active, SIGINT and SIGTERM raise :class:`StageInterrupted`, except inside
    :meth:`recording` (raised when it ends) and after :meth:`finished` (ignored)."""

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.previous: dict[int, object] = {}
        self.pending: int | None = None
        self.holding = False
        self.done = False

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in self.HANDLED:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            restored = handler if handler is not None else signal.SIG_DFL
            signal.signal(signum, restored)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: object) -> None:
        if self.done:
            log.warning("ignoring %s: the stage has finished", signal.Signals(signum).name)
        elif self.holding:
            self.pending = signum
        else:
            raise StageInterrupted(signum)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Defer a signal until the trial is in the journal and told to the optimizer."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending is not None:
            raise StageInterrupted(self.pending)

    def finished(self) -> None:
        self.done = True


def training_seed(key: StageKey, number: int) -> int:
    """The seed of evaluation ``number`` (see :mod:`iishpo.seeds`)."""
    return derive_seed(key.seed, Stream.TRAINING, key.stage, number)


def start_space(settings: Settings, key: StageKey, handoff_file: Path | None) -> tuple[SearchSpace, list[Config]]:
    """Where the stage searches and what its optimizer proposes first: the full space, or
    the ranges the stage before narrowed (IIS), or the full space with the configurations
    promoted from the rung before, which fill the stage's whole budget (successive halving:
    the optimizer proposes exactly those and is told their losses; none promoted: a new
    Hyperband bracket, the optimizer proposes)."""
    resolution, budget = settings.study.stages(key.strategy)[key.stage]
    if handoff_file is None:
        return build_space(settings.space, resolution), []
    if STRATEGIES[key.strategy].handoff == PROMOTIONS:
        promotions = read_promotions(handoff_file)
        if promotions.resolution != resolution:
            raise ValueError(f"{handoff_file} is for {promotions.resolution} px, stage needs {resolution} px")
        if promotions.configs and len(promotions.configs) != budget:
            raise ValueError(f"{handoff_file} promotes {len(promotions.configs)} configurations, the stage's budget is {budget}")
        return build_space(settings.space, resolution), promotions.configs
    ranges = read_ranges(handoff_file)
    if ranges.space.resolution != resolution:
        raise ValueError(f"{handoff_file} is for {ranges.space.resolution} px, stage needs {resolution} px")
    return ranges.space, ranges.initial_points


def run_stage(settings: Settings, key: StageKey, data_file: Path, handoff_file: Path | None, out_dir: Path) -> StageRecord:
    """Evaluate the stage's whole budget (resuming from its journal) and write its outputs.

    Raises :class:`StageFailed` when too many evaluations failed and
    :class:`StageInterrupted` on SIGINT/SIGTERM; either way the journal keeps every
    finished trial and no output is written.
    """
    journal = journal_path(settings, key, data_file, handoff_file, out_dir)
    with _Signals() as signals:
        try:
            return _run(settings, key, data_file, handoff_file, out_dir, journal, signals)
        except StageInterrupted as stop:
            done = journal.read_bytes().count(b"\n") if journal.exists() else 0
            log.warning(
                "%s: %s after %d finished evaluations, all kept in %s; run again to resume",
                key.label(), stop, done, journal,
            )
            raise


def _run(
    settings: Settings, key: StageKey, data_file: Path, handoff_file: Path | None, out_dir: Path,
    journal: Path, signals: _Signals,
) -> StageRecord:
    study = settings.study
    stages = study.stages(key.strategy)
    resolution, budget = stages[key.stage]
    torch.set_num_threads(settings.trainer.threads)
    space, initial = start_space(settings, key, handoff_file)
    optimizer = create_optimizer(
        key.optimizer, space, budget=budget,
        seed=derive_seed(key.seed, Stream.OPTIMIZER, key.stage),
        initial_points=initial, settings=settings.optimizers[key.optimizer],
    )
    store = TrialStore(journal)
    others = [p.name for p in sorted(out_dir.glob(JOURNALS)) if p != store.path]
    if others:
        log.info("%s: not resuming %s (journals of other inputs; kept)", key.label(), ", ".join(others))
    trials = store.load()
    if len(trials) > budget:
        raise ValueError(f"{store.path} holds {len(trials)} trials, more than the budget {budget}")
    optimizer.replay([(t.config, t.loss) for t in trials])
    # a rung that trains promoted configurations again is no test of the setup: a failure
    # there says that a configuration which trained at the rung below does not at this
    # resolution, a result of halving (told as the worst loss, as any failure); and its
    # rungs are small, so that one failure would exceed any fraction below 1
    promoted = STRATEGIES[key.strategy].handoff is PROMOTIONS and bool(initial)
    max_failures = budget if promoted else int(study.max_failure_fraction * budget)
    if trials:
        log.info("%s: resuming after %d finished evaluations", key.label(), len(trials))
        _check_failures(key, trials, budget, max_failures, study.max_failure_fraction)

    device = device_for(settings.trainer.accelerator)
    data = TrainingData(load_splits(data_file), device)
    if data.resolution != resolution:
        raise ValueError(f"{data_file} holds {data.resolution} px images, stage needs {resolution} px")
    log.info(
        "%s: %d evaluations at %d px on %s (%d train / %d val images, %d classes)",
        key.label(), budget, resolution, device_description(device),
        len(data.tensors["train"]), len(data.tensors["val"]), data.n_classes,
    )
    offset = trials[-1].elapsed if trials else 0.0
    start = time.perf_counter()
    for number in range(len(trials), budget):
        config = optimizer.ask()
        seed = training_seed(key, number)
        began = time.perf_counter()
        try:
            result, wall = evaluate_trial(config, data, settings.trainer, seed)
            status, val_error, loss, error = "ok", result.val_error, result.val_error, None
            epochs, best_epoch = result.epochs, result.best_epoch
        except Exception as err:  # whatever one configuration raises fails that trial only
            wall = time.perf_counter() - began
            status, val_error, loss, error = "failed", None, WORST_LOSS, failure_record(err)
            epochs, best_epoch = 0, -1
            if not isinstance(err, TrialFailed):  # unexpected: keep the traceback in the log
                log.warning("%s: evaluation %d raised", key.label(), number + 1, exc_info=True)
        if status == "failed":  # free the failed training's objects now that its traceback is gone
            release_memory(device)
        trial = Trial(
            number=number, config=config, status=status, val_error=val_error, loss=loss,
            epochs=epochs, best_epoch=best_epoch, wall_time=round(wall, 4),
            elapsed=round(offset + time.perf_counter() - start, 4), error=error, seed=seed,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with signals.recording():
            store.append(trial)
            optimizer.tell(config, loss)
            trials.append(trial)
        _report(key, trials, budget)
        _check_failures(key, trials, budget, max_failures, study.max_failure_fraction)
    summary = _summary(settings, key, trials, resolution, budget, device)
    write_atomic(out_dir / TRIALS, store.path.read_bytes())
    write_record(out_dir / SUMMARY, summary)
    _fsync_dir(out_dir)
    signals.finished()
    return summary


def journal_path(
    settings: Settings, key: StageKey, data_file: Path, handoff_file: Path | None, out_dir: Path
) -> Path:
    """The stage's journal in ``out_dir``, named by the digest of what decides its trials."""
    inputs = {
        "stage": key.label(),
        "config": stage_config(settings, key),
        "data": _file_digest(data_file),
        # the key keeps its first name, "ranges", so that existing journals keep theirs
        "ranges": _file_digest(handoff_file) if handoff_file is not None else None,
    }
    return out_dir / JOURNALS.replace("*", digest(inputs))


def _file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _check_failures(
    key: StageKey, trials: list[Trial], budget: int, max_failures: int, fraction: float
) -> None:
    failures = [t for t in trials if not t.ok]
    if len(failures) <= max_failures:
        return
    causes = Counter(failure_cause(t.error or "unknown") for t in failures)
    cause, count = causes.most_common(1)[0]
    example = next(t.error for t in failures if failure_cause(t.error or "unknown") == cause)
    raise StageFailed(
        f"{key.label()}: {len(failures)} of {len(trials)} evaluations failed, more than "
        f"study.max_failure_fraction={fraction} of the budget {budget} allows ({max_failures}); "
        f"most common cause: {cause} ({count}x), e.g. {example!r}. The journal keeps the "
        "finished trials: fix the cause (or raise study.max_failure_fraction) and run again."
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _report(key: StageKey, trials: list[Trial], budget: int) -> None:
    last = trials[-1]
    ok = [t.val_error for t in trials if t.ok and t.val_error is not None]
    best = f"{min(ok):.4f}" if ok else "n/a"
    outcome = f"val_error={last.val_error:.4f}" if last.ok else f"FAILED ({last.error})"
    log.info(
        "%s: evaluation %d/%d %s epochs=%d best=%s elapsed=%.1fs",
        key.label(), last.number + 1, budget, outcome, last.epochs, best, last.elapsed,
    )


def _summary(
    settings: Settings, key: StageKey, trials: list[Trial], resolution: int, budget: int, device: torch.device
) -> StageRecord:
    ok = ranked(trials)
    best = ok[0] if ok else None
    return StageRecord(
        dataset=key.dataset, optimizer=key.optimizer, strategy=key.strategy,
        seed=key.seed, stage=key.stage, resolution=resolution, budget=budget,
        n_trials=len(trials), n_failed=len(trials) - len(ok),
        wall_time=trials[-1].elapsed,  # a stage ends with its whole budget, at least 1 trial
        best=None if best is None else BestTrial(best.number, best.val_error, best.config),  # type: ignore[arg-type]
        config_digest=digest(stage_config(settings, key)),
        provenance=training_provenance(settings, device, key.seed),
    )
