"""Bring-your-own folders and CK+: layouts, splits, archives and every bad input."""

from __future__ import annotations

import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from helpers import compose
from iishpo.data import download, sources
from iishpo.data.prepare import prepare_dataset
from iishpo.data.splits import load_splits
from iishpo.training.batches import TrainingData
from iishpo.training.fit import evaluate, train

EMOTIONS = {"anger": 10, "happy": 20, "surprise": 7}
#: the README's recipe for your own photographs ("Bring your own images")
RECIPE = ("study.datasets=[imagefolder]", "space=cnn_cpu", "trainer=paper_cpu", "study.ladder=[8,16,32]")


def _image(kit, rng: np.random.Generator, fmt: str = "PNG") -> bytes:
    return kit.encode(rng.integers(0, 256, (36, 30, 3), np.uint8), fmt)


def _class_folders(root: Path, kit, counts: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"S{i:03d}_001_{i:08d}.png").write_bytes(_image(kit, rng))
    return root


def _imagefolder(path: Path | str | None, **extra) -> dict:
    return {"kind": "imagefolder", "color": "rgb", "native_resolution": None,
            "test_metric": "accuracy", "path": None if path is None else str(path),
            "split_fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0, **extra}


def _ckplus(path: Path | str | None) -> dict:
    return {"kind": "ckplus", "color": "gray", "native_resolution": None,
            "test_metric": "accuracy", "path": None if path is None else str(path), "seed": 0}


def test_class_folders_split_per_class(tmp_path, kit):
    cfg = _imagefolder(_class_folders(tmp_path / "imgs", kit, EMOTIONS))
    sources.check("mine", cfg)
    sources.fetch(cfg, tmp_path / "raw")
    raw = sources.read(cfg, tmp_path / "raw")
    assert raw.class_names == ["anger", "happy", "surprise"]
    counts = {s: np.bincount([y for _, y in raw.samples[s]], minlength=3).tolist()
              for s in raw.samples}
    assert counts == {"train": [6, 12, 5], "val": [2, 4, 1], "test": [2, 4, 1]}
    files = [p for s in raw.samples.values() for p, _ in s]
    assert len(set(files)) == sum(EMOTIONS.values())  # disjoint splits covering every image
    again = sources.read(cfg, tmp_path / "raw")  # the seed fixes the split
    assert again.samples == raw.samples
    other = sources.read({**cfg, "seed": 1}, tmp_path / "raw")
    assert other.samples["train"] != raw.samples["train"]


def test_split_folders_are_used_as_given(tmp_path, kit):
    root = tmp_path / "imgs"
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        _class_folders(root / split, kit, {"cat": n, "dog": n})
    cfg = _imagefolder(root, color="gray")
    sources.fetch(cfg, tmp_path / "raw")
    outputs = {8: tmp_path / "8.npz", 16: tmp_path / "16.npz"}
    prepare_dataset("mine", cfg, tmp_path / "raw", outputs)
    data = load_splits(outputs[16])
    assert data.class_names == ["cat", "dog"]
    assert {s: data.x[s].shape for s in data.x} == {
        "train": (8, 16, 16, 1), "val": (4, 16, 16, 1), "test": (6, 16, 16, 1)}


def test_split_folders_with_a_class_unknown_to_train(tmp_path, kit):
    root = tmp_path / "imgs"
    _class_folders(root / "train", kit, {"cat": 2, "dog": 2})
    _class_folders(root / "val", kit, {"cat": 1, "dog": 1})
    _class_folders(root / "test", kit, {"cat": 1, "cow": 1})
    with pytest.raises(ValueError, match=r"test has classes \['cow'\] that .*train lacks"):
        sources.fetch(_imagefolder(root), tmp_path / "raw")


def test_train_and_val_folders_val_becomes_test(tmp_path, kit):
    """The given val is the test split; validation is carved out of train per class."""
    root = tmp_path / "imgs"
    _class_folders(root / "train", kit, {"cat": 10, "dog": 20})
    _class_folders(root / "val", kit, {"cat": 3, "dog": 4})
    cfg = _imagefolder(root)  # val : train = 0.2 : 0.6, so a quarter of each train class
    sources.check("mine", cfg)
    sources.fetch(cfg, tmp_path / "raw")
    raw = sources.read(cfg, tmp_path / "raw")
    assert raw.class_names == ["cat", "dog"]
    counts = {s: np.bincount([y for _, y in raw.samples[s]], minlength=2).tolist()
              for s in raw.samples}
    assert counts == {"train": [7, 15], "val": [3, 5], "test": [3, 4]}
    given_val = {p for p in (root / "val").rglob("*.png")}
    assert {p for p, _ in raw.samples["test"]} == given_val
    assert all(p.parts[-2] == raw.class_names[y] for s in raw.samples.values() for p, y in s)
    carved = [p for s in ("train", "val") for p, _ in raw.samples[s]]
    assert sorted(carved) == sorted((root / "train").rglob("*.png"))  # disjoint, all of train
    other = sources.read({**cfg, "seed": 1}, tmp_path / "raw")
    assert other.samples["val"] != raw.samples["val"]
    assert other.samples["test"] == raw.samples["test"]


def test_train_and_val_folders_too_small_to_carve(tmp_path, kit):
    root = tmp_path / "imgs"
    _class_folders(root / "train", kit, {"cat": 1, "dog": 1})
    _class_folders(root / "val", kit, {"cat": 1, "dog": 1})
    with pytest.raises(ValueError, match=r"splits \['val'\] would be empty"):
        sources.fetch(_imagefolder(root), tmp_path / "raw")


@pytest.mark.parametrize("folders", [["train"], ["val"], ["test"], ["train", "test"],
                                     ["test", "val"], ["cat", "train", "val"]])
def test_layouts_that_are_not_accepted(tmp_path, kit, folders):
    root = tmp_path / "imgs"
    for folder in folders:
        _class_folders(root / folder, kit, {"cat": 2, "dog": 2} if folder != "cat" else {"x": 1})
    (root / "other").write_text("a file, not a folder: ignored")
    found = re.escape(f"{root} holds the folders {sorted(folders)}, which is no accepted layout")
    allowed = re.escape("class folders <path>/<class>/<image>, split folders "
                        "<path>/{train,val,test}/<class>/<image>, or <path>/{train,val}/<class>/<image>")
    with pytest.raises(ValueError, match=f"{found}.*{allowed}"):
        sources.fetch(_imagefolder(root), tmp_path / "raw")


def test_test_fraction_zero_makes_validation_the_test_split(tmp_path, kit):
    cfg = _imagefolder(_class_folders(tmp_path / "imgs", kit, {"cat": 6, "dog": 9}),
                       split_fractions={"train": 0.6, "val": 0.4, "test": 0.0})
    sources.fetch(cfg, tmp_path / "raw")
    prepare_dataset("mine", cfg, tmp_path / "raw", {8: tmp_path / "8.npz"})
    data = load_splits(tmp_path / "8.npz")
    assert np.bincount(data.y["val"]).tolist() == [2, 4]  # 0.4 of 6 and of 9, rounded
    np.testing.assert_array_equal(data.x["test"], data.x["val"])
    np.testing.assert_array_equal(data.y["test"], data.y["val"])
    assert len(data.y["train"]) + len(data.y["val"]) == 15


@pytest.mark.parametrize("layout", ["classes", "splits"])
def test_fewer_than_two_classes(tmp_path, kit, layout):
    root = tmp_path / "imgs"
    if layout == "classes":
        _class_folders(root, kit, {"cat": 5})
        where = root
    else:
        for split in ("train", "val", "test"):
            _class_folders(root / split, kit, {"cat": 2})
        where = root / "train"
    with pytest.raises(ValueError, match=rf"{re.escape(str(where))} holds 1 class folder\(s\), need at least 2"):
        sources.fetch(_imagefolder(root), tmp_path / "raw")


def _mac_junk(folder: Path) -> None:
    """What macOS leaves in a folder and in a zip made with Finder."""
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    for image in list(folder.glob("*.png")):
        (folder / f"._{image.name}").write_bytes(b"\0\5\26\7 AppleDouble")
    (folder / ".thumbs").mkdir()
    (folder / ".thumbs" / "a.png").write_bytes(b"not an image")


def test_macos_and_hidden_files_are_ignored(tmp_path, kit):
    root = _class_folders(tmp_path / "imgs", kit, {"cat": 4, "dog": 5})
    images = sorted(root.rglob("*.png"))
    for folder in (root, root / "cat", root / "dog"):
        _mac_junk(folder)
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._S000_001_00000000.png").write_bytes(b"AppleDouble")
    cfg = _imagefolder(root)
    sources.fetch(cfg, tmp_path / "raw")
    raw = sources.read(cfg, tmp_path / "raw")
    assert raw.class_names == ["cat", "dog"]
    assert sorted(p for s in raw.samples.values() for p, _ in s) == images
    prepare_dataset("mine", cfg, tmp_path / "raw", {8: tmp_path / "8.npz"})  # decodes no junk


def test_macos_zip_with_a_wrapping_folder(tmp_path, kit):
    src = _class_folders(tmp_path / "src", kit, {"cat": 3, "dog": 3})
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*.png")):
            name = path.relative_to(src)
            zf.write(path, f"mine/{name}")
            zf.writestr(f"__MACOSX/mine/{name.parent}/._{name.name}", b"AppleDouble")
        zf.writestr("mine/.DS_Store", b"Bud1")
    cfg = _imagefolder(archive)
    sources.fetch(cfg, tmp_path / "raw")
    raw = sources.read(cfg, tmp_path / "raw")
    assert raw.class_names == ["cat", "dog"]
    assert sorted(p.name for s in raw.samples.values() for p, _ in s) == sorted(
        p.name for p in src.rglob("*.png"))


def test_class_folder_without_images(tmp_path, kit):
    root = _class_folders(tmp_path / "imgs", kit, {"cat": 3, "dog": 3})
    (root / "bird" / ".hidden").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"class folder .*bird holds no images"):
        sources.fetch(_imagefolder(root), tmp_path / "raw")


