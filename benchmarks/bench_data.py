"""The data sets the benchmarks train on, prepared in a scratch directory: the built-in
data set and the real 102 Flowers images (the flowers-cpu study's 64 px mirror, official
split), one ``.npz`` per resolution, and a class subset of a prepared split.

Shared by ``resolution_curve.py`` and ``learning_curves.py``; not a benchmark itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iishpo.data.paths import absolute
from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch
from iishpo.data.splits import SPLITS, ImageSplits
from iishpo.settings.config import load_settings

REPO = Path(__file__).resolve().parents[1]


def subset(splits: ImageSplits, n_classes: int | None) -> ImageSplits:
    """The images of the first ``n_classes`` classes only (``None``: all)."""
    if n_classes is None or n_classes >= splits.n_classes:
        return splits
    keep = {s: splits.y[s] < n_classes for s in SPLITS}
    return ImageSplits(
        {s: splits.x[s][keep[s]] for s in SPLITS},
        {s: splits.y[s][keep[s]] for s in SPLITS},
        splits.class_names[:n_classes],
    )


def prepare_synthetic(
    work: Path, resolutions: Sequence[int], per_class: Sequence[int] | None = None
) -> tuple[dict[int, Path], dict[str, Any]]:
    """Generate the built-in data set (``conf/dataset/synthetic.yaml``; ``per_class``: train
    and val images per class instead, and one test image) under ``work`` and prepare it at
    each resolution: the ``.npz`` per resolution, and the data set's settings."""
    cfg: dict[str, Any] = dict(load_settings([], config_dir=REPO / "conf").datasets["synthetic"])
    if per_class:
        cfg["per_class"] = {"train": per_class[0], "val": per_class[1], "test": 1}
    fetch(cfg, work / "synthetic")
    paths = {r: work / f"synthetic-{r}.npz" for r in resolutions}
    prepare_dataset("synthetic", cfg, work / "synthetic", paths)
    return paths, cfg


def prepare_flowers(
    work: Path, resolutions: Sequence[int], mirror: str | None = None
) -> tuple[dict[int, Path], dict[str, Any]]:
    """Fetch 102 Flowers from the flowers-cpu study's 64 px mirror (or the directory
    ``mirror``, relative to the working directory) into ``work`` and prepare it at each
    resolution: the ``.npz`` per resolution, and the data set's settings."""
    settings = load_settings(["study=flowers-cpu"], config_dir=REPO / "conf")
    cfg = dict(settings.datasets["flowers102"])
    if mirror is not None:
        cfg["mirror"] = str(absolute(mirror, Path.cwd()))
    fetch(cfg, work / "flowers102")
    paths = {r: work / f"flowers102-{r}.npz" for r in resolutions}
    prepare_dataset("flowers102", cfg, work / "flowers102", paths)
    return paths, cfg


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the benchmarks' data: images per class of the built-in set,
    and which 102 Flowers classes from which mirror."""
    parser.add_argument(
        "--per-class",
        type=int,
        nargs=2,
        metavar=("TRAIN", "VAL"),
        help="built-in set: images per class (default: conf/dataset/synthetic.yaml)",
    )
    parser.add_argument("--flowers-classes", type=int, help="102 Flowers: only the first N classes")
    parser.add_argument(
        "--flowers-mirror",
        default=None,
        help="directory of the 64 px mirror (default: the flowers-cpu study's)",
    )
