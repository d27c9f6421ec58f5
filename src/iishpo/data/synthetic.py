"""A built-in image classification data set, generated offline from a seed.

Each class is a (shape, texture) pair. The shape (disc, square, triangle, cross, ring) is
coarse and survives strong downscaling; the texture is a fine stripe pattern (period
``stripe_period`` px at native size) whose orientation tells classes apart that share a
shape. Lanczos downscaling averages the stripes away once their period drops below about
two pixels, so at low resolution only the shape is visible and classes sharing a shape
become indistinguishable: resolution matters, as in real data with fine detail. Colour,
position, size, stripe phase, background and noise are random and carry no label.

Generation is vectorised: every random parameter of a split is drawn at once, and the
images are rendered in batches on one precomputed coordinate grid. The same ``seed`` gives
the same bytes on every run (the stream of random draws does not depend on the batch size).
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
SPLITS = ("train", "val", "test")
#: images rendered at once; bounds the temporary float32 arrays (a few MB each at 128 px)
BATCH = 32
#: grey pixel noise, uniform on [-NOISE, NOISE) in 0..255 units (std NOISE / sqrt(3))
NOISE = 16
#: background colours are drawn from [0, BACKGROUND], shape colours from [FOREGROUND, 1]
BACKGROUND, FOREGROUND = 0.35, 0.6
#: brightness of the dark stripes relative to the light ones
DARK = 0.6
#: how far a shape's centre may move from the image centre, as a fraction of the room left
#: (more jitter makes the shapes markedly harder to learn from few images)
JITTER = 0.5
#: shape radius range, as a fraction of the image size (large enough to tell at 8 px)
RADIUS = (0.32, 0.42)


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
    if not float(cfg["stripe_period"]) >= 2:
        raise ValueError(f"stripe_period must be >= 2 px, got {cfg['stripe_period']}")
    for split in SPLITS:
        if int(cfg["per_class"][split]) < 1:
            raise ValueError(f"per_class.{split} must be >= 1, got {cfg['per_class'][split]}")


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inside-mask of ``shape`` for offsets ``dy, dx`` from the centre and radius ``r``
    (all broadcastable: ``(B, H, W)`` offsets, ``(B, 1, 1)`` radii)."""
    if shape == "disc":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    if shape == "triangle":
        return (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "cross":
        arm = r * 0.35
        ady, adx = np.abs(dy), np.abs(dx)
        return ((ady <= arm) & (adx <= r)) | ((adx <= arm) & (ady <= r))
    if shape == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (0.5 * r) ** 2)
    raise ValueError(shape)


