"""Relative paths of the configuration resolve against paths.root, wherever the process runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iishpo.data import sources
from iishpo.data.paths import ROOT_ENV, resolve_paths
from iishpo.settings.config import compose_config

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


def _resolved(*overrides: str) -> dict:
    return resolve_paths(compose_config(list(overrides), CONF), CONF)


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs from a directory that is not the repository root."""
    cwd = tmp_path / "somewhere" / "else"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(ROOT_ENV, raising=False)
    return cwd


def test_default_root_is_the_directory_holding_conf():
    paths = _resolved()["paths"]
    assert paths == {"root": str(REPO), "raw": str(REPO / "data" / "raw"),
                     "prepared": str(REPO / "data" / "prepared"), "results": str(REPO / "results")}


def test_root_from_the_environment_or_an_override(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "scratch"))
    assert _resolved()["paths"]["results"] == str(tmp_path / "scratch" / "results")
    monkeypatch.setenv(ROOT_ENV, "runs")  # relative: to the directory holding conf/
    assert _resolved()["paths"]["raw"] == str(REPO / "runs" / "data" / "raw")
    override = _resolved(f"paths.root={tmp_path / 'other'}", f"paths.results={tmp_path / 'abs'}")
    assert override["paths"]["prepared"] == str(tmp_path / "other" / "data" / "prepared")
    assert override["paths"]["results"] == str(tmp_path / "abs")  # absolute stays as given


def test_dataset_locations_resolve_and_urls_stay(tmp_path):
    cfg = _resolved(f"paths.root={tmp_path}", "datasets.flowers102.mirror=mirrors/flowers",
                    "datasets.stl10.mirror='https://example.org/stl10'",
                    "datasets.imagefolder.path='~/images'", "datasets.ckplus.path='ck/CK+48.zip'")
    datasets = cfg["datasets"]
    assert datasets["flowers102"]["mirror"] == str(tmp_path / "mirrors" / "flowers")
    assert datasets["stl10"]["mirror"] == "https://example.org/stl10"
    assert datasets["imagefolder"]["path"] == str(Path.home() / "images")
    assert datasets["ckplus"]["path"] == str(tmp_path / "ck" / "CK+48.zip")
    assert datasets["synthetic"] == compose_config([], CONF)["datasets"]["synthetic"]
    file_url = (tmp_path / "m").as_uri()
    assert _resolved(f"datasets.stl10.mirror='{file_url}'")["datasets"]["stl10"]["mirror"] == file_url


@pytest.mark.parametrize("root", ["5", "''"])
def test_bad_root(root):
    with pytest.raises(ValueError, match=r"paths.root must be null .* or a directory, got"):
        _resolved(f"paths.root={root}")


def _mirror(directory: Path, flowers) -> list[str]:
    """Put the miniature release in ``directory``; overrides that accept its checksums."""
    directory.mkdir(parents=True)
    for name, data in flowers.files.items():
        (directory / name).write_bytes(data)
    official = flowers.config("unused")["files"]
    return [f"+datasets.flowers102.mirror_checksums.{role}={spec['checksum']}"
            for role, spec in official.items()]


def test_relative_mirror_is_found_from_another_working_directory(tmp_path, flowers, _elsewhere):
    checksums = _mirror(tmp_path / "mirror", flowers)
    relative = os.path.relpath(tmp_path / "mirror", REPO)  # relative to the repository root
    assert not (_elsewhere / relative).exists()  # ... and not to the working directory
    cfg = _resolved(f"datasets.flowers102.mirror={relative}", *checksums)["datasets"]["flowers102"]
    sources.fetch(cfg, tmp_path / "raw")
    raw = sources.read(cfg, tmp_path / "raw")
    assert [len(raw.samples[s]) for s in ("train", "val", "test")] == [10, 10, 10]


def test_relative_mirror_under_a_configured_root(tmp_path, flowers, monkeypatch):
    checksums = _mirror(tmp_path / "site" / "mirrors" / "flowers", flowers)
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "site"))
    cfg = _resolved("datasets.flowers102.mirror=mirrors/flowers", *checksums)
    sources.fetch(cfg["datasets"]["flowers102"], Path(cfg["paths"]["raw"]) / "flowers102")
    assert (tmp_path / "site" / "data" / "raw" / "flowers102" / "setid.mat").is_file()
