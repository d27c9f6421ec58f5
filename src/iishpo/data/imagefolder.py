"""Bring your own images: a directory (or tar/zip archive of one) with a folder per class.

Three layouts are accepted under ``path``:

* class folders, ``<path>/<class>/<image>``: split per class by ``split_fractions`` with
  ``seed`` (stratified); ``test: 0`` makes the validation split serve as test split too;
* split folders, ``<path>/{train,val,test}/<class>/<image>``: used as given;
* train and val folders, ``<path>/{train,val}/<class>/<image>`` (the layout many public
  data sets come in, whose own test labels are withheld): the given ``val`` becomes the
  test split, and the validation split is carved out of ``train`` per class with ``seed``,
  in the proportion ``val : train`` of ``split_fractions`` (``test`` is not used).

Images may sit at any depth below their class folder. Entries whose name starts with ``.``
or is ``__MACOSX`` are ignored, and so are files directly under ``path``; any other file
must have an image extension (``EXTENSIONS``). If ``path`` (or the top of an archive) holds
a single folder that holds folders, it is descended into, so ``data.zip`` with
``data/<class>/...`` works.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from iishpo.data import download
from iishpo.data.sources import RawDataset, Sample
from iishpo.data.splits import SPLITS

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
#: where an archive given as ``path`` is unpacked, inside the raw directory
UNPACKED = "images"
#: the configuration key of the user's images (see :mod:`iishpo.data.paths`)
LOCATIONS = ("path",)
#: the split folders a data set may hold instead of class folders
SPLIT_LAYOUTS = (set(SPLITS), {"train", "val"})
LAYOUTS = ("class folders <path>/<class>/<image>, split folders "
           "<path>/{train,val,test}/<class>/<image>, or <path>/{train,val}/<class>/<image> "
           "(val becomes the test split; validation is carved out of train)")
HELP = f"Set the data set's `path` to a directory or a tar/zip archive holding {LAYOUTS}"


def _hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name == "__MACOSX"


def check_path(cfg: Mapping[str, Any], help_text: str) -> Path:
    """``path`` as an existing directory or file, else an error ending with ``help_text``."""
    path = cfg.get("path")
    if path is None:
        raise ValueError(f"path is not set. {help_text}")
    if not isinstance(path, str) or not Path(path).exists():
        raise ValueError(f"path {path!r} does not exist. {help_text}")
    return Path(path)


def check_fractions(fractions: Any) -> dict[str, float]:
    if not isinstance(fractions, Mapping) or set(fractions) != set(SPLITS):
        raise ValueError(f"split_fractions must give train, val and test, got {fractions!r}")
    values = {s: float(fractions[s]) for s in SPLITS}
    if values["train"] <= 0 or values["val"] <= 0 or values["test"] < 0:
        raise ValueError(f"split_fractions need train > 0, val > 0, test >= 0, got {values}")
    if abs(sum(values.values()) - 1) > 1e-6:
        raise ValueError(f"split_fractions must sum to 1, got {values} (sum {sum(values.values())})")
    return values


def check(cfg: Mapping[str, Any]) -> None:
    check_path(cfg, HELP)
    check_fractions(cfg.get("split_fractions"))
    seed = cfg.get("seed")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def root_of(cfg: Mapping[str, Any], raw_dir: Path, help_text: str, unpack: bool) -> Path:
    """The folder holding the classes or splits: ``path`` itself or its unpacked archive."""
    path = check_path(cfg, help_text)
    if path.is_file():
        target = raw_dir / UNPACKED
        stamp = download.stamp_of(path)
        if unpack:
            download.unpack(path, target, stamp)
        elif not (target / download.STAMP).is_file() or (target / download.STAMP).read_text() != stamp:
            raise ValueError(f"{path} is not unpacked in {raw_dir} (or changed since); run the "
                             "fetch step first")
        path = target
    while True:
        folders = _folders(path)
        if len(folders) != 1 or folders[0].name in SPLITS or not _folders(folders[0]):
            return path
        path = folders[0]


def _folders(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir() and not _hidden(p)]


def list_classes(folder: Path, help_text: str) -> dict[str, list[Path]]:
    """Class name -> image files (sorted) of the class folders in ``folder``."""
    classes = {}
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p)):
        files = []
        for path in sorted(class_dir.rglob("*")):
            if any(_hidden(Path(part)) for part in path.relative_to(class_dir).parts):
                continue
            if path.is_file():
                if path.suffix.lower() not in EXTENSIONS:
                    raise ValueError(f"{path} is not an image file (allowed extensions: "
                                     f"{', '.join(EXTENSIONS)}); remove it from the data set")
                files.append(path)
        if not files:
            raise ValueError(f"class folder {class_dir} holds no images. {help_text}")
        classes[class_dir.name] = files
    if len(classes) < 2:
        raise ValueError(f"{folder} holds {len(classes)} class folder(s), need at least 2. {help_text}")
    return classes


def stratified_split(
    classes: Mapping[str, list[Path]], fractions: Mapping[str, float], seed: int
) -> dict[str, list[Sample]]:
    """Per class, shuffle with ``seed`` and cut into train, val and test by ``fractions``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for label, files in enumerate(classes.values()):
        order = rng.permutation(len(files))
        n_val = int(np.floor(fractions["val"] * len(files) + 0.5))
        n_test = int(np.floor(fractions["test"] * len(files) + 0.5))
        n_train = len(files) - n_val - n_test
        if n_train < 1:
            raise ValueError(f"class {list(classes)[label]!r} has {len(files)} images: too few to "
                             f"split by {dict(fractions)}")
        for split, start, stop in (("train", 0, n_train), ("val", n_train, n_train + n_val),
                                   ("test", n_train + n_val, len(files))):
            out[split] += [(files[i], label) for i in order[start:stop]]
    return out


