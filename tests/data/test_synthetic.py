"""The built-in synthetic data set: deterministic, the promised shape, and resolution matters."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import compose
from iishpo.data import synthetic
from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch, read
from iishpo.data.splits import load_splits

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def default_cfg() -> dict[str, Any]:
    """The data set exactly as the default study configures it."""
    return dict(compose().datasets["synthetic"])


def _small(cfg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**cfg, "per_class": {"train": 3, "val": 2, "test": 2}}
    out.update(changes)
    return out


def test_same_seed_gives_identical_bytes(default_cfg: dict[str, Any], tmp_path: Path) -> None:
    cfg = _small(default_cfg)
    a, b = synthetic.generate(cfg), synthetic.generate(cfg)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
        assert a[key].tobytes() == b[key].tobytes(), key
    # the written file too (what DVC would hash)
    fetch(cfg, tmp_path / "one")
    fetch(cfg, tmp_path / "two")
    one = (tmp_path / "one" / synthetic.FILE).read_bytes()
    assert one == (tmp_path / "two" / synthetic.FILE).read_bytes()


def test_batch_size_does_not_change_the_images(
    default_cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _small(default_cfg)
    reference = synthetic.generate(cfg)
    monkeypatch.setattr(synthetic, "BATCH", 5)
    rebatched = synthetic.generate(cfg)
    for key in reference:
        assert reference[key].tobytes() == rebatched[key].tobytes(), key


def test_another_seed_gives_other_images(default_cfg: dict[str, Any]) -> None:
    a = synthetic.generate(_small(default_cfg))
    b = synthetic.generate(_small(default_cfg, seed=int(default_cfg["seed"]) + 1))
    for split in SPLITS:
        assert a[f"x_{split}"].shape == b[f"x_{split}"].shape
        assert not np.array_equal(a[f"x_{split}"], b[f"x_{split}"])


def test_default_data_set_has_the_promised_size(
    default_cfg: dict[str, Any], tmp_path: Path
) -> None:
    n_classes, size = int(default_cfg["n_classes"]), int(default_cfg["native_resolution"])
    assert n_classes >= 10
    assert size >= 128
    fetch(default_cfg, tmp_path)
    raw = read(default_cfg, tmp_path)
    assert len(raw.class_names) == n_classes == len(set(raw.class_names))
    for split in SPLITS:
        samples = raw.samples[split]
        per_class = int(default_cfg["per_class"][split])
        assert len(samples) == n_classes * per_class
        labels = np.array([label for _, label in samples])
        assert np.array_equal(
            np.bincount(labels, minlength=n_classes), np.full(n_classes, per_class)
        )
        image = samples[0][0]
        assert isinstance(image, np.ndarray)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
    # images use the whole range of intensities, not a blank canvas
    images = np.stack([x for x, _ in raw.samples["train"]])
    assert images.min() < 30 and images.max() > 225


def test_check_rejects_bad_configurations(default_cfg: dict[str, Any]) -> None:
    synthetic.check(default_cfg)
    bad = {
        "n_classes": [{"n_classes": 13}, {"n_classes": 1}],
        "shapes": [{"shapes": 0}, {"shapes": 6}],
        "orientations": [{"orientations": 1}, {"orientations": 7}],
        "native_resolution": [{"native_resolution": 16}],
        "detail_periods must lie": [{"detail_periods": [24.0, 1.5]}, {"detail_periods": [200.0]}],
        "detail_periods must decrease": [
            {"detail_periods": [12.0, 24.0]},
            {"detail_periods": [12, 12]},
        ],
        "detail_periods must be a non-empty list": [
            {"detail_periods": []},
            {"detail_periods": 12.0},
        ],
        "per_class.val": [{"per_class": {"train": 1, "val": 0, "test": 1}}],
    }
    for message, changes in bad.items():
        for change in changes:
            with pytest.raises(ValueError, match=message):
                synthetic.check({**default_cfg, **change})


def test_class_codes_go_round_the_coarse_attributes_first() -> None:
    """The label's mixed-radix digits: shape least significant, the finest detail most."""
    shape, digits = synthetic.codes(np.arange(12), shapes=3, orientations=2, n_details=2)
    assert shape.tolist() == [0, 1, 2] * 4
    assert digits.tolist() == [[0, 0]] * 3 + [[1, 0]] * 3 + [[0, 1]] * 3 + [[1, 1]] * 3
    cfg = {"n_classes": 6, "shapes": 2, "orientations": 3, "detail_periods": [16.0]}
    assert synthetic.class_names(cfg) == [
        "disc-0",
        "triangle-0",
        "disc-1",
        "triangle-1",
        "disc-2",
        "triangle-2",
    ]


