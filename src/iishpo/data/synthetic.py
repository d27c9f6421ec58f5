"""A built-in image classification data set, generated offline from a seed.

Photographs lose class information gradually as they shrink: an anti-aliased downscale to
``r`` px keeps the structure coarser than about ``r / 2`` cycles per image and removes the
rest, and natural images carry detail in every octave (their roughly 1/f amplitude
spectrum has equal power per octave), so each halving of the resolution takes away one
octave of detail and the class cues that lived there. This data set is built the same way:
a class is a code of attributes at different spatial scales, one per octave, all of the
same contrast (equal power per octave):

- a coarse one, the silhouette of the object (``shapes`` of disc, triangle, cross, square,
  ring), visible at the smallest resolutions;
- finer ones, each a sinusoidal grating inside the object with the period given by
  ``detail_periods`` (px at native size, coarsest first, an octave apart by default) in one
  of ``orientations`` directions. A grating is visible once the image is large enough for
  its period to span about 3 px and averaged away by the downscale below about 2 px. With
  the default 2 directions (along the pixel axes) that holds for every grating; a diagonal
  one (from 4 directions on) survives down to periods of about 1.4 px, as the square
  pixel grid resolves diagonals finer.

A class is identified by all its attributes together: coarse cues separate groups of
classes and each finer one splits every group further, as a coarse view tells broad
categories apart and finer detail tells related ones apart. Each step of a ladder that
doubles the resolution therefore adds one attribute's worth of class information. Colour,
position, size, grating phases, a small orientation jitter, background and pixel noise are
random and carry no label.

Generation is vectorised: every random parameter of a split is drawn at once, and the
images are rendered in batches on one precomputed coordinate grid. The same ``seed`` gives
the same bytes on every run (the stream of random draws does not depend on the batch size).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iishpo.data.sources import RawDataset

#: silhouettes in the order a class code uses them (the first ones differ most at 8 px)
SHAPES = ("disc", "triangle", "cross", "square", "ring")
FILE = "synthetic.npz"
SPLITS = ("train", "val", "test")
#: images rendered at once; bounds the temporary float32 arrays (a few MB each at 128 px)
BATCH = 32
#: grey pixel noise, uniform on [-NOISE, NOISE) in 0..255 units (std NOISE / sqrt(3))
NOISE = 16
#: background colours are drawn from [0, BACKGROUND], shape colours from [FOREGROUND, 1]
BACKGROUND, FOREGROUND = 0.35, 0.6
#: the gratings darken the object by up to DEPTH of its brightness together, each by the
#: same share, so that every octave carries detail of the same contrast; they add up (a
#: product would mix them into beats at other frequencies, coarser than the finer one)
DEPTH = 0.8
#: how far a shape's centre may move from the image centre, as a fraction of the room left
#: (more jitter makes the shapes markedly harder to learn from few images)
JITTER = 0.5
#: shape radius range, as a fraction of the image size (large enough to tell at 8 px)
RADIUS = (0.32, 0.42)
#: grating periods must span at least this many native pixels, or they alias when drawn
MIN_PERIOD = 2.0

#: the fixed, untuned CNN (a point of ``conf/space/cnn_small.yaml``) that the data set's
#: grading across resolutions is stated for: tests/data/test_synthetic.py and
#: benchmarks/resolution_curve.py train it at each resolution
REFERENCE_CNN: Mapping[str, Any] = {
    "learning_rate": 0.03,
    "batch_size": 32,
    "l1": 1e-7,
    "l2": 1e-5,
    "filter_size": 3,
    "n_conv": 2,
    "n_fc": 1,
    "conv_filters_0": 16,
    "conv_filters_1": 32,
    "fc_units_0": 64,
}


def _periods(cfg: Mapping[str, Any]) -> list[float]:
    return [float(p) for p in cfg["detail_periods"]]


def _n_codes(cfg: Mapping[str, Any]) -> int:
    """How many classes the attributes can tell apart: shapes x orientations^details."""
    return int(cfg["shapes"]) * int(cfg["orientations"]) ** len(_periods(cfg))


def check(cfg: Mapping[str, Any]) -> None:
    shapes, orientations = int(cfg["shapes"]), int(cfg["orientations"])
    native = int(cfg["native_resolution"])
    if not 1 <= shapes <= len(SHAPES):
        raise ValueError(f"shapes must be in [1, {len(SHAPES)}], got {shapes}")
    if not 2 <= orientations <= 6:
        raise ValueError(f"orientations must be in [2, 6], got {orientations}")
    if native < 32:
        raise ValueError(f"native_resolution must be >= 32, got {native}")
    periods = cfg["detail_periods"]
    if not isinstance(periods, Sequence) or isinstance(periods, str) or not periods:
        raise ValueError(
            f"detail_periods must be a non-empty list of periods (px), got {periods!r}"
        )
    values = _periods(cfg)
    if not all(MIN_PERIOD <= p <= native for p in values):
        raise ValueError(
            f"detail_periods must lie in [{MIN_PERIOD}, native_resolution={native}] px, "
            f"got {values}"
        )
    if any(finer >= coarser for coarser, finer in itertools.pairwise(values)):
        raise ValueError(f"detail_periods must decrease (coarsest first), got {values}")
    n_classes = int(cfg["n_classes"])
    if not 2 <= n_classes <= _n_codes(cfg):
        raise ValueError(
            f"n_classes must be in [2, {_n_codes(cfg)}] (shapes x orientations^len(detail_periods)"
            f" = {shapes} x {orientations}^{len(values)}), got {n_classes}"
        )
    for split in SPLITS:
        if int(cfg["per_class"][split]) < 1:
            raise ValueError(f"per_class.{split} must be >= 1, got {cfg['per_class'][split]}")


def codes(
    labels: np.ndarray, shapes: int, orientations: int, n_details: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each class's attributes: its shape ``(N,)`` and its detail directions
    ``(N, n_details)``, the digits of the label in mixed radix with the shape as the least
    significant digit and the finest detail as the most significant one. Consecutive
    classes thus go round the shapes, then round the coarsest details, so that however
    many classes there are, the groups that each scale leaves confusable are as even as
    can be."""
    digits = np.empty((len(labels), n_details), np.int64)
    rest, shape = np.divmod(labels.astype(np.int64), shapes)
    for band in range(n_details):
        rest, digits[:, band] = np.divmod(rest, orientations)
    return shape, digits


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
    labels: np.ndarray, cfg: Mapping[str, Any], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Every random parameter of the images of one split, one row per image."""
    n, size = len(labels), int(cfg["native_resolution"])
    orientations, n_details = int(cfg["orientations"]), len(_periods(cfg))
    shape, digits = codes(labels, int(cfg["shapes"]), orientations, n_details)
    radius = rng.uniform(*RADIUS, n) * size
    return {
        "shape": shape,
        "bg0": rng.uniform(0.0, BACKGROUND, (n, 3)),
        "bg1": rng.uniform(0.0, BACKGROUND, (n, 3)),
        "bg_angle": rng.uniform(0, 2 * np.pi, n),
        "radius": radius,
        "cy": size / 2 + rng.uniform(-1, 1, n) * JITTER * (size / 2 - radius),
        "cx": size / 2 + rng.uniform(-1, 1, n) * JITTER * (size / 2 - radius),
        "theta": np.pi * digits / orientations
        + rng.normal(0, np.pi / (12 * orientations), (n, n_details)),
        "phase": rng.uniform(0, 2 * np.pi, (n, n_details)),
        "colour": rng.uniform(FOREGROUND, 1.0, (n, 3)),
    }


def _col(values: np.ndarray) -> np.ndarray:
    """Per-image values ``(B,)`` as float32 ``(B, 1, 1)``, to broadcast over image planes."""
    return values.astype(np.float32)[:, None, None]


def _render_batch(
    p: Mapping[str, np.ndarray],
    yy: np.ndarray,
    xx: np.ndarray,
    periods: Sequence[float],
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
    # the shape, filled with one grating per detail band (class directions, random phases)
    dy, dx = yy - _col(p["cy"]), xx - _col(p["cx"])
    mask = np.zeros(dy.shape, bool)
    for s, shape in enumerate(SHAPES):
        idx = np.flatnonzero(p["shape"] == s)
        if len(idx):
            mask[idx] = _shape_mask(shape, dy[idx], dx[idx], _col(p["radius"][idx]))
    amplitude = np.float32(255 * DEPTH / (2 * len(periods)))
    shade = np.full(dy.shape, 255 - amplitude * len(periods), np.float32)
    for band, period in enumerate(periods):
        theta = p["theta"][:, band]
        along = xx * _col(2 * np.pi * np.cos(theta) / period)
        along += yy * _col(2 * np.pi * np.sin(theta) / period)
        along += _col(p["phase"][:, band])
        shade += np.cos(along) * amplitude
    for c in range(3):
        bg0, bg1 = p["bg0"][:, c] * 255, p["bg1"][:, c] * 255
        plane = np.where(mask, shade * _col(p["colour"][:, c]), ramp * _col(bg1 - bg0) + _col(bg0))
        plane += noise
        np.clip(plane, 0, 255, out=plane)
        out[..., c] = plane  # truncating cast to uint8


def render_split(
    labels: np.ndarray, cfg: Mapping[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """RGB uint8 images ``(N, size, size, 3)`` of the classes ``labels``."""
    size, periods = int(cfg["native_resolution"]), _periods(cfg)
    params = _draw(labels, cfg, rng)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((len(labels), size, size, 3), np.uint8)
    for start in range(0, len(labels), BATCH):
        rows = {k: v[start : start + BATCH] for k, v in params.items()}
        n = len(rows["shape"])
        # grey pixel noise, uniform on [-NOISE, NOISE): random bytes are the cheapest draw
        noise = np.frombuffer(rng.bytes(n * size * size), np.uint8).reshape(n, size, size)
        noise = noise.astype(np.float32) * np.float32(2 * NOISE / 256) - np.float32(NOISE)
        _render_batch(rows, yy, xx, periods, noise, out[start : start + n])
    return out


def generate(cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """All splits as arrays; the same ``seed`` always gives the same bytes."""
    n_classes = int(cfg["n_classes"])
    rng = np.random.default_rng(int(cfg["seed"]))
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        labels = np.repeat(np.arange(n_classes), int(cfg["per_class"][split]))
        rng.shuffle(labels)
        arrays[f"x_{split}"] = render_split(labels, cfg, rng)
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return arrays


def class_names(cfg: Mapping[str, Any]) -> list[str]:
    """``<shape>-<detail digits>``, e.g. ``cross-01``: digit b is band b's direction."""
    labels = np.arange(int(cfg["n_classes"]))
    shapes, digits = codes(labels, int(cfg["shapes"]), int(cfg["orientations"]), len(_periods(cfg)))
    return [
        f"{SHAPES[s]}-{''.join(str(d) for d in row)}" for s, row in zip(shapes, digits, strict=True)
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
