"""A built-in image classification data set, generated offline from a seed.

Each class is a (shape, texture) pair. The shape (disc, square, triangle, cross, ring) is
coarse and survives any downscaling; the texture is a fine stripe pattern (period
``stripe_period`` px at native size) whose orientation tells classes apart that share a
shape. Lanczos downscaling averages the stripes away once their period drops below about
two pixels, so at low resolution only the shape is visible and classes sharing a shape
become indistinguishable: resolution matters, as in real data with fine detail. Colour,
position, size, stripe phase, background and noise are random and carry no label.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from iishpo.data.sources import RawDataset

SHAPES = ("disc", "square", "triangle", "cross", "ring")
FILE = "synthetic.npz"


def check(cfg: Mapping[str, Any]) -> None:
    n_classes = int(cfg["n_classes"])
    n_textures = int(cfg["n_textures"])
    if not 2 <= n_textures <= 6:
        raise ValueError(f"n_textures must be in [2, 6], got {n_textures}")
    if not 2 <= n_classes <= len(SHAPES) * n_textures:
        raise ValueError(
            f"n_classes must be in [2, {len(SHAPES) * n_textures}] for {n_textures} textures, "
            f"got {n_classes}"
        )
    if int(cfg["native_resolution"]) < 32:
        raise ValueError(f"native_resolution must be >= 32, got {cfg['native_resolution']}")
    for split in ("train", "val", "test"):
        if int(cfg["per_class"][split]) < 1:
            raise ValueError(f"per_class.{split} must be >= 1, got {cfg['per_class'][split]}")


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "cross":
        arm = r * 0.35
        return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(shape)


def render(label: int, n_textures: int, size: int, period: float, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image of class ``label``."""
    shape = SHAPES[label % len(SHAPES)]
    texture = label // len(SHAPES)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # low-frequency background: a random colour gradient
    c0, c1 = rng.uniform(0.0, 0.5, 3), rng.uniform(0.0, 0.5, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx * np.cos(angle) + yy * np.sin(angle)) / (size * 1.5) + 0.5)[..., None]
    img = c0 * (1 - ramp) + c1 * ramp
    r = rng.uniform(0.25, 0.4) * size
    cy, cx = rng.uniform(r, size - r, 2)
    mask = _shape_mask(shape, yy, xx, cy, cx, r)[..., None]
    theta = np.pi * texture / n_textures + rng.normal(0, np.pi / (12 * n_textures))
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    stripes = (0.5 + 0.5 * np.sign(wave))[..., None]
    colour = rng.uniform(0.5, 1.0, 3)
    img = np.where(mask, colour * (0.35 + 0.65 * stripes), img)
    img = img + rng.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def generate(cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """All splits as arrays; the same ``seed`` always gives the same bytes."""
    n_classes, n_textures = int(cfg["n_classes"]), int(cfg["n_textures"])
    size, period = int(cfg["native_resolution"]), float(cfg["stripe_period"])
    rng = np.random.default_rng(int(cfg["seed"]))
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        labels = np.repeat(np.arange(n_classes), int(cfg["per_class"][split]))
        rng.shuffle(labels)
        arrays[f"x_{split}"] = np.stack([render(int(c), n_textures, size, period, rng) for c in labels])
        arrays[f"y_{split}"] = labels
    return arrays


def class_names(cfg: Mapping[str, Any]) -> list[str]:
    return [
        f"{SHAPES[c % len(SHAPES)]}-texture{c // len(SHAPES)}" for c in range(int(cfg["n_classes"]))
    ]


def fetch(cfg: Mapping[str, Any], raw_dir: Path) -> None:
    check(cfg)
    raw_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=".synthetic.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **generate(cfg))
        os.replace(tmp, raw_dir / FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(cfg: Mapping[str, Any], raw_dir: Path) -> RawDataset:
    with np.load(raw_dir / FILE) as data:
        samples = {
            split: list(zip(data[f"x_{split}"], (int(v) for v in data[f"y_{split}"]), strict=True))
            for split in ("train", "val", "test")
        }
    return RawDataset(class_names=class_names(cfg), samples=samples)