def test_non_image_file_in_a_class_folder(tmp_path, kit):
    root = _class_folders(tmp_path / "imgs", kit, {"cat": 3, "dog": 3})
    (root / "dog" / "notes.txt").write_text("hello")
    (root / "README.txt").write_text("top-level files are ignored")
    with pytest.raises(ValueError, match=r"dog/notes.txt is not an image file \(allowed"):
        sources.fetch(_imagefolder(root), tmp_path / "raw")


def test_unreadable_image_is_named_and_nothing_is_written(tmp_path, kit):
    root = _class_folders(tmp_path / "imgs", kit, {"cat": 5, "dog": 5})
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = _imagefolder(root, split_fractions={"train": 0.5, "val": 0.5, "test": 0.0})
    sources.fetch(cfg, tmp_path / "raw")
    with pytest.raises(ValueError, match=r"cannot read image .*dog/broken.png"):
        prepare_dataset("mine", cfg, tmp_path / "raw", {8: tmp_path / "out" / "8.npz"})
    assert not (tmp_path / "out").exists()


def test_resolution_larger_than_the_images(tmp_path, kit):
    cfg = _imagefolder(_class_folders(tmp_path / "imgs", kit, {"cat": 5, "dog": 5}))
    sources.fetch(cfg, tmp_path / "raw")
    with pytest.raises(ValueError, match="30 px on its shorter side, smaller than .* 32 px"):
        prepare_dataset("mine", cfg, tmp_path / "raw", {32: tmp_path / "out" / "32.npz"})
    assert not (tmp_path / "out").exists()


