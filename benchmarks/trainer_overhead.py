"""How much the Lightning Trainer costs over a plain PyTorch loop, per evaluation.

Trains the same configurations, on the same data and for the same epochs, once through
``iishpo.training.train`` (Lightning, as every evaluation of a stage) and once with a
bare loop, interleaved so that both see the same machine load, and prints the ratio.

    python benchmarks/trainer_overhead.py [--resolution 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from iishpo.batches import Batches, TrainingData
from iishpo.config import Trainer as TrainerSettings
from iishpo.config import load_settings
from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch
from iishpo.data.splits import load_splits
from iishpo.device import device_for
from iishpo.model import build_cnn
from iishpo.runtime import configure_training
from iishpo.training import train

CONFIG = {
    "learning_rate": 0.03, "batch_size": 32, "l1": 1e-7, "l2": 1e-5, "filter_size": 3,
    "n_conv": 2, "n_fc": 1, "conv_filters_0": 16, "conv_filters_1": 32, "fc_units_0": 64,
}


def plain_loop(data: TrainingData, epochs: int, seed: int) -> float:
    """The same model, loss and optimizer without Lightning; returns seconds."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    net = build_cnn(CONFIG, data.in_channels, data.resolution, data.n_classes).to(data.device)
    net = net.to(memory_format=torch.channels_last)  # as iishpo.training.train
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    optimizer = torch.optim.SGD(net.parameters(), lr=CONFIG["learning_rate"], momentum=0.9)
    train_batches = Batches(data.tensors["train"], CONFIG["batch_size"], shuffle=True, seed=seed)
    for _ in range(epochs):
        net.train()
        for x, y in train_batches:
            loss = nn.functional.cross_entropy(net(x), y)
            loss = loss + CONFIG["l1"] * sum(w.abs().sum() for w in weights)
            loss = loss + CONFIG["l2"] * sum(w.pow(2).sum() for w in weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            for x, y in Batches(data.tensors["val"], 512, shuffle=False):
                (net(x).argmax(1) != y).sum().item()
    return time.perf_counter() - start


def trainer_settings(resolution: int, epochs: int) -> TrainerSettings:
    """The shipped trainer settings, with a patience beyond ``epochs`` so that Lightning
    runs exactly ``epochs`` epochs too."""
    settings = load_settings([f"study.ladder=[{resolution}]", "study.strategies=[standard]", "study.iis_budgets=[12]"])
    return replace(settings.trainer, max_epochs=epochs, patience=epochs + 1)


def synthetic_data(resolution: int, settings: TrainerSettings) -> TrainingData:
    """The built-in synthetic data set at ``resolution``, in memory on the training device."""
    datasets = load_settings([]).datasets
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
    args = parser.parse_args()
    configure_training()
    torch.set_num_threads(1)
    trainer = trainer_settings(args.resolution, args.epochs)
    data = synthetic_data(args.resolution, trainer)
    lightning_times, plain_times = [], []
    for seed in range(args.repeats):
        start = time.perf_counter()
        result, _ = train(CONFIG, data, trainer, seed)
        lightning_times.append(time.perf_counter() - start)
        assert result.epochs == args.epochs, result
        plain_times.append(plain_loop(data, args.epochs, seed))
    lightning, plain = statistics.median(lightning_times), statistics.median(plain_times)
    ratios = sorted(a / b for a, b in zip(lightning_times, plain_times))
    print(f"{args.resolution} px, {args.epochs} epochs, {len(data.tensors['train'])} training images, "
          f"median of {args.repeats}, load average {os.getloadavg()[0]:.1f}:")
    print(f"  Lightning Trainer (iishpo.training.train): {lightning:.3f} s")
    print(f"  plain PyTorch loop:                        {plain:.3f} s")
    print(f"  ratio Lightning / plain:                   {lightning / plain:.3f} "
          f"(per pair: min {ratios[0]:.3f}, median {statistics.median(ratios):.3f})")

if __name__ == "__main__":
    main()