def _check_not_empty(samples: Mapping[str, list[Sample]], fractions: Mapping[str, float]) -> None:
    empty = [s for s in SPLITS if not samples[s]]
    if empty:
        raise ValueError(f"splits {empty} would be empty with split_fractions {dict(fractions)}; "
                         "add images or change the fractions")


def _labelled(classes: Mapping[str, list[Path]], names: list[str]) -> list[Sample]:
    return [(f, names.index(c)) for c, files in classes.items() for f in files]


def _given_splits(root: Path, splits: set[str], help_text: str) -> dict[str, dict[str, list[Path]]]:
    """Class folders of each split folder; class names come from ``train``."""
    per_split = {s: list_classes(root / s, help_text) for s in SPLITS if s in splits}
    for split, classes in per_split.items():
        extra = sorted(set(classes) - set(per_split["train"]))
        if extra:
            raise ValueError(f"{root / split} has classes {extra} that {root / 'train'} lacks")
    return per_split


def read_folder(
    cfg: Mapping[str, Any], raw_dir: Path, fractions: Mapping[str, float], help_text: str,
    unpack: bool = False,
) -> RawDataset:
    """Samples of any accepted layout; ``unpack`` unpacks an archive ``path`` first (fetch)."""
    root = root_of(cfg, raw_dir, help_text, unpack)
    seed = int(cfg["seed"])
    folders = {p.name for p in _folders(root)}
    if not folders & set(SPLITS):
        classes = list_classes(root, help_text)
        samples = stratified_split(classes, fractions, seed)
        if fractions["test"] == 0:
            samples["test"] = list(samples["val"])
        _check_not_empty(samples, fractions)
        return RawDataset(list(classes), samples)
    if folders not in SPLIT_LAYOUTS:
        raise ValueError(f"{root} holds the folders {sorted(folders)}, which is no accepted "
                         f"layout. {help_text}")
    per_split = _given_splits(root, folders, help_text)
    names = list(per_split["train"])
    if "test" in per_split:
        return RawDataset(names, {s: _labelled(per_split[s], names) for s in SPLITS})
    share = fractions["val"] / (fractions["train"] + fractions["val"])
    carved = stratified_split(per_split["train"], {"train": 1 - share, "val": share, "test": 0.0}, seed)
    samples = {"train": carved["train"], "val": carved["val"],
               "test": _labelled(per_split["val"], names)}
    _check_not_empty(samples, fractions)
    return RawDataset(names, samples)


def fetch(cfg: Mapping[str, Any], raw_dir: Path) -> None:
    """Unpack an archive ``path`` into ``raw_dir`` and check the layout; a folder stays put."""
    check(cfg)
    raw_dir.mkdir(parents=True, exist_ok=True)
    read_folder(cfg, raw_dir, check_fractions(cfg["split_fractions"]), HELP, unpack=True)


def read(cfg: Mapping[str, Any], raw_dir: Path) -> RawDataset:
    return read_folder(cfg, raw_dir, check_fractions(cfg["split_fractions"]), HELP)
