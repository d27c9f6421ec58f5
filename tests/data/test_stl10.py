"""STL-10 end to end from a miniature archive in the upstream binary layout."""

from __future__ import annotations

import numpy as np
import pytest

from iishpo.data import download, prepare, sources
from iishpo.data.prepare import prepare_dataset
from iishpo.data.splits import load_splits


def test_download_read_and_prepare(server, stl10, tmp_path, kit):
    server.files["stl10_binary.tar.gz"] = stl10.archive
    cfg = stl10.config(server.url)
    sources.check("stl10", cfg)
    raw = tmp_path / "raw"
    sources.fetch(cfg, raw)
    assert not (raw / "stl10" / "stl10_binary" / "unlabeled_X.bin").exists()

    data = sources.read(cfg, raw)
    assert data.class_names == stl10.class_names
    fold1 = set(stl10.folds[0].tolist())
    rest = [i for i in range(20) if i not in fold1]
    # images come out upright (H, W, C) exactly as they went in
    for split, index in (("train", stl10.folds[0]), ("val", rest)):
        assert len(data.samples[split]) == len(index)
        for (image, label), i in zip(data.samples[split], index, strict=True):
            np.testing.assert_array_equal(image, stl10.x_train[i])
            assert label == stl10.y_train[i]
    np.testing.assert_array_equal(np.stack([x for x, _ in data.samples["test"]]), stl10.x_test)
    assert [y for _, y in data.samples["test"]] == stl10.y_test.tolist()
    assert len(data.pool) == 20 and len(data.test_folds) == 10
    for got, want in zip(data.test_folds, stl10.folds, strict=True):
        np.testing.assert_array_equal(got, want)

    outputs = {r: tmp_path / "prepared" / f"{r}.npz" for r in (32, 48)}
    prepare_dataset("stl10", cfg, raw, outputs)
    for r, path in outputs.items():
        splits = load_splits(path)
        assert {s: splits.x[s].shape for s in splits.x} == {
            "train": (4, r, r, 1), "val": (16, r, r, 1), "test": (12, r, r, 1)}
        assert splits.pool_x.shape == (20, r, r, 1) and len(splits.test_folds) == 10
        assert np.bincount(splits.pool_y).tolist() == [2] * 10
    assert kit.leftovers(tmp_path) == []


def test_wrong_archive_lacks_the_binary_files(server, stl10, tmp_path, kit):
    server.files["stl10_binary.tar.gz"] = kit.tar_bytes({"stl10_binary/train_X.bin": b"\0"})
    cfg = stl10.config(server.url)
    cfg["files"]["archive"]["checksum"] = kit.md5(server.files["stl10_binary.tar.gz"])
    with pytest.raises(download.ArchiveError, match=r"lacks \['stl10_binary/class_names.txt'"):
        sources.fetch(cfg, tmp_path / "raw")
    assert not (tmp_path / "raw" / "stl10").exists() and kit.leftovers(tmp_path) == []


def test_resolution_larger_than_96(server, stl10, tmp_path):
    server.files["stl10_binary.tar.gz"] = stl10.archive
    cfg = stl10.config(server.url)
    sources.fetch(cfg, tmp_path / "raw")
    with pytest.raises(ValueError, match="96 px on its shorter side, smaller than the requested"):
        prepare_dataset("stl10", cfg, tmp_path / "raw", {128: tmp_path / "128.npz"})
    assert not (tmp_path / "128.npz").exists()


def test_prepare_decodes_each_image_once(server, stl10, tmp_path, monkeypatch):
    """The pool holds the train and validation images: copied, not decoded a second time."""
    server.files["stl10_binary.tar.gz"] = stl10.archive
    cfg = stl10.config(server.url)
    sources.fetch(cfg, tmp_path / "raw")
    decoded = []
    decode = prepare._decode
    monkeypatch.setattr(prepare, "_decode", lambda ref, mode: decoded.append(ref) or decode(ref, mode))
    prepare.prepare_dataset("stl10", cfg, tmp_path / "raw", {32: tmp_path / "32.npz"})
    assert len(decoded) == len(stl10.x_train) + len(stl10.x_test)
    assert len({id(ref) for ref in decoded}) == len(decoded)
    data = load_splits(tmp_path / "32.npz")
    # the copies are the right images: the pool's fold 1 is the train split, the rest val
    np.testing.assert_array_equal(data.pool_x[stl10.folds[0]], data.x["train"])
    rest = np.setdiff1d(np.arange(len(stl10.x_train)), stl10.folds[0])
    np.testing.assert_array_equal(data.pool_x[rest], data.x["val"])
    np.testing.assert_array_equal(data.pool_y, stl10.y_train)