def test_archive_with_a_wrapping_folder(tmp_path, kit):
    _class_folders(tmp_path / "src" / "mine", kit, {"cat": 4, "dog": 4})
    archive = tmp_path / "mine.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "mine", arcname="mine")
    cfg = _imagefolder(archive)
    sources.fetch(cfg, tmp_path / "raw")
    raw = sources.read(cfg, tmp_path / "raw")
    assert raw.class_names == ["cat", "dog"]
    assert all(str(p).startswith(str(tmp_path / "raw" / "images")) for p, _ in raw.samples["train"])


def test_truncated_user_archive(tmp_path, kit):
    _class_folders(tmp_path / "src", kit, {"cat": 20, "dog": 20})
    archive = tmp_path / "mine.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src", arcname="mine")
    archive.write_bytes(archive.read_bytes()[:-2000])
    with pytest.raises(download.ArchiveError, match="mine.tgz is truncated or corrupt"):
        sources.fetch(_imagefolder(archive), tmp_path / "raw")
    assert not (tmp_path / "raw" / "images").exists() and kit.leftovers(tmp_path) == []


def test_read_before_fetch_of_an_archive(tmp_path, kit):
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cat/a.png", b"")
    with pytest.raises(ValueError, match="is not unpacked in .*run the fetch step first"):
        sources.read(_imagefolder(archive), tmp_path / "raw")


