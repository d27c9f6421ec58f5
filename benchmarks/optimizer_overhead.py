"""Optimizer overhead at the paper's scale: milliseconds per proposal (ask and tell) after a history of
100, 500 and 1500 trials, for every optimizer.

The paper's space (``conf/space/cnn.yaml`` at 128 px, nine parameters, conditional on the
layer counts) and a cheap synthetic objective stand in for training. For each history size
``n`` the optimizer is created with the budget ``n + asks`` and brought to ``n`` told
trials, then ``asks`` proposals are timed (ask, then tell of the objective). The optimizers
run one after another at each size, so they see the same machine load.

Bringing an optimizer to ``n`` trials through its own ask/tell would take SMAC and TPE
longer than the timed part, so their histories are injected (:func:`inject`): for TPE
as hyperopt trial documents, for SMAC as told trials after its own initial design was
asked and told (its model-based proposals then start, as in a real run). Random search
and the GA are replayed through ask/tell, which is cheap for them.

SMAC refits its forest every ``n // 100`` trials (``conf/optimizer/smac.yaml``), so one
proposal in 15 at 1500 trials carries the fit and its acquisition search: the default 30
timed proposals cover whole cycles, and the maximum shows the proposal with the fit.
Beyond ``max_history`` (500) trials the forest is fitted on 500 of them.

    python benchmarks/optimizer_overhead.py [--sizes 100 500 1500] [--asks 30]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from pathlib import Path

import yaml

from iishpo.optimizers import REGISTRY, build_settings, create_optimizer
from iishpo.optimizers.base import Optimizer
from iishpo.search.space import Config, SearchSpace, build_space

CONF = Path(__file__).resolve().parents[1] / "conf"
RESOLUTION = 128


def objective(config: Config) -> float:
    """Smooth in every parameter, minimal at lr 0.01, l2 1e-4, 64 filters, batch 64."""
    filters = [config[f"conv_filters_{i}"] for i in range(config["n_conv"])]
    return (
        (math.log10(config["learning_rate"]) + 2.0) ** 2 / 4
        + abs(math.log10(config["l2"]) + 4.0) / 3
        + (math.log10(config["l1"]) + 7.0) / 4
        + sum(abs(math.log2(f / 64)) for f in filters) / len(filters) / 3
        + abs(math.log2(config["batch_size"] / 64)) / 2
        + 0.5 * (config["filter_size"] != 3)
    )


def inject(optimizer: Optimizer, history: list[tuple[Config, float]]) -> None:
    """Make ``optimizer`` hold ``history`` as told trials, as fast as its library allows."""
    name = type(optimizer).__name__
    if name == "TPE":
        for config, loss in history:
            optimizer._pending = (len(optimizer._trials.trials), optimizer._to_vals(config))  # type: ignore[attr-defined]
            optimizer.tell(config, loss)
    elif name == "SMAC":
        from ConfigSpace import Configuration
        from smac.runhistory.dataclasses import TrialInfo, TrialValue

        design = optimizer.n_initial  # type: ignore[attr-defined]
        for _ in range(min(design, len(history))):  # SMAC's own initial design, asked and told
            config = optimizer.ask()
            optimizer.tell(config, objective(config))
        smac = optimizer._smac  # type: ignore[attr-defined]
        for config, loss in history[design:]:
            info = TrialInfo(Configuration(optimizer.configspace, values=config), seed=0)  # type: ignore[attr-defined]
            smac.tell(info, TrialValue(cost=loss), save=False)
    else:
        for _ in history:
            config = optimizer.ask()
            optimizer.tell(config, objective(config))


def time_proposals(name: str, space: SearchSpace, size: int, asks: int) -> tuple[float, float]:
    """Mean and maximum milliseconds per proposal (ask and tell) after ``size`` trials."""
    raw = yaml.safe_load((CONF / "optimizer" / f"{name}.yaml").read_text()) or {}
    optimizer = create_optimizer(name, space, budget=size + asks, seed=0, settings=build_settings(name, raw))
    rng = random.Random(size)
    history = [(c, objective(c)) for c in (space.sample(rng) for _ in range(size))]
    inject(optimizer, history)
    times = []
    for _ in range(asks):  # ask and tell: the GA does its work when told
        start = time.perf_counter()
        config = optimizer.ask()
        loss = objective(config)
        optimizer.tell(config, loss)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.mean(times), 1000 * max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1500])
    parser.add_argument("--asks", type=int, default=30)
    parser.add_argument("--optimizers", nargs="+", default=sorted(REGISTRY))
    args = parser.parse_args()
    space = build_space(yaml.safe_load((CONF / "space" / "cnn.yaml").read_text()), RESOLUTION)
    print(f"ms per proposal (mean / max of {args.asks}) after n trials, {RESOLUTION} px space, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("optimizer " + "".join(f"{f'n={n}':>18s}" for n in args.sizes))
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in args.optimizers}
    for size in args.sizes:
        for name in args.optimizers:
            rows[name].append(time_proposals(name, space, size, args.asks))
    for name, cells in rows.items():
        print(f"{name:9s} " + "".join(f"{f'{m:.1f} / {x:.1f}':>18s}" for m, x in cells))
    random_mean = rows.get("random")
    if random_mean:
        for name, cells in rows.items():
            print(f"  {name}/random at n={args.sizes[-1]}: {cells[-1][0] / random_mean[-1][0]:.1f}x")


if __name__ == "__main__":
    main()
