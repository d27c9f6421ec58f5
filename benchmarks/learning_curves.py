"""How many epochs do trainings need under the paper's stopping rule, and is the default
``trainer.max_epochs`` large enough not to cut a learning configuration off?

Trains three fixed configurations of the paper's space (``conf/space/cnn.yaml``: small,
medium, large; no augmentation, no pretrained weights) with one seed and the default
trainer (stop after ``patience`` = 5 epochs without a lower validation error), up to
``--max-epochs``, on the real 102 Flowers images (the 64 px mirror, official split) at each
resolution of ``--flowers`` and on the built-in data set at each of ``--synthetic``. Where a
resolution allows fewer conv layers than a configuration has (the space's resolution
bound), it keeps the first ones. Prints per training the validation error of every epoch,
the best epoch, the epoch it stopped at and why, the best validation error, the test score
(the data set's test metric: mean per-class accuracy on 102 Flowers) and the seconds per
epoch; and per data set the largest best epoch and the ``max_epochs`` it implies.

    .venv/bin/python benchmarks/learning_curves.py > /tmp/learning_curves.txt   # 10-20 min
    .venv/bin/python benchmarks/learning_curves.py --tiny    # smoke run, seconds

``--flowers`` with no resolution (or ``--flowers-mirror ''``) skips 102 Flowers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench_data import REPO, add_data_arguments, prepare_flowers, prepare_synthetic, subset

from iishpo.data.splits import load_splits
from iishpo.search.space import SearchSpace, layer_name, parse_space
from iishpo.settings.config import Trainer, load_settings
from iishpo.training.batches import TrainingData
from iishpo.training.classifier import Classifier
from iishpo.training.device import device_for
from iishpo.training.failures import TrialFailed
from iishpo.training.fit import evaluate, train
from iishpo.training.runtime import configure_training

SEED = 0
_COMMON = {"learning_rate": 0.01, "batch_size": 32, "l1": 1e-7, "l2": 1e-4, "filter_size": 3}
#: the fixed configurations, each at its full depth (the paper's space, conf/space/cnn.yaml)
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {**_COMMON, "n_conv": 2, "conv_filters": [16, 16], "n_fc": 1, "fc_units": [64]},
    "medium": {**_COMMON, "n_conv": 4, "conv_filters": [32] * 4, "n_fc": 1, "fc_units": [128]},
    "large": {
        **_COMMON, "n_conv": 4, "conv_filters": [64, 64, 128, 128], "n_fc": 1, "fc_units": [512]
    },
}


@dataclass(frozen=True)
class Curve:
    """What the recommendation needs of one training."""

    config: str
    resolution: int
    best_epoch: int  # 1-based
    cut_off: bool  # max_epochs ended it before patience epochs without a lower error


@contextmanager
def epoch_log() -> Iterator[list[float]]:
    """Inside: the start of the first epoch of the current training, then every
    validation error its module reports, with the time it came (``[t0, e1, t1, e2, t2,
    ...]``; cleared by the caller between trainings)."""
    log: list[float] = []
    start, end = Classifier.on_train_epoch_start, Classifier.end_epoch

    def started(module: Classifier) -> None:
        if not log:
            log.append(time.perf_counter())
        start(module)

    def ended(module: Classifier, error: float) -> None:
        end(module, error)
        log.extend((error, time.perf_counter()))

    Classifier.on_train_epoch_start = started  # type: ignore[method-assign]
    Classifier.end_epoch = ended  # type: ignore[method-assign]
    try:
        yield log
    finally:
        Classifier.on_train_epoch_start = start  # type: ignore[method-assign]
        Classifier.end_epoch = end  # type: ignore[method-assign]


def at_resolution(config: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """``config`` as a point of ``space``: per-layer lists as ``name_i`` keys, conv layers
    beyond what the space's resolution allows dropped. Raises ``ValueError`` outside it."""
    n_conv = min(int(config["n_conv"]), int(space["n_conv"].high))  # type: ignore[arg-type]
    point = {k: v for k, v in config.items() if not isinstance(v, list)} | {"n_conv": n_conv}
    counts = {"conv_filters": n_conv, "fc_units": int(config["n_fc"])}
    for name, n in counts.items():
        point |= {layer_name(name, i): config[name][i] for i in range(n)}
    space.validate(point)
    return point


def describe(config: Mapping[str, Any]) -> str:
    """A configuration in one short line."""
    conv = [config[layer_name("conv_filters", i)] for i in range(int(config["n_conv"]))]
    fc = [config[layer_name("fc_units", j)] for j in range(int(config["n_fc"]))]
    return (
        f"lr {config['learning_rate']:g} batch {config['batch_size']} l1 {config['l1']:g} "
        f"l2 {config['l2']:g} kernel {config['filter_size']} conv {conv} fc {fc}"
    )


def compact(errors: Sequence[float], best: int) -> str:
    """The errors as ``.825``, the best one (1-based ``best``) starred."""
    return " ".join(
        f"{e:.3f}".removeprefix("0") + ("*" if i == best else "") for i, e in enumerate(errors, 1)
    )


