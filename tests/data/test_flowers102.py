"""102 Flowers end to end: download from the loopback server or a mirror, then prepare."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iishpo.data import download, sources
from iishpo.data.prepare import prepare_dataset
from iishpo.data.splits import load_splits
from iishpo.settings.config import compose_config

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


def _serve(server, release) -> None:
    server.files.update(release.files)


def _outputs(tmp_path: Path, *resolutions: int) -> dict[int, Path]:
    return {r: tmp_path / "prepared" / f"{r}.npz" for r in resolutions}


def test_download_and_prepare_follow_setid(server, flowers, tmp_path, kit):
    _serve(server, flowers)
    cfg = flowers.config(server.url)
    raw = tmp_path / "raw"
    sources.check("flowers102", cfg)
    sources.fetch(cfg, raw)
    outputs = _outputs(tmp_path, 8, 16)
    prepare_dataset("flowers102", cfg, raw, outputs)
    for r, path in outputs.items():
        data = load_splits(path)
        assert data.n_classes == 5 and data.resolution == r
        for split, ids in flowers.ids.items():
            assert data.x[split].shape == (len(ids), r, r, 3)
            np.testing.assert_array_equal(data.y[split], flowers.labels[ids - 1] - 1)
    all_labels = np.concatenate(list(load_splits(outputs[8]).y.values()))
    assert np.bincount(all_labels).tolist() == [6] * 5  # every class, as imagelabels.mat says
    assert kit.leftovers(tmp_path) == []
    # a second fetch finds everything verified and unpacked: nothing is requested again
    n_requests = len(server.requests)
    sources.fetch(cfg, raw)
    assert len(server.requests) == n_requests


def test_prepared_pixels_are_the_centre_crop_resized_with_lanczos(server, flowers, tmp_path):
    """Each prepared image, pixel for pixel, is its own source file (by setid's image id)
    cropped to the centred square and resized with Lanczos, computed here with Pillow."""
    _serve(server, flowers)
    cfg = flowers.config(server.url)
    sources.fetch(cfg, tmp_path / "raw")
    outputs = _outputs(tmp_path, 8, 16, flowers.side)
    prepare_dataset("flowers102", cfg, tmp_path / "raw", outputs)
    with tarfile.open(fileobj=io.BytesIO(flowers.files["102flowers.tgz"])) as tf:
        originals = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    width, height = flowers.side + 12, flowers.side
    box = (6, 0, 6 + height, height)  # (52 - 40) / 2 = 6 columns cut on each side
    for r, path in outputs.items():
        data = load_splits(path)
        for split, ids in flowers.ids.items():
            for row, image_id in enumerate(ids):
                with Image.open(io.BytesIO(originals[f"jpg/image_{image_id:05d}.jpg"])) as img:
                    assert img.size == (width, height)
                    square = img.convert("RGB").crop(box)
                want = square if r == flowers.side else square.resize((r, r), Image.Resampling.LANCZOS)
                np.testing.assert_array_equal(data.x[split][row], np.asarray(want),
                                              err_msg=f"{split} image {image_id} at {r} px")


def test_mirror_from_a_directory_and_a_file_url(flowers, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in flowers.files.items():
        (mirror / name).write_bytes(data)
    official = flowers.config("http://127.0.0.1:9/unused")  # never contacted
    checksums = {role: spec["checksum"] for role, spec in official["files"].items()}
    for i, base in enumerate([str(mirror), mirror.as_uri()]):
        cfg = {**official, "mirror": base, "mirror_checksums": checksums,
               "files": {role: {**spec, "checksum": "md5:" + "0" * 32}
                         for role, spec in official["files"].items()}}
        sources.fetch(cfg, tmp_path / f"raw{i}")
        raw = sources.read(cfg, tmp_path / f"raw{i}")
        assert [len(raw.samples[s]) for s in ("train", "val", "test")] == [10, 10, 10]


def test_mirror_without_its_checksums_fails_on_the_official_ones(flowers, tmp_path, kit):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in flowers.files.items():
        (mirror / name).write_bytes(data)
    cfg = flowers.config("http://127.0.0.1:9/unused", mirror=str(mirror))
    cfg["files"]["images"]["checksum"] = "md5:52808999861908f626f3c1f4e79d11fa"
    with pytest.raises(download.ChecksumError, match=r"102flowers.tgz .*expected md5 5280.*got "):
        sources.fetch(cfg, tmp_path / "raw")
    assert kit.leftovers(tmp_path) == [] and not (tmp_path / "raw" / "102flowers.tgz").exists()


def test_checksum_mismatch_from_the_server(server, flowers, tmp_path, kit):
    _serve(server, flowers)
    cfg = flowers.config(server.url)
    server.files["setid.mat"] = b"\0" + server.files["setid.mat"][1:]
    with pytest.raises(download.ChecksumError, match="checksum mismatch for setid.mat"):
        sources.fetch(cfg, tmp_path / "raw")
    assert not (tmp_path / "raw" / "setid.mat").exists() and kit.leftovers(tmp_path) == []


def test_resume_after_a_dropped_connection(server, flowers, tmp_path):
    _serve(server, flowers)
    cut = len(flowers.files["102flowers.tgz"]) // 3
    server.cut_after["102flowers.tgz"] = [cut]
    sources.fetch(flowers.config(server.url), tmp_path / "raw")
    assert ("102flowers.tgz", f"bytes={cut}-") in server.requests
    assert (tmp_path / "raw" / "102flowers" / "jpg" / "image_00030.jpg").is_file()


def test_unreachable_official_host_suggests_the_mirror(server, flowers, tmp_path, kit):
    server.status["102flowers.tgz"] = 503
    cfg = flowers.config(server.url)
    with pytest.raises(download.DownloadError,
                       match=rf"{server.url}/102flowers.tgz after 4 attempts.*datasets.flowers102.mirror"):
        sources.fetch(cfg, tmp_path / "raw")
    assert kit.leftovers(tmp_path) == []


def test_unreachable_mirror_names_it(flowers, tmp_path):
    cfg = flowers.config("http://127.0.0.1:9/unused", mirror=str(tmp_path / "no-such-dir"))
    with pytest.raises(download.DownloadError,
                       match=r"no-such-dir/102flowers.tgz.*Check datasets.flowers102.mirror"):
        sources.fetch(cfg, tmp_path / "raw")


def test_truncated_archive_with_a_matching_checksum(server, flowers, tmp_path, kit):
    tgz = flowers.files["102flowers.tgz"]
    flowers.files["102flowers.tgz"] = tgz[: len(tgz) // 2]
    _serve(server, flowers)
    with pytest.raises(download.ArchiveError, match="102flowers.tgz is truncated or corrupt"):
        sources.fetch(flowers.config(server.url), tmp_path / "raw")
    assert not (tmp_path / "raw" / "102flowers").exists() and kit.leftovers(tmp_path) == []


def test_archive_member_escaping_the_target(server, make_flowers, tmp_path, kit):
    release = make_flowers(images={"jpg/../../escaped.jpg": b"x"})
    _serve(server, release)
    with pytest.raises(download.ArchiveError, match="'jpg/../../escaped.jpg' would be written outside"):
        sources.fetch(release.config(server.url), tmp_path / "raw")
    assert not list(tmp_path.rglob("escaped.jpg"))
    assert not (tmp_path / "raw" / "102flowers").exists() and kit.leftovers(tmp_path) == []


def test_corrupt_image_is_named_and_nothing_is_written(server, make_flowers, tmp_path):
    release = make_flowers(images={"jpg/image_00007.jpg": b"\xff\xd8 not a jpeg"})
    _serve(server, release)
    cfg = release.config(server.url)
    sources.fetch(cfg, tmp_path / "raw")
    with pytest.raises(ValueError, match=r"cannot read image .*image_00007.jpg"):
        prepare_dataset("flowers102", cfg, tmp_path / "raw", _outputs(tmp_path, 8))
    assert not (tmp_path / "prepared").exists() or not list((tmp_path / "prepared").iterdir())


def test_resolution_larger_than_the_images(server, flowers, tmp_path):
    _serve(server, flowers)
    cfg = flowers.config(server.url)
    sources.fetch(cfg, tmp_path / "raw")
    with pytest.raises(ValueError, match=r"40 px on its shorter side, smaller than .* 64 px"):
        prepare_dataset("flowers102", cfg, tmp_path / "raw", _outputs(tmp_path, 16, 64))
    assert not (tmp_path / "prepared").exists() or not list((tmp_path / "prepared").iterdir())


def test_bad_config_is_rejected_at_load(flowers):
    cfg = flowers.config("http://x", mirror="ftp://host/dir")
    with pytest.raises(ValueError, match="datasets.flowers102: unsupported location 'ftp://host/dir'"):
        sources.check("flowers102", cfg)
    cfg = flowers.config("http://x", mirror_checksums={"jpg": "md5:" + "0" * 32})
    with pytest.raises(ValueError, match=r"mirror_checksums must map roles among \['images'"):
        sources.check("flowers102", cfg)


def test_every_dataset_config_composes():
    cfg = compose_config([], CONF)["datasets"]
    assert cfg["flowers102"]["url"].startswith("https://www.robots.ox.ac.uk/")
    for name in ("flowers102", "stl10"):
        sources.check(name, cfg[name])
    for name in ("ckplus", "imagefolder"):
        with pytest.raises(ValueError, match=f"datasets.{name}: path is not set"):
            sources.check(name, cfg[name])


def test_real_mirror_split_sizes(tmp_path, flowers_mirror):
    """The flowers-cpu study's data, prepared at 16 px: the official split and 102 classes."""
    cfg = compose_config(["study=flowers-cpu"], CONF)["datasets"]["flowers102"]
    cfg = {**cfg, "mirror": str(flowers_mirror)}
    sources.fetch(cfg, tmp_path / "raw")
    prepare_dataset("flowers102", cfg, tmp_path / "raw", {16: tmp_path / "16.npz"})
    data = load_splits(tmp_path / "16.npz")
    assert {s: len(data.y[s]) for s in data.y} == {"train": 1020, "val": 1020, "test": 6149}
    assert data.n_classes == 102 and data.x["train"].shape[1:] == (16, 16, 3)
    assert np.bincount(data.y["train"], minlength=102).tolist() == [10] * 102