@pytest.mark.parametrize(
    ("fractions", "message"),
    [({"train": 0.7, "val": 0.3}, "must give train, val and test"),
     ({"train": 0.5, "val": 0.0, "test": 0.5}, "need train > 0, val > 0"),
     ({"train": 0.5, "val": 0.3, "test": 0.3}, "must sum to 1")],
)
def test_bad_split_fractions(tmp_path, fractions, message):
    with pytest.raises(ValueError, match=f"datasets.mine: split_fractions {message}"):
        sources.check("mine", _imagefolder(tmp_path, split_fractions=fractions))


# --- CK+ ----------------------------------------------------------------------------------


def test_ckplus_zip_70_30_with_val_as_test(tmp_path, kit):
    src = _class_folders(tmp_path / "src", kit, EMOTIONS)
    archive = tmp_path / "CK+.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*.png")):
            zf.write(path, f"CK+48/{path.relative_to(src)}")
    cfg = _ckplus(archive)
    sources.check("ckplus", cfg)
    sources.fetch(cfg, tmp_path / "raw")
    outputs = {16: tmp_path / "16.npz", 24: tmp_path / "24.npz"}
    prepare_dataset("ckplus", cfg, tmp_path / "raw", outputs)
    data = load_splits(outputs[24])
    assert data.class_names == ["anger", "happy", "surprise"]
    assert np.bincount(data.y["train"]).tolist() == [7, 14, 5]
    assert np.bincount(data.y["val"]).tolist() == [3, 6, 2]
    assert data.x["train"].shape[1:] == (24, 24, 1)
    np.testing.assert_array_equal(data.x["test"], data.x["val"])


@pytest.mark.parametrize("path", [None, "/no/such/ckplus"])
def test_ckplus_missing_says_where_to_get_it(path):
    with pytest.raises(ValueError, match=r"datasets.ckplus: path .*jeffcohn.net/Resources.*<emotion>"):
        sources.check("ckplus", _ckplus(path))


def test_ckplus_wrong_layout(tmp_path, kit):
    root = tmp_path / "ck"
    root.mkdir()
    (root / "S005_001_00000011.png").write_bytes(_image(kit, np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"holds 0 class folder\(s\).*jeffcohn.*<emotion>"):
        sources.fetch(_ckplus(root), tmp_path / "raw")


def test_real_photographs_in_class_folders_are_learned(flowers_mirror, tmp_path):
    """The README's recipe learns real photographs: the five largest 102 Flowers classes
    from the mirror arranged as class folders, split by the default fractions, and one mid-sized network of
    its space (3 conv layers of 32 filters, 128 fc units) trained with its trainer at 16 px
    score far above chance (1/5) on the test split."""
    labels = scipy.io.loadmat(flowers_mirror / "imagelabels.mat")["labels"].ravel()
    largest = set(np.argsort(np.bincount(labels))[-5:].tolist())  # 184-258 images each
    root = tmp_path / "photos"
    with tarfile.open(flowers_mirror / "102flowers.tgz") as archive:
        for member in archive:
            label = int(labels[int(member.name[-9:-4]) - 1]) if member.isfile() else 0
            if label in largest:
                (root / f"flower{label}").mkdir(parents=True, exist_ok=True)
                (root / f"flower{label}" / Path(member.name).name).write_bytes(archive.extractfile(member).read())
    settings = compose(*RECIPE, f"datasets.imagefolder.path={root}")
    cfg = settings.datasets["imagefolder"]
    sources.fetch(cfg, tmp_path / "raw")
    prepare_dataset("imagefolder", cfg, tmp_path / "raw", {16: tmp_path / "16.npz"})
    data = TrainingData(load_splits(tmp_path / "16.npz"), torch.device("cpu"))
    assert data.n_classes == 5 and len(data.tensors["test"]) >= 150
    config = {"learning_rate": 0.01, "batch_size": 32, "l1": 1e-7, "l2": 1e-4, "filter_size": 3, "n_conv": 3,
              **{f"conv_filters_{i}": 32 for i in range(3)}, "n_fc": 1, "fc_units_0": 128}
    _, module = train(config, data, settings.trainer, seed=0)
    accuracy = evaluate(module, data.tensors["test"], 512, "accuracy", data.n_classes)
    assert accuracy >= 0.45, f"test accuracy {accuracy:.3f}"  # 0.828 here
