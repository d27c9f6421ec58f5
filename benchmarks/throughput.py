"""Training throughput: the floating-point rate of an evaluation as a fraction of the
machine's float32 matrix-multiply rate, both measured in this run.

Counts the multiply-adds of the model's convolutions and linear layers per image (two
FLOPs each; backward is taken as twice the forward, so training costs three forward
passes, validation one), times :func:`iishpo.training.fit.train` for a fixed number of
epochs, and alternates it with a square float32 matmul on the same threads, so that
both see the same load.

    python benchmarks/throughput.py [--resolution 64] [--epochs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn
from trainer_overhead import CONFIG, synthetic_data, trainer_settings

from iishpo.training.batches import TrainingData
from iishpo.training.fit import train
from iishpo.training.model import build_cnn
from iishpo.training.runtime import configure_training

MATMUL_SIZE = 1024


def forward_flops(net: nn.Module, in_channels: int, resolution: int) -> int:
    """FLOPs of one image's forward pass through the conv and linear layers."""
    flops = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            flops += 2 * module.in_channels * k * output[0].numel()
        elif isinstance(module, nn.Linear):
            flops += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in net.modules()]
    with torch.no_grad():
        net(torch.zeros(1, in_channels, resolution, resolution))
    for hook in hooks:
        hook.remove()
    return flops


def matmul_rate() -> float:
    """float32 FLOP/s of a square matmul on the current threads."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(5):
        torch.mm(a, b)
    return 5 * 2 * MATMUL_SIZE**3 / (time.perf_counter() - start)


def training_rate(data: TrainingData, settings: object, epochs: int, seed: int) -> float:
    per_image = forward_flops(build_cnn(CONFIG, data.in_channels, data.resolution, data.n_classes),
                              data.in_channels, data.resolution)
    work = epochs * per_image * (3 * len(data.tensors["train"]) + len(data.tensors["val"]))
    start = time.perf_counter()
    train(CONFIG, data, settings, seed)  # type: ignore[arg-type]
    return work / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_training()
    torch.set_num_threads(1)
    settings = trainer_settings(args.resolution, args.epochs)
    data = synthetic_data(args.resolution, settings)
    train(CONFIG, data, settings, 0)  # kernels compiled and caches warm, as in a stage
    trainings, matmuls = [], []
    for seed in range(args.repeats):
        matmuls.append(matmul_rate())
        trainings.append(training_rate(data, settings, args.epochs, seed))
    training, matmul = statistics.median(trainings), statistics.median(matmuls)
    print(f"{args.resolution} px, {args.epochs} epochs, 1 thread, median of {args.repeats}, "
          f"load average {os.getloadavg()[0]:.1f}:")
    print(f"  training (iishpo.training.fit.train): {training / 1e9:6.2f} GFLOP/s")
    print(f"  float32 matmul {MATMUL_SIZE}x{MATMUL_SIZE}:       {matmul / 1e9:6.2f} GFLOP/s")
    print(f"  fraction of the matmul rate:      {training / matmul:6.1%}")


if __name__ == "__main__":
    main()
