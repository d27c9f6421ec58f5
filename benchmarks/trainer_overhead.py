"""How much the Lightning Trainer costs over a plain PyTorch loop, per evaluation.

Trains the same configurations, on the same data and for the same epochs, through
``iishpo.training.fit.train`` (Lightning, as every evaluation of a stage) and with a plain
loop, interleaved so that all see the same machine load (each side first, second and
third in turn), and prints the ratios. The plain loop runs twice: bare, and with the
bookkeeping that the module does besides Lightning (a divergence check per step, a copy of
the best epoch's weights, restored at the end), which any loop that trains a trial needs:
the second ratio is Lightning's own cost.

    python benchmarks/trainer_overhead.py [--resolution 32] [--repeats 5] [--train-per-class 20]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch
from iishpo.data.splits import load_splits
from iishpo.settings.config import Trainer as TrainerSettings
from iishpo.settings.config import load_settings
from iishpo.training.batches import Batches, TrainingData
from iishpo.training.device import device_for
from iishpo.training.fit import train
from iishpo.training.model import build_cnn
from iishpo.training.runtime import configure_training

CONFIG = {
    "learning_rate": 0.03, "batch_size": 32, "l1": 1e-7, "l2": 1e-5, "filter_size": 3,
    "n_conv": 2, "n_fc": 1, "conv_filters_0": 16, "conv_filters_1": 32, "fc_units_0": 64,
}


def plain_loop(data: TrainingData, epochs: int, seed: int, bookkeeping: bool) -> float:
    """The same model, loss and optimizer without Lightning; returns seconds."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    net = build_cnn(CONFIG, data.in_channels, data.resolution, data.n_classes).to(data.device)
    net = net.to(memory_format=torch.channels_last)  # as iishpo.training.fit.train
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    optimizer = torch.optim.SGD(net.parameters(), lr=CONFIG["learning_rate"], momentum=0.9)
    train_batches = Batches(data.tensors["train"], CONFIG["batch_size"], shuffle=True, seed=seed)
    best_errors, best_state = math.inf, {}
    for _ in range(epochs):
        net.train()
        for x, y in train_batches:
            loss = nn.functional.cross_entropy(net(x), y)
            loss = loss + CONFIG["l1"] * sum(w.abs().sum() for w in weights)
            loss = loss + CONFIG["l2"] * sum(w.pow(2).sum() for w in weights)
            if bookkeeping and not torch.isfinite(loss):
                raise RuntimeError("diverged")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            errors = sum(int((net(x).argmax(1) != y).sum()) for x, y in Batches(data.tensors["val"], 512, shuffle=False))
        if bookkeeping and errors < best_errors:
            best_errors, best_state = errors, {k: v.detach().clone() for k, v in net.state_dict().items()}
    if bookkeeping:
        net.load_state_dict(best_state)
    return time.perf_counter() - start


def trainer_settings(resolution: int, epochs: int) -> TrainerSettings:
    """The shipped trainer settings, with a patience beyond ``epochs`` so that Lightning
    runs exactly ``epochs`` epochs too."""
    settings = load_settings([f"study.ladder=[{resolution}]", "study.strategies=[standard]", "study.iis_budgets=[12]"])
    return replace(settings.trainer, max_epochs=epochs, patience=epochs + 1)


def synthetic_data(resolution: int, settings: TrainerSettings, train_per_class: int | None = None) -> TrainingData:
    """The built-in synthetic data set at ``resolution``, in memory on the training device;
    ``train_per_class`` overrides the size of its training split."""
    overrides = [] if train_per_class is None else [f"datasets.synthetic.per_class.train={train_per_class}"]
    datasets = load_settings(overrides).datasets
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp) / "raw", Path(tmp) / f"{resolution}.npz"
        fetch(datasets["synthetic"], raw)
        prepare_dataset("synthetic", datasets["synthetic"], raw, {resolution: prepared})
        return TrainingData(load_splits(prepared), device_for(settings.accelerator))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="training images per class (default: the data set's 20, 200 in all; "
                             "Lightning's cost is per epoch, so larger epochs dilute it)")
    args = parser.parse_args()
    configure_training()
    torch.set_num_threads(1)
    trainer = trainer_settings(args.resolution, args.epochs)
    data = synthetic_data(args.resolution, trainer, args.train_per_class)
    lightning_times: list[float] = []
    plain_times: dict[bool, list[float]] = {False: [], True: []}

    def through_lightning(seed: int) -> None:
        start = time.perf_counter()
        result, _ = train(CONFIG, data, trainer, seed)
        lightning_times.append(time.perf_counter() - start)
        assert result.epochs == args.epochs, result

    def plain(bookkeeping: bool) -> Callable[[int], None]:
        return lambda seed: plain_times[bookkeeping].append(plain_loop(data, args.epochs, seed, bookkeeping))

    sides = [through_lightning, plain(False), plain(True)]
    for seed in range(args.repeats):
        # each side goes first, second and third equally often: what runs just before
        # (a warm or a cold cache) is the same for all of them
        for side in sides[seed % 3:] + sides[: seed % 3]:
            side(seed)
    lightning = statistics.median(lightning_times)
    print(f"{args.resolution} px, {args.epochs} epochs, {len(data.tensors['train'])} training images, "
          f"median of {args.repeats}, load average {os.getloadavg()[0]:.1f}:")
    print(f"  Lightning Trainer (iishpo.training.fit.train):     {lightning:.3f} s")
    for bookkeeping, times in plain_times.items():
        plain = statistics.median(times)
        ratios = sorted(a / b for a, b in zip(lightning_times, times))
        name = "plain loop with the module's bookkeeping" if bookkeeping else "bare plain loop"
        print(f"  {name + ':':46} {plain:.3f} s, ratio Lightning / it {lightning / plain:.3f} "
              f"(per pair: min {ratios[0]:.3f}, median {statistics.median(ratios):.3f})")

if __name__ == "__main__":
    main()
