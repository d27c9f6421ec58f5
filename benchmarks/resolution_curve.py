"""Does the built-in data set lose class information with resolution as real photographs do?

Trains one fixed, untuned CNN (``iishpo.data.synthetic.REFERENCE_CNN``, the default
study's trainer settings) on the built-in data set at each resolution of
``--synthetic`` and on the real 102 Flowers images (the 64 px mirror, official split) at
each resolution of ``--flowers``, averages the validation accuracy over ``--seeds``, and
prints it beside the accuracy relative to the largest and to the best resolution of the
same data set: the shape of that curve is what the two should share.

    .venv/bin/python benchmarks/resolution_curve.py --flowers-mirror /work/shared/data/flowers102-64
    .venv/bin/python benchmarks/resolution_curve.py --tiny --flowers-mirror ...   # smoke run, about a minute

``--flowers-mirror ''`` skips 102 Flowers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_data import REPO, add_data_arguments, prepare_flowers, prepare_synthetic, subset

from iishpo.data.splits import load_splits
from iishpo.data.synthetic import REFERENCE_CNN
from iishpo.settings.config import Trainer, load_settings
from iishpo.training.batches import TrainingData
from iishpo.training.device import device_for
from iishpo.training.fit import train
from iishpo.training.runtime import configure_training


def accuracies(
    paths: Mapping[int, Path], trainer: Trainer, seeds: Sequence[int], n_classes: int | None = None
) -> dict[int, list[float]]:
    """Validation accuracy of the reference CNN per resolution, one per training seed."""
    out: dict[int, list[float]] = {}
    for resolution, path in sorted(paths.items()):
        data = TrainingData(subset(load_splits(path), n_classes), device_for(trainer.accelerator))
        out[resolution] = [
            1 - train(REFERENCE_CNN, data, trainer, seed=s)[0].val_error for s in seeds
        ]
    return out


def report(name: str, n_classes: int, curve: Mapping[int, list[float]], seconds: float) -> None:
    """One line per resolution: mean, spread and each seed's accuracy, and the mean divided
    by the mean at the largest and at the best resolution."""
    means = {r: statistics.mean(values) for r, values in curve.items()}
    largest, best = means[max(means)], max(means.values())
    print(f"\n{name}: {n_classes} classes, chance {1 / n_classes:.3f}, {seconds:.0f} s")
    print(f"{'px':>4}  {'val accuracy':>16}  {'/largest':>8}  {'/best':>6}  per seed")
    for resolution, values in sorted(curve.items()):
        mean = means[resolution]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        seeds = " ".join(f"{v:.3f}" for v in values)
        print(
            f"{resolution:4d}  {mean:8.3f} ± {spread:5.3f}  {mean / largest:8.2f}  "
            f"{mean / best:6.2f}  {seeds}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--synthetic", type=int, nargs="*", default=[8, 16, 32, 64], help="resolutions (px)"
    )
    parser.add_argument(
        "--flowers", type=int, nargs="*", default=[16, 32, 64], help="resolutions (px)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    add_data_arguments(parser)
    parser.add_argument("--max-epochs", type=int, help="default: the default study's trainer")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="smoke size: 2 epochs, 3+2 images per class, 5 flower classes, 1 seed",
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.seeds, args.max_epochs = args.seeds[:1], args.max_epochs or 2
        args.per_class = args.per_class or [3, 2]
        args.flowers_classes = args.flowers_classes or 5
    configure_training()
    torch.set_num_threads(1)
    settings = load_settings(
        ["study=flowers-cpu", "trainer.accelerator=cpu"], config_dir=REPO / "conf"
    )
    trainer = (
        settings.trainer
        if args.max_epochs is None
        else replace(settings.trainer, max_epochs=args.max_epochs)
    )
    print(
        f"reference CNN {dict(REFERENCE_CNN)}; trainer max_epochs={trainer.max_epochs} "
        f"patience={trainer.patience}; seeds {args.seeds}; torch threads 1"
    )
    with tempfile.TemporaryDirectory(prefix="iishpo-resolution-") as tmp:
        work = Path(tmp)
        if args.synthetic:
            start = time.perf_counter()
            paths, cfg = prepare_synthetic(work, args.synthetic, args.per_class)
            curve = accuracies(paths, trainer, args.seeds)
            report("built-in data set", int(cfg["n_classes"]), curve, time.perf_counter() - start)
        if args.flowers and args.flowers_mirror != "":
            start = time.perf_counter()
            paths, _ = prepare_flowers(work, args.flowers, args.flowers_mirror)
            curve = accuracies(paths, trainer, args.seeds, args.flowers_classes)
            n_classes = args.flowers_classes or int(
                np.unique(load_splits(paths[max(paths)]).y["train"]).size
            )
            report(
                "102 Flowers (64 px mirror, official split)",
                n_classes,
                curve,
                time.perf_counter() - start,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
