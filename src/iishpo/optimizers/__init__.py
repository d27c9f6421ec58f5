"""HPO algorithms behind one ask/tell interface; imported lazily by name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from iishpo.optimizers.base import Optimizer
from iishpo.optimizers.settings import GASettings, RandomSettings, SMACSettings, TPESettings
from iishpo.space import Config, SearchSpace
from iishpo.typed import build


@dataclass(frozen=True)
class Registration:
    """Where an optimizer lives, the pip package it needs and its settings class."""

    module: str
    cls: str
    package: str
    settings: type


REGISTRY: dict[str, Registration] = {
    "random": Registration("iishpo.optimizers.hyperopt_search", "RandomSearch", "hyperopt", RandomSettings),
    "tpe": Registration("iishpo.optimizers.hyperopt_search", "TPE", "hyperopt", TPESettings),
    "ga": Registration("iishpo.optimizers.genetic", "GeneticAlgorithm", "deap", GASettings),
    "smac": Registration("iishpo.optimizers.smac_search", "SMAC", "smac", SMACSettings),
}


def _registration(name: str) -> Registration:
    if name not in REGISTRY:
        raise ValueError(f"unknown optimizer {name!r}; available: {sorted(REGISTRY)}")
    return REGISTRY[name]


def build_settings(name: str, raw: Mapping[str, Any], where: str | None = None) -> Any:
    """The typed settings of optimizer ``name`` from its ``optimizers.<name>`` mapping."""
    return build(_registration(name).settings, raw, where or f"optimizers.{name}")


def create_optimizer(
    name: str,
    space: SearchSpace,
    *,
    budget: int,
    seed: int,
    settings: Any,
    initial_points: Sequence[Config] = (),
) -> Optimizer:
    """Instantiate the optimizer registered as ``name`` with its typed ``settings``."""
    registration = _registration(name)
    if not isinstance(settings, registration.settings):
        raise TypeError(
            f"optimizer {name!r} needs {registration.settings.__name__}, got {type(settings).__name__}"
        )
    try:
        module = importlib.import_module(registration.module)
    except ModuleNotFoundError as err:
        raise ImportError(
            f"optimizer {name!r} needs the package {registration.package!r}: pip install {registration.package}"
        ) from err
    cls = getattr(module, registration.cls)
    return cls(space, budget=budget, seed=seed, initial_points=initial_points, settings=settings)


__all__ = ["REGISTRY", "Optimizer", "Registration", "build_settings", "create_optimizer"]