def _draw(
    labels: np.ndarray, n_textures: int, size: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Every random parameter of the images of one split, one row per image."""
    n = len(labels)
    texture = labels // len(SHAPES)
    radius = rng.uniform(*RADIUS, n) * size
    return {
        "shape": labels % len(SHAPES),
        "bg0": rng.uniform(0.0, BACKGROUND, (n, 3)),
        "bg1": rng.uniform(0.0, BACKGROUND, (n, 3)),
        "bg_angle": rng.uniform(0, 2 * np.pi, n),
        "radius": radius,
        "cy": size / 2 + rng.uniform(-1, 1, n) * JITTER * (size / 2 - radius),
        "cx": size / 2 + rng.uniform(-1, 1, n) * JITTER * (size / 2 - radius),
        "theta": np.pi * texture / n_textures + rng.normal(0, np.pi / (12 * n_textures), n),
        "phase": rng.uniform(0, 1, n),
        "colour": rng.uniform(FOREGROUND, 1.0, (n, 3)),
    }


def _col(values: np.ndarray) -> np.ndarray:
    """Per-image values ``(B,)`` as float32 ``(B, 1, 1)``, to broadcast over image planes."""
    return values.astype(np.float32)[:, None, None]


def _render_batch(
    p: Mapping[str, np.ndarray],
    yy: np.ndarray,
    xx: np.ndarray,
    period: float,
    noise: np.ndarray,
    out: np.ndarray,
) -> None:
    """Render the images of the parameter rows ``p`` into ``out`` (uint8 ``(B, H, W, 3)``),
    adding ``noise`` (float32 ``(B, H, W)``, in 0..255 units).

    Works on ``(B, H, W)`` planes, one colour channel at a time: broadcasting over a
    trailing axis of length 3 would be several times slower.
    """
    size = yy.shape[0]
    # low-frequency background: a random colour gradient along a random direction
    ramp = xx * _col(np.cos(p["bg_angle"]) / (size * 1.5))
    ramp += yy * _col(np.sin(p["bg_angle"]) / (size * 1.5))
    ramp += np.float32(0.5)
    # the shape, filled with stripes of the class's orientation and a random phase
    dy, dx = yy - _col(p["cy"]), xx - _col(p["cx"])
    mask = np.zeros(dy.shape, bool)
    for s, shape in enumerate(SHAPES):
        idx = np.flatnonzero(p["shape"] == s)
        if len(idx):
            mask[idx] = _shape_mask(shape, dy[idx], dx[idx], _col(p["radius"][idx]))
    # 2 * (position along the stripe normal, in periods), shifted positive: odd = dark
    along = xx * _col(2 * np.cos(p["theta"]) / period)
    along += yy * _col(2 * np.sin(p["theta"]) / period)
    along += _col(2 * p["phase"] + 4 * size / period)
    dark = (along.astype(np.int32) & 1).astype(bool)
    shade = np.where(dark, np.float32(DARK * 255), np.float32(255))
    for c in range(3):
        bg0, bg1 = p["bg0"][:, c] * 255, p["bg1"][:, c] * 255
        plane = np.where(mask, shade * _col(p["colour"][:, c]), ramp * _col(bg1 - bg0) + _col(bg0))
        plane += noise
        np.clip(plane, 0, 255, out=plane)
        out[..., c] = plane  # truncating cast to uint8


def render_split(
    labels: np.ndarray, n_textures: int, size: int, period: float, rng: np.random.Generator
) -> np.ndarray:
    """RGB uint8 images ``(N, size, size, 3)`` of the classes ``labels``."""
    params = _draw(labels, n_textures, size, rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((len(labels), size, size, 3), np.uint8)
    for start in range(0, len(labels), BATCH):
        rows = {k: v[start : start + BATCH] for k, v in params.items()}
        n = len(rows["shape"])
        # grey pixel noise, uniform on [-NOISE, NOISE): random bytes are the cheapest draw
        noise = np.frombuffer(rng.bytes(n * size * size), np.uint8).reshape(n, size, size)
        noise = noise.astype(np.float32) * np.float32(2 * NOISE / 256) - np.float32(NOISE)
        _render_batch(rows, yy, xx, period, noise, out[start : start + n])
    return out


def generate(cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """All splits as arrays; the same ``seed`` always gives the same bytes."""
    n_classes, n_textures = int(cfg["n_classes"]), int(cfg["n_textures"])
    size, period = int(cfg["native_resolution"]), float(cfg["stripe_period"])
    rng = np.random.default_rng(int(cfg["seed"]))
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        labels = np.repeat(np.arange(n_classes), int(cfg["per_class"][split]))
        rng.shuffle(labels)
        arrays[f"x_{split}"] = render_split(labels, n_textures, size, period, rng)
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return arrays


def class_names(cfg: Mapping[str, Any]) -> list[str]:
    return [
        f"{SHAPES[c % len(SHAPES)]}-texture{c // len(SHAPES)}" for c in range(int(cfg["n_classes"]))
    ]


def fetch(cfg: Mapping[str, Any], raw_dir: Path) -> None:
    """Generate and write atomically; uncompressed, since noisy images barely compress
    and zlib would cost more time than the rendering."""
    check(cfg)
    raw_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=".synthetic.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **generate(cfg))
        os.replace(tmp, raw_dir / FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(cfg: Mapping[str, Any], raw_dir: Path) -> RawDataset:
    with np.load(raw_dir / FILE) as data:
        samples = {
            split: list(zip(data[f"x_{split}"], (int(v) for v in data[f"y_{split}"]), strict=True))
            for split in SPLITS
        }
    return RawDataset(class_names=class_names(cfg), samples=samples)
