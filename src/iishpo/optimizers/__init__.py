"""HPO algorithms behind one ask/tell interface, found from their configuration files.

An optimizer is ``conf/optimizer/<name>.yaml`` (its settings; the configuration composes
every such file as ``optimizers.<name>``) whose ``_target_`` names its settings class, a
subclass of :class:`~iishpo.optimizers.settings.OptimizerSettings`, which names its
:class:`~iishpo.optimizers.base.Optimizer` subclass. No list in the code names them: the
settings class is imported when the configuration is checked, the algorithm (and its
library) only when a stage builds one.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from iishpo.conf import conf_dir
from iishpo.optimizers.base import Optimizer
from iishpo.optimizers.settings import OptimizerSettings
from iishpo.search.space import Config, SearchSpace
from iishpo.typed import SettingsError, build

#: the configuration group of the optimizers: ``conf/optimizer/<name>.yaml``
GROUP = "optimizer"
#: the key of an optimizer's settings that names their class (Hydra's convention)
TARGET = "_target_"


def optimizer_names(conf: Path) -> list[str]:
    """The optimizers of the configuration directory ``conf``: its optimizer files' names."""
    return sorted(path.stem for path in (conf / GROUP).glob("*.yaml"))


def settings_values(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An optimizer's settings without the name of their class: what its stages read."""
    return {key: value for key, value in raw.items() if key != TARGET}


def locate(path: str) -> Any:
    """What ``"module.name"`` names, its module imported."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def settings_class(raw: Mapping[str, Any], where: str) -> type[OptimizerSettings]:
    """The settings class that an optimizer's settings name (``_target_``)."""
    path = raw.get(TARGET)
    if not isinstance(path, str):
        raise SettingsError(
            f"{where}: {TARGET} must name the optimizer's settings class as 'module.Class' "
            f"(a subclass of {OptimizerSettings.__module__}.OptimizerSettings), got {path!r}"
        )
    try:
        cls = locate(path)
    except (ImportError, AttributeError, ValueError) as err:
        raise SettingsError(f"{where}.{TARGET}: cannot import {path!r}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, OptimizerSettings)):
        raise SettingsError(f"{where}.{TARGET}: {path!r} is not a subclass of OptimizerSettings")
    return cls


def build_settings(name: str, raw: Mapping[str, Any], where: str | None = None) -> OptimizerSettings:
    """The typed settings of optimizer ``name`` from its ``optimizers.<name>`` mapping."""
    where = where or f"optimizers.{name}"
    if not isinstance(raw, Mapping):
        raise SettingsError(f"{where} must be a mapping of settings, got {raw!r}")
    return build(settings_class(raw, where), settings_values(raw), where)


def algorithm(name: str, settings: OptimizerSettings) -> type[Optimizer[Any]]:
    """The optimizer class ``settings`` are for, imported now with its library."""
    try:
        return locate(settings.algorithm)  # type: ignore[no-any-return]
    except ModuleNotFoundError as err:
        missing = err.name or settings.algorithm
        raise ImportError(
            f"optimizer {name!r} ({settings.algorithm}) needs {missing!r}, which is not installed: "
            f"pip install {missing.partition('.')[0]}"
        ) from err


def create_optimizer(
    name: str,
    space: SearchSpace,
    *,
    budget: int,
    seed: int,
    settings: OptimizerSettings,
    initial_points: Sequence[Config] = (),
) -> Optimizer[Any]:
    """The optimizer ``settings`` are for, on ``space``; ``name`` names it in errors."""
    cls = algorithm(name, settings)
    return cls(space, budget=budget, seed=seed, initial_points=initial_points, settings=settings)


class Registry(Mapping[str, type[OptimizerSettings]]):
    """Every optimizer of a configuration directory (default: the one the configuration
    is composed from) by name, to its settings class. Its files are read when it is
    first used, not when this package is imported."""

    def __init__(self, conf: Path | None = None) -> None:
        self._conf = conf
        self._found: dict[str, type[OptimizerSettings]] | None = None

    def _table(self) -> dict[str, type[OptimizerSettings]]:
        if self._found is None:
            conf = self._conf or conf_dir()
            self._found = {
                name: settings_class(yaml.safe_load((conf / GROUP / f"{name}.yaml").read_text()) or {},
                                     f"{GROUP}/{name}.yaml")
                for name in optimizer_names(conf)
            }
        return self._found

    def __getitem__(self, name: str) -> type[OptimizerSettings]:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: the optimizers of the configuration directory
REGISTRY = Registry()

__all__ = [
    "GROUP", "REGISTRY", "TARGET", "Optimizer", "OptimizerSettings", "Registry", "algorithm",
    "build_settings", "create_optimizer", "optimizer_names", "settings_class", "settings_values",
]
