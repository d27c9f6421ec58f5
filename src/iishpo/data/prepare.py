"""Decode every image once and store it at each resolution of the ladder.

Images are centre-cropped to a square, converted to RGB or grayscale, and downscaled
with Lanczos filtering (anti-aliased, so fine detail is lost at low resolution as it would
be in a real camera image, not aliased into noise).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from iishpo.data.sources import ImageRef, RawDataset, Sample, read
from iishpo.data.splits import SPLITS, ImageSplits, save_splits

log = logging.getLogger(__name__)


def _decode(ref: ImageRef, mode: str) -> Image.Image:
    if isinstance(ref, np.ndarray):
        array = ref[..., 0] if ref.ndim == 3 and ref.shape[-1] == 1 else ref
        return Image.fromarray(array).convert(mode)
    try:
        with Image.open(ref) as img:
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {ref}: {err}") from err


def _square(img: Image.Image) -> Image.Image:
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


#: where an image was first resized: its split's arrays (resolution -> images) and row
Resized = dict[object, tuple[dict[int, np.ndarray], int]]


def _identity(ref: ImageRef) -> object:
    """The same image wherever it appears: a path, or the very array object.

    STL-10's pool holds the arrays of its train and validation splits, and a validation
    split that doubles as test split holds the same paths.
    """
    return ref if isinstance(ref, Path) else id(ref)


def _resize_all(
    samples: Sequence[Sample], resolutions: Sequence[int], mode: str, where: str, done: Resized
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Every sample at every resolution; an image in ``done`` is copied, not decoded again."""
    channels = 3 if mode == "RGB" else 1
    out = {r: np.empty((len(samples), r, r, channels), np.uint8) for r in resolutions}
    labels = np.empty(len(samples), np.int64)
    largest = max(resolutions)
    for i, (ref, label) in enumerate(samples):
        labels[i] = label
        earlier = done.get(_identity(ref))
        if earlier is not None:
            images, row = earlier
            for r in resolutions:
                out[r][i] = images[r][row]
            continue
        img = _square(_decode(ref, mode))
        if img.size[0] < largest:
            raise ValueError(
                f"{where}: image {ref if isinstance(ref, Path) else i} is {img.size[0]} px on "
                f"its shorter side, smaller than the requested resolution {largest} px; "
                f"use a ladder whose largest resolution is at most {img.size[0]}"
            )
        for r in resolutions:
            small = img if img.size[0] == r else img.resize((r, r), Image.Resampling.LANCZOS)
            out[r][i] = np.asarray(small).reshape(r, r, channels)
        done[_identity(ref)] = (out, i)
        if (i + 1) % 2000 == 0:
            log.info("%s: %d / %d images resized", where, i + 1, len(samples))
    return out, labels


def prepare_dataset(
    name: str,
    cfg: Mapping[str, Any],
    raw_dir: Path,
    outputs: Mapping[int, Path],
) -> None:
    """Write one ``.npz`` per resolution (``outputs``: resolution -> path).

    Each distinct image is decoded and resized once, however many splits hold it.
    """
    raw: RawDataset = read(cfg, raw_dir)
    mode = "RGB" if cfg["color"] == "rgb" else "L"
    resolutions = sorted(outputs)
    done: Resized = {}
    x: dict[int, dict[str, np.ndarray]] = {r: {} for r in resolutions}
    y: dict[str, np.ndarray] = {}
    for split in SPLITS:
        images, y[split] = _resize_all(raw.samples[split], resolutions, mode, f"{name}/{split}", done)
        for r in resolutions:
            x[r][split] = images[r]
        log.info("%s: %s split, %d images", name, split, len(y[split]))
    pool_x: dict[int, np.ndarray | None] = {r: None for r in resolutions}
    pool_y = None
    if raw.pool:
        pool_images, pool_y = _resize_all(raw.pool, resolutions, mode, f"{name}/pool", done)
        pool_x = dict(pool_images)
    for r in resolutions:
        splits = ImageSplits(x[r], y, raw.class_names, pool_x[r], pool_y, raw.test_folds)
        save_splits(splits, outputs[r])
        log.info("%s: wrote %s", name, outputs[r])
