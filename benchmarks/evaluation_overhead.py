"""Fixed cost of one evaluation: everything a stage's evaluation does besides its epochs.

Runs :func:`iishpo.training.fit.evaluate_trial` for one epoch and subtracts the time from the
start of the first training epoch to the end of the last validation (timestamps from the
module's hooks): what remains is the memory check, seeding, building the model, the
module and the Trainer, Lightning's set-up and teardown, restoring the best weights and
releasing memory. Interleaved with building the plain loop's model and optimizer (its
whole fixed cost), and both printed.

    python benchmarks/evaluation_overhead.py [--resolution 32] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from trainer_overhead import CONFIG, synthetic_data, trainer_settings

from iishpo.training.classifier import Classifier
from iishpo.training.fit import evaluate_trial
from iishpo.training.model import build_cnn
from iishpo.training.runtime import configure_training


class EpochClock:
    """Timestamps of the first training epoch's start and the last validation's end."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        start, end = Classifier.on_train_epoch_start, Classifier.end_epoch

        def started(module: Classifier) -> None:
            self.first = self.first or time.perf_counter()
            start(module)

        def ended(module: Classifier, error: float) -> None:
            end(module, error)
            self.last = time.perf_counter()

        Classifier.on_train_epoch_start = started  # type: ignore[method-assign]
        Classifier.end_epoch = ended  # type: ignore[method-assign]


def fixed_cost(clock: EpochClock, data: object, settings: object, seed: int) -> float:
    clock.first = None
    start = time.perf_counter()
    evaluate_trial(CONFIG, data, settings, seed)  # type: ignore[arg-type]
    total = time.perf_counter() - start
    assert clock.first is not None
    return total - (clock.last - clock.first)


def plain_setup(data: object, seed: int) -> float:
    """Seconds to build the plain loop's model and optimizer."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    net = build_cnn(CONFIG, data.in_channels, data.resolution, data.n_classes).to(data.device)  # type: ignore[attr-defined]
    torch.optim.SGD(net.parameters(), lr=CONFIG["learning_rate"], momentum=0.9)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    configure_training()
    torch.set_num_threads(1)
    settings = trainer_settings(args.resolution, epochs=1)
    data = synthetic_data(args.resolution, settings)
    clock = EpochClock()
    fixed_cost(clock, data, settings, 0)  # first-call costs (lazy imports) are the process's
    fixed, plain = [], []
    for seed in range(args.repeats):
        fixed.append(fixed_cost(clock, data, settings, seed))
        plain.append(plain_setup(data, seed))
    lightning_ms, plain_ms = 1000 * statistics.median(fixed), 1000 * statistics.median(plain)
    print(f"{args.resolution} px, median of {args.repeats}, load average {os.getloadavg()[0]:.1f}:")
    print(f"  fixed cost of an evaluation (iishpo.training.fit.evaluate_trial): {lightning_ms:6.1f} ms")
    print(f"  plain loop's model and optimizer:                             {plain_ms:6.1f} ms")
    print(f"  difference:                                                   {lightning_ms - plain_ms:6.1f} ms")


if __name__ == "__main__":
    main()
