"""HPO algorithms behind one ask/tell interface; imported lazily by name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from iishpo.optimizers.base import Optimizer
from iishpo.space import Config, SearchSpace

#: name -> (module, class, pip package that provides the algorithm)
REGISTRY: dict[str, tuple[str, str, str]] = {
    "random": ("iishpo.optimizers.hyperopt_search", "RandomSearch", "hyperopt"),
    "tpe": ("iishpo.optimizers.hyperopt_search", "TPE", "hyperopt"),
    "ga": ("iishpo.optimizers.genetic", "GeneticAlgorithm", "deap"),
    "smac": ("iishpo.optimizers.smac_search", "SMAC", "smac"),
}


def create_optimizer(
    name: str,
    space: SearchSpace,
    *,
    budget: int,
    seed: int,
    initial_points: Sequence[Config] = (),
    settings: Mapping[str, Any] | None = None,
) -> Optimizer:
    """Instantiate the optimizer registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; available: {sorted(REGISTRY)}")
    module_name, class_name, package = REGISTRY[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ImportError(
            f"optimizer {name!r} needs the package {package!r}: pip install {package}"
        ) from err
    cls = getattr(module, class_name)
    return cls(space, budget=budget, seed=seed, initial_points=initial_points, settings=settings)


__all__ = ["REGISTRY", "Optimizer", "create_optimizer"]
