"""Where a data set's images come from: one module per ``kind`` of ``conf/dataset``.

A source module provides two functions:

``fetch(cfg, raw_dir)``
    makes ``raw_dir`` hold the data set's original files (download and verify, generate,
    or check a user-supplied copy); raises a clear error and leaves nothing half-written.
``read(cfg, raw_dir) -> RawDataset``
    lists the samples of every split, images not yet decoded.
``check(cfg)`` (optional)
    validates the data set's own configuration keys at load time, before any job runs.
``LOCATIONS`` (optional)
    the configuration keys that hold a local path or URL the data set is read from;
    relative paths there are relative to ``paths.root`` (see :mod:`iishpo.data.paths`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

#: An image as a decoded uint8 array ``(H, W, C)`` or a path that Pillow can open.
ImageRef = np.ndarray | Path
Sample = tuple[ImageRef, int]

#: kind -> module implementing fetch/read
KINDS: dict[str, str] = {
    "synthetic": "iishpo.data.synthetic",
    "flowers102": "iishpo.data.flowers102",
    "stl10": "iishpo.data.stl10",
    "ckplus": "iishpo.data.ckplus",
    "imagefolder": "iishpo.data.imagefolder",
}


@dataclass
class RawDataset:
    """Samples at native resolution, per split (``train``, ``val``, ``test``).

    ``pool`` and ``test_folds`` describe a fold-based test protocol (STL-10): the test
    score averages over models trained on ``pool[fold]`` for each fold.
    """

    class_names: list[str]
    samples: Mapping[str, Sequence[Sample]]
    pool: Sequence[Sample] = ()
    test_folds: list[np.ndarray] = field(default_factory=list)


def source_module(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; available: {sorted(KINDS)}")
    return importlib.import_module(KINDS[kind])


def locations(kind: str) -> tuple[str, ...]:
    """The configuration keys of a data set of ``kind`` that name where it is read from."""
    return tuple(getattr(source_module(kind), "LOCATIONS", ()))


def fetch(cfg: Mapping[str, Any], raw_dir: Path) -> None:
    source_module(cfg["kind"]).fetch(cfg, raw_dir)


def read(cfg: Mapping[str, Any], raw_dir: Path) -> RawDataset:
    return source_module(cfg["kind"]).read(cfg, raw_dir)


def check(name: str, cfg: Mapping[str, Any]) -> None:
    """Validate a data set's configuration, naming the data set in the error."""
    if "kind" not in cfg:
        raise ValueError(f"datasets.{name}: missing 'kind' (one of {sorted(KINDS)})")
    module = source_module(cfg["kind"])
    if cfg.get("color") not in ("rgb", "gray"):
        raise ValueError(f"datasets.{name}.color must be 'rgb' or 'gray', got {cfg.get('color')!r}")
    if hasattr(module, "check"):
        try:
            module.check(cfg)
        except ValueError as err:
            raise ValueError(f"datasets.{name}: {err}") from err