def curves(
    name: str,
    paths: Mapping[int, Path],
    metric: str,
    spec: Mapping[str, Any],
    trainer: Trainer,
    configs: Sequence[str],
    n_classes: int | None = None,
) -> list[Curve]:
    """Train every configuration at every resolution; print each training as it ends."""
    out = []
    for resolution, path in sorted(paths.items()):
        splits = subset(load_splits(path), n_classes)
        data = TrainingData(splits, device_for(trainer.accelerator))
        sizes = "/".join(str(len(data.tensors[s])) for s in ("train", "val", "test"))
        print(f"\n{name} at {resolution} px: {data.n_classes} classes, {sizes} train/val/test")
        space = parse_space(spec).at(resolution)
        for label in configs:
            config = at_resolution(CONFIGS[label], space)
            print(f"  {label:6} {describe(config)}", flush=True)
            with epoch_log() as log:
                try:
                    result, module = train(config, data, trainer, seed=SEED)
                except TrialFailed as failure:
                    print(f"         failed: {failure}", flush=True)
                    continue
            errors = log[1::2]
            test = evaluate(module, data.tensors["test"], trainer.eval_batch_size, metric, data.n_classes)
            best, stopped = result.best_epoch + 1, len(errors)
            curve = Curve(label, resolution, best, cut_off=stopped - best < trainer.patience)
            by = "max_epochs, cut off" if curve.cut_off else "patience"
            print(
                f"         best epoch {best:3d}, stopped at {stopped:3d} ({by}), "
                f"best val error {result.val_error:.3f}, test {metric} {test:.3f}, "
                f"{(log[-1] - log[0]) / stopped:.2f} s/epoch, load {os.getloadavg()[0]:.1f}\n"
                f"         val error per epoch: {compact(errors, best)}",
                flush=True,
            )
            out.append(curve)
    return out


def recommendation(name: str, done: Sequence[Curve], trainer: Trainer) -> str:
    """The largest best epoch of ``done`` and the ``max_epochs`` that cuts none of them off."""
    if not done:
        return f"{name}: no training finished"
    last = max(done, key=lambda c: c.best_epoch)
    where = f"largest best epoch {last.best_epoch} ({last.config}, {last.resolution} px)"
    cut = [f"{c.config} {c.resolution} px" for c in done if c.cut_off]
    if cut:
        return (
            f"{name}: {where}; cut off by max_epochs {trainer.max_epochs}: {', '.join(cut)}; "
            f"max_epochs must exceed {trainer.max_epochs}: rerun with a larger --max-epochs"
        )
    return (
        f"{name}: {where}; max_epochs >= {last.best_epoch + trainer.patience} "
        f"(= {last.best_epoch} + patience {trainer.patience}) lets every training here "
        "reach its best and stop by patience"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--synthetic", type=int, nargs="*", help="resolutions (default 8 16 32)")
    parser.add_argument("--flowers", type=int, nargs="*", help="resolutions (default 16 32 64)")
    parser.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), help="which to train"
    )
    parser.add_argument("--max-epochs", type=int, help="default 60 (--tiny: 8)")
    add_data_arguments(parser)
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="smoke size: 8 epochs, 3+2 images per class, 5 flower classes, 8 and 16 px",
    )
    args = parser.parse_args(argv)
    tiny = args.tiny
    synthetic = args.synthetic if args.synthetic is not None else [8] if tiny else [8, 16, 32]
    flowers = args.flowers if args.flowers is not None else [16] if tiny else [16, 32, 64]
    max_epochs = args.max_epochs or (8 if tiny else 60)
    per_class = args.per_class or ([3, 2] if tiny else None)
    flowers_classes = args.flowers_classes or (5 if tiny else None)
    configure_training()
    settings = load_settings(
        ["space=cnn", "trainer=default", "trainer.accelerator=cpu", f"trainer.max_epochs={max_epochs}"],
        config_dir=REPO / "conf",
    )
    trainer = settings.trainer
    torch.set_num_threads(trainer.threads)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"learning curves: seed {SEED}, max_epochs {trainer.max_epochs}, patience "
        f"{trainer.patience}, torch threads {trainer.threads}; {os.cpu_count()} CPUs, load "
        f"average {load} (1/5/15 min) at the start; epochs count from 1, * marks the best"
    )
    print("configurations (conf/space/cnn.yaml; conv layers beyond a resolution's bound dropped):")
    for label, config in CONFIGS.items():
        print(f"  {label:6} {config}")
    start = time.perf_counter()
    summary = []
    with tempfile.TemporaryDirectory(prefix="iishpo-learning-") as tmp:
        work = Path(tmp)
        if synthetic:
            paths, cfg = prepare_synthetic(work, synthetic, per_class)
            done = curves(
                "synthetic", paths, cfg["test_metric"], settings.space, trainer, args.configs
            )
            summary.append(recommendation("synthetic", done, trainer))
        if flowers and args.flowers_mirror != "":
            paths, cfg = prepare_flowers(work, flowers, args.flowers_mirror)
            done = curves(
                "flowers102", paths, cfg["test_metric"], settings.space, trainer, args.configs,
                flowers_classes,
            )
            summary.append(recommendation("flowers102", done, trainer))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nsummary ({time.perf_counter() - start:.0f} s, load average {load} at the end):")
    for line in summary:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
