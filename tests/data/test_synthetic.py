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
    with pytest.raises(ValueError, match="n_classes"):
        synthetic.check({**default_cfg, "n_classes": 99})
    with pytest.raises(ValueError, match="native_resolution"):
        synthetic.check({**default_cfg, "native_resolution": 16})
    with pytest.raises(ValueError, match="stripe_period"):
        synthetic.check({**default_cfg, "stripe_period": 1})
    with pytest.raises(ValueError, match="per_class.val"):
        synthetic.check({**default_cfg, "per_class": {"train": 1, "val": 0, "test": 1}})


#: a fixed, reasonable CNN (not tuned): it must see the stripes at the largest resolution
FIXED_CNN = {
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


def test_fine_detail_needs_the_largest_resolution(tmp_path: Path) -> None:
    """The default study's data, ladder and trainer: the fixed CNN tells the stripe
    textures apart at the largest resolution only. At the smallest it can at best find the
    shape, i.e. it stays near the shape-only ceiling of 1 - 1/n_textures error."""
    import torch

    from iishpo.batches import TrainingData
    from iishpo.device import device_for
    from iishpo.training import train

    settings = compose()
    cfg = settings.datasets["synthetic"]
    small, large = settings.study.ladder[0], settings.study.ladder[-1]
    fetch(cfg, tmp_path / "raw")
    outputs = {r: tmp_path / f"{r}.npz" for r in (small, large)}
    prepare_dataset("synthetic", cfg, tmp_path / "raw", outputs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        errors = {}
        for resolution, path in outputs.items():
            data = TrainingData(load_splits(path), device_for("cpu"))
            result, _ = train(FIXED_CNN, data, settings.trainer, seed=0)
            errors[resolution] = result.val_error
    finally:
        torch.set_num_threads(threads)
    ceiling = 1 - 1 / int(cfg["n_textures"])
    assert errors[small] > ceiling - 0.1, errors  # the stripes are invisible at `small` px
    assert errors[large] < ceiling - 0.2, errors  # ... and learned at `large` px
    assert errors[small] - errors[large] >= 0.15, errors
