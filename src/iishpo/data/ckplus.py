"""Extended Cohn-Kanade (CK+, Lucey et al. 2010): licence-gated, so the user supplies it.

``path`` is a directory, or a tar/zip archive of one, with one folder per emotion holding
that emotion's (peak) frames, e.g. ``<path>/anger/S010_004_00000019.png``: the common
"emotion-labelled frames in class folders" layout, as in the widely shared CK+48 copy.
Details of what is accepted are those of :mod:`iishpo.data.imagefolder`.

HPO split as Hinz et al. 2018: per class, 70% train and 30% validation (``seed``). The
paper tests as Khorrami et al. 2015 (10-fold, subject-independent); subject ids are not
part of this layout, so the validation split also serves as test split. A user who has a
subject-independent split can give ``<path>/{train,val,test}/<emotion>/...`` instead, or
``<path>/{train,val}/<emotion>/...`` (``val`` is then the test split and 30% of each
emotion in ``train`` the validation split).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iishpo.data import imagefolder
from iishpo.data.sources import RawDataset

FRACTIONS = {"train": 0.7, "val": 0.3, "test": 0.0}
LOCATIONS = imagefolder.LOCATIONS
HELP = (
    "CK+ is licence-gated: request it via http://www.jeffcohn.net/Resources/ (CK+ database), "
    "then set datasets.ckplus.path to a directory or a tar/zip archive with one folder per "
    "emotion holding its images, <path>/<emotion>/<image>.png (e.g. anger/S010_004_00000019.png), "
    "or split folders <path>/{train,val,test}/<emotion>/<image>.png or "
    "<path>/{train,val}/<emotion>/<image>.png (val becomes the test split; validation is "
    "carved out of train)"
)


def check(cfg: Mapping[str, Any]) -> None:
    imagefolder.check_path(cfg, HELP)
    seed = cfg.get("seed")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def fetch(cfg: Mapping[str, Any], raw_dir: Path) -> None:
    check(cfg)
    raw_dir.mkdir(parents=True, exist_ok=True)
    imagefolder.read_folder(cfg, raw_dir, FRACTIONS, HELP, unpack=True)


def read(cfg: Mapping[str, Any], raw_dir: Path) -> RawDataset:
    return imagefolder.read_folder(cfg, raw_dir, FRACTIONS, HELP)
