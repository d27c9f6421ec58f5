"""Images split for HPO and testing, and the compact on-disk form of one resolution.

Every data set, built-in or downloaded, is read into :class:`ImageSplits` once; the prepare
step resizes it to each resolution of the ladder and stores one ``.npz`` per resolution, so
decoding images is paid once, not once per trial.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class ImageSplits:
    """uint8 images ``(N, H, W, C)`` with C in {1, 3}, integer labels ``0..n_classes-1``.

    ``train``/``val`` are the HPO split; ``test`` is scored once per run at the end.
    ``test_folds`` (optional, STL-10) holds index arrays into ``pool_x``/``pool_y``: the
    test protocol then trains on each fold, validates on the rest of the pool and averages
    the test scores.
    """

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    class_names: list[str]
    pool_x: np.ndarray | None = None
    pool_y: np.ndarray | None = None
    test_folds: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        for split in SPLITS:
            if split not in self.x or split not in self.y:
                raise ValueError(f"split {split!r} is missing; need {SPLITS}")
            x, y = self.x[split], self.y[split]
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
                raise ValueError(f"{split} images must be uint8 (N, H, W, 1|3), got {x.dtype} {x.shape}")
            if len(x) != len(y):
                raise ValueError(f"{split}: {len(x)} images but {len(y)} labels")
            if len(x) == 0:
                raise ValueError(f"split {split!r} is empty")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def resolution(self) -> int:
        return int(min(self.x["train"].shape[1:3]))


def save_splits(splits: ImageSplits, path: Path) -> None:
    """Write atomically: a killed job never leaves a truncated ``.npz`` behind."""
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        arrays[f"x_{split}"] = splits.x[split]
        arrays[f"y_{split}"] = splits.y[split].astype(np.int64)
    arrays["class_names"] = np.array(splits.class_names)
    if splits.pool_x is not None and splits.pool_y is not None:
        arrays["pool_x"] = splits.pool_x
        arrays["pool_y"] = splits.pool_y.astype(np.int64)
        arrays["test_folds"] = np.stack(splits.test_folds)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_splits(path: Path) -> ImageSplits:
    with np.load(path, allow_pickle=False) as data:
        x = {s: data[f"x_{s}"] for s in SPLITS}
        y = {s: data[f"y_{s}"] for s in SPLITS}
        names = [str(n) for n in data["class_names"]]
        if "pool_x" in data:
            return ImageSplits(
                x, y, names, data["pool_x"], data["pool_y"], list(data["test_folds"])
            )
        return ImageSplits(x, y, names)