def _downscaled(image: np.ndarray, resolution: int) -> np.ndarray:
    """As the prepare step resizes: Lanczos, anti-aliased."""
    resized = Image.fromarray(image).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(resized, np.float32)


def test_each_attribute_shows_from_its_own_resolution_on(default_cfg: dict[str, Any]) -> None:
    """Pairs of images that differ in one attribute only (the same random draws, classes
    that differ in one digit): the shape changes the image at 8 px already, the medium
    grating from 16 px on and the fine one from 32 px on; below its resolution an
    attribute changes the downscaled image by less than a third of what it changes from
    there on (edges and the filter's finite roll-off leave a little)."""
    n_shapes, orientations = int(default_cfg["shapes"]), int(default_cfg["orientations"])
    # class 0 against the class whose only other digit is the shape, medium, fine one
    first_visible = {1: 8, n_shapes: 16, n_shapes * orientations: 32}
    ladder = (8, 16, 32, 64)

    def difference(other: int, resolution: int) -> float:
        changes = []
        for seed in range(10):
            pair = [
                synthetic.render_split(np.array([label]), default_cfg, np.random.default_rng(seed))[
                    0
                ]
                for label in (0, other)
            ]
            changes.append(
                np.abs(_downscaled(pair[0], resolution) - _downscaled(pair[1], resolution)).mean()
            )
        return float(np.mean(changes))

    for other, visible_from in first_visible.items():
        change = {r: difference(other, r) for r in ladder}
        shown = [change[r] for r in ladder if r >= visible_from]
        assert min(shown) > 10, (other, change)  # 0..255 units, per pixel and channel
        for r in ladder:
            if r < visible_from:
                assert change[r] < min(shown) / 3, (other, r, change)


def _validation_accuracy(paths: dict[int, Path], seed: int) -> dict[int, float]:
    """The reference CNN's validation accuracy per resolution, trained with ``seed`` and
    the default study's trainer settings on one CPU thread."""
    import torch

    from iishpo.training.batches import TrainingData
    from iishpo.training.device import device_for
    from iishpo.training.fit import train

    trainer = compose().trainer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for resolution, path in paths.items():
            data = TrainingData(load_splits(path), device_for("cpu"))
            out[resolution] = 1 - train(synthetic.REFERENCE_CNN, data, trainer, seed)[0].val_error
    finally:
        torch.set_num_threads(threads)
    return out


def test_accuracy_rises_at_every_step_of_the_default_ladder(tmp_path: Path) -> None:
    """The default study's data, ladder and trainer: coarse cues already classify above
    chance at the smallest resolution, and every larger one adds class information.

    With the default codes (3 shapes x 2 x 2, 10 classes) an ideal classifier reaches
    3/10, 6/10 and 10/10 at 8, 16 and 32 px. One training seed keeps the test fast: the
    margins hold for each of the seeds 0, 1, 2 on their own (benchmarks/resolution_curve.py
    prints them), so averaging is not needed."""
    settings = compose()
    cfg = settings.datasets["synthetic"]
    ladder = settings.study.ladder
    assert len(ladder) >= 3
    fetch(cfg, tmp_path / "raw")
    paths = {r: tmp_path / f"{r}.npz" for r in ladder}
    prepare_dataset("synthetic", cfg, tmp_path / "raw", paths)
    accuracy = _validation_accuracy(paths, seed=0)
    chance = 1 / int(cfg["n_classes"])
    small, large = ladder[0], ladder[-1]
    assert accuracy[small] > 2 * chance, accuracy
    for lower, higher in itertools.pairwise(ladder):
        assert accuracy[higher] > accuracy[lower] + 0.1, (lower, higher, accuracy)
    assert accuracy[large] > accuracy[small] + 0.4, accuracy
