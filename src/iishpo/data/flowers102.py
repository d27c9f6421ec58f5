"""Oxford 102 Flowers (Nilsback & Zisserman 2008), split exactly as the official setid.mat.

``102flowers.tgz`` holds ``jpg/image_00001.jpg`` ... ``jpg/image_08189.jpg``;
``imagelabels.mat`` holds ``labels`` (1..102, one per image); ``setid.mat`` holds the image
ids (1-based) of ``trnid`` (1020, HPO train), ``valid`` (1020, validation) and ``tstid``
(6149, test), as used by Hinz et al. 2018.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from iishpo.data import download
from iishpo.data.sources import RawDataset

#: setid.mat variable -> split
SPLIT_IDS = {"train": "trnid", "val": "valid", "test": "tstid"}
IMAGES = "102flowers"
LOCATIONS = download.LOCATIONS


def check(cfg: Mapping[str, Any]) -> None:
    download.check_remote(cfg)
    missing = sorted({"images", "labels", "setid"} - set(cfg["files"]))
    if missing:
        raise ValueError(f"files lacks roles {missing}; needs images, labels and setid")


def fetch(cfg: Mapping[str, Any], raw_dir: Path) -> None:
    check(cfg)
    paths = download.fetch_remote(cfg, raw_dir)
    download.unpack(paths["images"], raw_dir / IMAGES, download.stamp_of(paths["images"]))


def _mat_vector(path: Path, key: str) -> np.ndarray:
    try:
        data = scipy.io.loadmat(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}; run the fetch step again") from err
    if key not in data:
        raise ValueError(f"{path} has no variable {key!r} (has {sorted(k for k in data if k[0] != '_')})")
    return np.asarray(data[key]).ravel().astype(np.int64)


def read(cfg: Mapping[str, Any], raw_dir: Path) -> RawDataset:
    names = {role: spec["name"] for role, spec in cfg["files"].items()}
    labels = _mat_vector(raw_dir / names["labels"], "labels")
    if labels.min() < 1:
        raise ValueError(f"{names['labels']}: labels must be 1-based, found {labels.min()}")
    n_classes = int(labels.max())
    images = raw_dir / IMAGES / "jpg"
    samples = {}
    for split, key in SPLIT_IDS.items():
        ids = _mat_vector(raw_dir / names["setid"], key)
        bad = ids[(ids < 1) | (ids > len(labels))]
        if len(bad):
            raise ValueError(f"{names['setid']}: {key} has ids {bad[:5].tolist()} outside 1..{len(labels)}")
        samples[split] = [(images / f"image_{i:05d}.jpg", int(labels[i - 1]) - 1) for i in ids]
    missing = [p for split in samples.values() for p, _ in split if not p.is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} images listed in {names['setid']} are missing, e.g. {missing[0]}; "
            f"is {names['images']} complete? Delete {raw_dir} and fetch again"
        )
    return RawDataset([str(c) for c in range(1, n_classes + 1)], samples)
