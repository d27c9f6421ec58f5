"""The built-in synthetic data set: deterministic, the promised shape, and resolution matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
        "detail_periods must decrease": [{"detail_periods": [12.0, 24.0]}, {"detail_periods": [12, 12]}],
        "detail_periods must be a non-empty list": [{"detail_periods": []}, {"detail_periods": 12.0}],
        "per_class.val": [{"per_class": {"train": 1, "val": 0, "test": 1}}],
    }
    for message, changes in bad.items():
        for change in changes:
            with pytest.raises(ValueError, match=message):
                synthetic.check({**default_cfg, **change})


def test_class_codes_are_the_mixed_radix_digits_of_the_label() -> None:
    """Shape is the most significant digit; the last detail band the least."""
    shape, digits = synthetic.codes(np.arange(12), orientations=2, n_details=2)
    assert shape.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert digits.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] * 3
    cfg = {"n_classes": 7, "orientations": 3, "detail_periods": [16.0]}
    assert synthetic.class_names(cfg) == ["disc-0", "disc-1", "disc-2", "triangle-0",
                                          "triangle-1", "triangle-2", "cross-0"]


def _validation_accuracy(paths: dict[int, Path], seeds: range) -> dict[int, float]:
    """The reference CNN's validation accuracy per resolution, averaged over ``seeds``,
    with the default study's trainer settings on one CPU thread."""
    import torch

    from iishpo.batches import TrainingData
    from iishpo.device import device_for
    from iishpo.training import train

    trainer = compose().trainer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for resolution, path in paths.items():
            data = TrainingData(load_splits(path), device_for("cpu"))
            errors = [train(synthetic.REFERENCE_CNN, data, trainer, seed=s)[0].val_error for s in seeds]
            out[resolution] = 1 - float(np.mean(errors))
    finally:
        torch.set_num_threads(threads)
    return out


def test_accuracy_rises_at_every_step_of_the_default_ladder(tmp_path: Path) -> None:
    """The default study's data, ladder and trainer: coarse cues already classify above
    chance at the smallest resolution, and every larger one adds class information.

    With the default codes (3 shapes x 2 x 2, 10 classes) an ideal classifier reaches
    3/10, 5/10 and 10/10 at 8, 16 and 32 px."""
    settings = compose()
    cfg = settings.datasets["synthetic"]
    ladder = settings.study.ladder
    assert len(ladder) >= 3
    fetch(cfg, tmp_path / "raw")
    paths = {r: tmp_path / f"{r}.npz" for r in ladder}
    prepare_dataset("synthetic", cfg, tmp_path / "raw", paths)
    accuracy = _validation_accuracy(paths, seeds=range(2))
    chance = 1 / int(cfg["n_classes"])
    small, large = ladder[0], ladder[-1]
    assert accuracy[small] > 2 * chance, accuracy
    for lower, higher in zip(ladder, ladder[1:]):
        assert accuracy[higher] > accuracy[lower] + 0.05, (lower, higher, accuracy)
    assert accuracy[large] > accuracy[small] + 0.25, accuracy
