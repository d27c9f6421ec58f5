"""STL-10 (Coates et al. 2011) from its binary archive, split as Hinz et al. 2018 did.

``stl10_binary.tar.gz`` holds, under ``stl10_binary/``: ``train_X.bin`` / ``test_X.bin``
(uint8, 3 x 96 x 96 per image, each channel stored column-major), ``train_y.bin`` /
``test_y.bin`` (uint8 labels 1..10), ``fold_indices.txt`` (10 lines of 0-based indices into
train, 1000 each) and ``class_names.txt``. The 2.7 GB ``unlabeled_X.bin`` is not unpacked.

HPO trains on fold 1 (the first line) and validates on the train images outside it; the
test protocol trains on each of the 10 folds and tests on the 8000 test images.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from iishpo.data import download
from iishpo.data.sources import RawDataset, Sample

SIDE = 96
FOLDER = "stl10_binary"
#: the archive's members are unpacked into ``raw_dir / UNPACKED / FOLDER``
UNPACKED = "stl10"
LOCATIONS = download.LOCATIONS
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "fold_indices.txt",
         "class_names.txt")


def check(cfg: Mapping[str, Any]) -> None:
    download.check_remote(cfg)
    if set(cfg["files"]) != {"archive"}:
        raise ValueError(f"files must hold exactly the role 'archive', got {sorted(cfg['files'])}")


def fetch(cfg: Mapping[str, Any], raw_dir: Path) -> None:
    check(cfg)
    archive = download.fetch_remote(cfg, raw_dir)["archive"]
    download.unpack(archive, raw_dir / UNPACKED, download.stamp_of(archive),
                    members=[f"{FOLDER}/{name}" for name in FILES])


def _images(path: Path) -> np.ndarray:
    """(N, 96, 96, 3) upright HWC images from the column-major binary file."""
    data = np.fromfile(path, np.uint8)
    if data.size % (3 * SIDE * SIDE):
        raise ValueError(f"{path}: {data.size} bytes is not a whole number of 3x{SIDE}x{SIDE} images")
    return np.ascontiguousarray(data.reshape(-1, 3, SIDE, SIDE).transpose(0, 3, 2, 1))


def _labels(path: Path, n_images: int, n_classes: int) -> np.ndarray:
    labels = np.fromfile(path, np.uint8).astype(np.int64) - 1
    if len(labels) != n_images or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"{path}: need {n_images} labels in 1..{n_classes}, got {len(labels)} "
                         f"in {labels.min() + 1}..{labels.max() + 1}")
    return labels


def read(cfg: Mapping[str, Any], raw_dir: Path) -> RawDataset:
    root = raw_dir / UNPACKED / FOLDER
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise ValueError(f"{root} lacks {missing}; run the fetch step first")
    class_names = (root / "class_names.txt").read_text().split()
    folds = [np.array(line.split(), np.int64)
             for line in (root / "fold_indices.txt").read_text().splitlines() if line.strip()]
    x_train, x_test = _images(root / "train_X.bin"), _images(root / "test_X.bin")
    y_train = _labels(root / "train_y.bin", len(x_train), len(class_names))
    y_test = _labels(root / "test_y.bin", len(x_test), len(class_names))
    if len(folds) != 10 or any(f.min() < 0 or f.max() >= len(x_train) for f in folds):
        raise ValueError(f"{root / 'fold_indices.txt'}: need 10 lines of indices in 0..{len(x_train) - 1}")
    pool: list[Sample] = list(zip(x_train, y_train.tolist(), strict=True))
    in_fold1 = np.zeros(len(pool), bool)
    in_fold1[folds[0]] = True
    samples = {
        "train": [pool[i] for i in folds[0]],
        "val": [pool[i] for i in np.flatnonzero(~in_fold1)],
        "test": list(zip(x_test, y_test.tolist(), strict=True)),
    }
    return RawDataset(class_names, samples, pool=pool, test_folds=folds)
