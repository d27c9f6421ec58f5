"""The command line's own behaviour: how a job's failure reads."""

from __future__ import annotations

import logging
import re
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from helpers import CONF
from iishpo.cli import main


def photos(root: Path) -> Path:
    """Two class folders of ten small images each, one of them not a readable PNG."""
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (20, 20), (20 * i, 100 if name == "dog" else 0, 0)).save(root / name / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def truncated_archive(tmp_path: Path) -> Path:
    """The same folders as a .tgz that lost its end."""
    archive = tmp_path / "mine.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(photos(tmp_path / "src"), arcname="mine")
    archive.write_bytes(archive.read_bytes()[:-300])
    return archive


@pytest.mark.parametrize(("source", "failing", "named"), [
    (lambda tmp: photos(tmp / "photos"), "prepare", r"cannot read image \S*dog/broken\.png"),
    (truncated_archive, "fetch", r"\S*mine\.tgz is truncated or corrupt"),
], ids=["unreadable image", "broken archive"])
def test_a_data_job_fails_in_one_line_naming_the_file_and_what_to_do(
    source, failing: str, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("IISHPO_CONF", str(CONF))
    overrides = ["study.datasets=[imagefolder]", f"datasets.imagefolder.path={source(tmp_path)}"]
    raw = ["--dataset", "imagefolder", "--raw-dir", str(tmp_path / "raw"), *overrides]
    commands = {"fetch": ["fetch", *raw], "prepare": ["prepare", *raw[:4], "--output", f"8={tmp_path / '8.npz'}", *raw[4:]]}
    if failing == "prepare":
        assert main(commands["fetch"]) == 0
    capsys.readouterr()
    with caplog.at_level(logging.ERROR, logger="iishpo"):
        assert main(commands[failing]) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"iishpo: {failing} imagefolder: .*{named}.* -- fix or remove that file \(or the data set's settings, "
        r"datasets\.imagefolder in conf/dataset/\), then run again; finished downloads are kept, the traceback is above",
        message,
    ), message
    assert [r.exc_info is not None for r in caplog.records] == [True]  # the traceback goes to the job's log
    assert not (tmp_path / "8.npz").exists()
