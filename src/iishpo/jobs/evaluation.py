"""Score a run's best configuration on the held-out test set.

The best configuration is the one with the lowest validation error in the run's result
stages (the last stage; for Hyperband every bracket's last rung: all at the target
resolution, so their errors are comparable; a tie goes to the earlier stage). It is retrained
on the training split, early-stopped on the validation split, and scored once on the test
split with the data set's metric. With a fold protocol (STL-10) it is trained on each fold
of the pool instead, validated on the rest of the pool, and the test scores are averaged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from iishpo.data.splits import load_splits
from iishpo.plan.layout import digest, evaluation_config
from iishpo.results.artifacts import EvaluationRecord, write_record
from iishpo.results.provenance import training_provenance
from iishpo.seeds import Stream, derive_seed
from iishpo.settings.config import Settings
from iishpo.store import ranked, read_trials
from iishpo.training.batches import TrainingData
from iishpo.training.device import device_for
from iishpo.training.fit import evaluate, train

log = logging.getLogger(__name__)


def evaluate_test(
    settings: Settings, dataset: str, seed: int, trials_files: Sequence[Path], data_file: Path, out_file: Path
) -> EvaluationRecord:
    # sorted is stable: among equal errors the earlier stage's ranked first trial wins
    trials = sorted((t for f in trials_files for t in ranked(read_trials(f))), key=lambda t: t.val_error)  # type: ignore[arg-type,return-value]
    if not trials:
        raise ValueError(f"{', '.join(map(str, trials_files))}: no successful trial to evaluate on the test set")
    best = trials[0]
    torch.set_num_threads(settings.trainer.threads)
    device = device_for(settings.trainer.accelerator)
    data = TrainingData(load_splits(data_file), device)
    metric = settings.datasets[dataset]["test_metric"]
    splits = data.splits
    start = time.perf_counter()
    if splits.test_folds and splits.pool_x is not None and splits.pool_y is not None:
        scores = []
        for i, fold in enumerate(splits.test_folds):
            rest = np.setdiff1d(np.arange(len(splits.pool_y)), fold)
            fit = data.tensor(splits.pool_x[fold], splits.pool_y[fold])
            val = data.tensor(splits.pool_x[rest], splits.pool_y[rest])
            _, module = train(best.config, data, settings.trainer, derive_seed(seed, Stream.TEST, 0, i), fit, val)
            scores.append(evaluate(module, data.tensors["test"], settings.trainer.eval_batch_size, metric, data.n_classes))
            log.info("test fold %d/%d: %s=%.4f", i + 1, len(splits.test_folds), metric, scores[-1])
    else:
        scores = []
        for i in range(settings.evaluation.repeats):
            _, module = train(best.config, data, settings.trainer, derive_seed(seed, Stream.TEST, 0, i))
            scores.append(evaluate(module, data.tensors["test"], settings.trainer.eval_batch_size, metric, data.n_classes))
            log.info("test retraining %d/%d: %s=%.4f", i + 1, settings.evaluation.repeats, metric, scores[-1])
    score = float(np.mean(scores))
    spread = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
    out = EvaluationRecord(
        metric=metric, test_score=score, test_score_std=spread, scores=scores,
        val_error=best.val_error, trial=best.number, config=best.config,  # type: ignore[arg-type]
        resolution=data.resolution, wall_time=round(time.perf_counter() - start, 3),
        config_digest=digest(evaluation_config(settings, dataset)),
        provenance=training_provenance(settings, device, seed),
    )
    write_record(out_file, out)
    log.info(
        "test %s of the best configuration (val_error %.4f): %.4f +- %.4f over %d retrainings",
        metric, best.val_error, score, spread, len(scores),
    )
    return out
