"""Run one optimization stage: N evaluations at one resolution, in one process.

The runner knows nothing about the algorithm: it asks, trains, stores, tells. Trials go
to a journal as they finish (``trials.journal.jsonl``, not a workflow output, so a killed
job keeps it); a restarted stage replays the journal into a fresh optimizer and goes on
where it stopped. Only when all evaluations are done does the journal become the stage's
output ``trials.jsonl`` (one atomic rename), next to ``stage.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from iishpo.config import Settings
from iishpo.data.splits import load_splits
from iishpo.optimizers import create_optimizer
from iishpo.provenance import device_description, provenance
from iishpo.space import Config, SearchSpace, build_space
from iishpo.store import WORST_LOSS, Trial, TrialStore, write_json_atomic
from iishpo.training import TrainingData, TrialFailed, device_for, evaluate_trial

log = logging.getLogger(__name__)

JOURNAL = "trials.journal.jsonl"
TRIALS = "trials.jsonl"
SUMMARY = "stage.json"


class StageFailed(RuntimeError):
    """Too many trials failed for the stage's results to mean anything."""


@dataclass(frozen=True)
class StageKey:
    """Which run and stage: every wildcard of the results path."""

    dataset: str
    optimizer: str
    strategy: str
    seed: int
    stage: int

    def label(self) -> str:
        return f"{self.dataset}/{self.optimizer}/{self.strategy}/seed{self.seed}/stage{self.stage}"


def training_seed(key: StageKey, number: int) -> int:
    """A seed per evaluation, stable across processes (no Python ``hash``)."""
    return zlib.crc32(f"{key.label()}/{number}".encode()) & 0x7FFFFFFF


def start_space(settings: Settings, key: StageKey, ranges_file: Path | None) -> tuple[SearchSpace, list[Config]]:
    resolution, _ = settings.study.stages(key.strategy)[key.stage]
    if ranges_file is None:
        return build_space(settings.space, resolution), []
    data = json.loads(ranges_file.read_text())
    space = SearchSpace.from_dict(data["space"])
    if space.resolution != resolution:
        raise ValueError(f"{ranges_file} is for {space.resolution} px, stage needs {resolution} px")
    return space, data["initial_points"]


def run_stage(settings: Settings, key: StageKey, data_file: Path, ranges_file: Path | None, out_dir: Path) -> dict:
    """Evaluate the stage's whole budget (resuming from its journal) and write its outputs."""
    study = settings.study
    stages = study.stages(key.strategy)
    resolution, budget = stages[key.stage]
    torch.set_num_threads(settings.trainer.threads)
    space, initial = start_space(settings, key, ranges_file)
    optimizer = create_optimizer(
        key.optimizer, space, budget=budget, seed=key.seed * 1000 + key.stage,
        initial_points=initial, settings=settings.optimizers[key.optimizer],
    )
    store = TrialStore(out_dir / JOURNAL)
    trials = store.load()
    if len(trials) > budget:
        raise ValueError(f"{store.path} holds {len(trials)} trials, more than the budget {budget}")
    optimizer.replay([(t.config, t.loss) for t in trials])
    if trials:
        log.info("%s: resuming after %d finished evaluations", key.label(), len(trials))

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
    max_failures = int(study.max_failure_fraction * budget)
    for number in range(len(trials), budget):
        config = optimizer.ask()
        seed = training_seed(key, number)
        began = time.perf_counter()
        try:
            result, wall = evaluate_trial(config, data, settings.trainer, seed)
            status, val_error, loss, error = "ok", result.val_error, result.val_error, None
            epochs, best_epoch = result.epochs, result.best_epoch
        except (TrialFailed, torch.OutOfMemoryError, RuntimeError, ValueError) as err:
            wall = time.perf_counter() - began
            status, val_error, loss, error = "failed", None, WORST_LOSS, f"{type(err).__name__}: {err}"
            epochs, best_epoch = 0, -1
        trial = Trial(
            number=number, config=config, status=status, val_error=val_error, loss=loss,
            epochs=epochs, best_epoch=best_epoch, wall_time=round(wall, 4),
            elapsed=round(offset + time.perf_counter() - start, 4), error=error, seed=seed,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        store.append(trial)
        optimizer.tell(config, loss)
        trials.append(trial)
        _report(key, trials, budget)
        failures = [t for t in trials if not t.ok]
        if len(failures) > max_failures:
            cause, count = Counter(t.error.split(":")[0] for t in failures if t.error).most_common(1)[0]
            raise StageFailed(
                f"{key.label()}: {len(failures)} of {len(trials)} evaluations failed, more than "
                f"study.max_failure_fraction={study.max_failure_fraction} of {budget}; most "
                f"common cause ({count}x): {next(t.error for t in failures if t.error.startswith(cause))}"
            )
    summary = _summary(settings, key, trials, resolution, budget, device)
    os.replace(store.path, out_dir / TRIALS)
    write_json_atomic(out_dir / SUMMARY, summary)
    return summary


def _report(key: StageKey, trials: list[Trial], budget: int) -> None:
    last = trials[-1]
    ok = [t.val_error for t in trials if t.ok and t.val_error is not None]
    best = f"{min(ok):.4f}" if ok else "n/a"
    outcome = f"val_error={last.val_error:.4f}" if last.ok else f"FAILED ({last.error})"
    log.info(
        "%s: evaluation %d/%d %s epochs=%d best=%s elapsed=%.1fs",
        key.label(), last.number + 1, budget, outcome, last.epochs, best, last.elapsed,
    )


def _summary(settings: Settings, key: StageKey, trials: list[Trial], resolution: int, budget: int, device: torch.device) -> dict:
    ok = [t for t in trials if t.ok]
    best = min(ok, key=lambda t: (t.val_error, t.number)) if ok else None
    return {
        "dataset": key.dataset, "optimizer": key.optimizer, "strategy": key.strategy,
        "seed": key.seed, "stage": key.stage, "resolution": resolution, "budget": budget,
        "n_trials": len(trials), "n_failed": len(trials) - len(ok),
        "wall_time": trials[-1].elapsed if trials else 0.0,
        "best": None if best is None else {
            "number": best.number, "val_error": best.val_error, "config": best.config,
        },
        "provenance": provenance(
            settings.resolved, settings.overrides, device=device_description(device),
            seed=key.seed,
        ),
    }
