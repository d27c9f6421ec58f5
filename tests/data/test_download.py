"""fetch_file and unpack against the loopback server and hand-made hostile archives."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest

from iishpo.data import download

PAYLOAD = os.urandom(300_000)
MD5 = ("md5", hashlib.md5(PAYLOAD).hexdigest())


def test_fetch_over_http_verifies_and_renames(server, tmp_path, kit):
    server.files["blob.bin"] = PAYLOAD
    dest = download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert dest.read_bytes() == PAYLOAD
    assert kit.leftovers(tmp_path) == []
    # present and verified: not downloaded again
    download.fetch_file(f"{server.url}/blob.bin", dest, MD5)
    assert len(server.requests) == 1


def test_resumes_a_dropped_transfer_with_range(server, tmp_path):
    server.files["blob.bin"] = PAYLOAD
    server.cut_after["blob.bin"] = [100_000, 50_000]
    dest = download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("blob.bin", None), ("blob.bin", "bytes=100000-"),
                               ("blob.bin", "bytes=150000-")]


def test_restarts_when_the_server_ignores_range(server, tmp_path):
    server.files["blob.bin"] = PAYLOAD
    server.cut_after["blob.bin"] = [100_000]
    server.ranges = False
    dest = download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert dest.read_bytes() == PAYLOAD


def test_a_download_broken_in_one_run_resumes_in_the_next(server, tmp_path, kit):
    server.files["blob.bin"] = PAYLOAD
    # every attempt of the first run breaks: 100,000 bytes, then 10 more per retry
    server.cut_after["blob.bin"] = [100_000] + [10] * (download.RETRIES - 1)
    url = f"{server.url}/blob.bin"
    dest = tmp_path / "blob.bin"
    partial = tmp_path / ".blob.bin.partial"
    received = 100_000 + 10 * (download.RETRIES - 1)
    with pytest.raises(download.DownloadError, match=(
        rf"cannot download {re.escape(url)} after 4 attempts: .*; the {received} bytes received "
        rf"are kept in {re.escape(str(partial))} and the next run resumes from there\. Try a mirror"
    )):
        download.fetch_file(url, dest, MD5, hint="Try a mirror")
    assert not dest.exists() and partial.read_bytes() == PAYLOAD[:received]
    server.requests.clear()
    download.fetch_file(url, dest, MD5)
    assert server.requests == [("blob.bin", f"bytes={received}-")]  # only the rest
    assert dest.read_bytes() == PAYLOAD and kit.leftovers(tmp_path) == []


def test_an_interrupted_run_keeps_its_partial_file(server, tmp_path, monkeypatch):
    server.files["blob.bin"] = PAYLOAD
    copy = download._copy

    def interrupted(stream, out, total, name):
        out.write(stream.read(5000))
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_copy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert (tmp_path / ".blob.bin.partial").read_bytes() == PAYLOAD[:5000]
    assert not (tmp_path / "blob.bin").exists()
    monkeypatch.setattr(download, "_copy", copy)
    download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert server.requests[-1] == ("blob.bin", "bytes=5000-")
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_a_partial_file_restarts_when_the_server_ignores_range(server, tmp_path, kit):
    server.files["blob.bin"] = PAYLOAD
    server.ranges = False
    download.partial_of(tmp_path / "blob.bin").write_bytes(b"x" * 1000)  # not even a prefix
    dest = download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert server.requests == [("blob.bin", "bytes=1000-")]  # one answer: the whole file
    assert dest.read_bytes() == PAYLOAD and kit.leftovers(tmp_path) == []


def test_a_resumed_file_with_a_wrong_checksum_is_downloaded_whole(server, tmp_path, kit):
    server.files["blob.bin"] = PAYLOAD
    download.partial_of(tmp_path / "blob.bin").write_bytes(os.urandom(1000))  # another version
    dest = download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert server.requests == [("blob.bin", "bytes=1000-"), ("blob.bin", None)]
    assert dest.read_bytes() == PAYLOAD and kit.leftovers(tmp_path) == []


def test_a_complete_partial_file_is_verified_and_renamed(server, tmp_path, kit):
    """A run killed between the last byte and the rename: the server answers 416."""
    server.files["blob.bin"] = PAYLOAD
    download.partial_of(tmp_path / "blob.bin").write_bytes(PAYLOAD)
    dest = download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert server.requests == [("blob.bin", f"bytes={len(PAYLOAD)}-")]
    assert dest.read_bytes() == PAYLOAD and kit.leftovers(tmp_path) == []


def test_http_404_names_the_url_and_the_hint(server, tmp_path):
    url = f"{server.url}/missing.bin"
    with pytest.raises(download.DownloadError, match=f"{url}: HTTP 404.*Try a mirror"):
        download.fetch_file(url, tmp_path / "missing.bin", MD5, hint="Try a mirror")
    assert server.requests == [("missing.bin", None)]  # a 4xx is not retried
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_names_file_expected_and_got(server, tmp_path):
    server.files["blob.bin"] = PAYLOAD
    wrong = ("sha256", "0" * 64)
    got = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(download.ChecksumError,
                       match=f"blob.bin .*expected sha256 {'0' * 64}, got {got}"):
        download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", wrong)
    assert list(tmp_path.iterdir()) == []


def test_replaces_a_present_file_with_a_wrong_checksum(server, tmp_path):
    server.files["blob.bin"] = PAYLOAD
    (tmp_path / "blob.bin").write_bytes(b"stale")
    download.fetch_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", MD5)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_local_directory_and_file_url(tmp_path):
    src = tmp_path / "mirror dir"
    src.mkdir()
    (src / "blob.bin").write_bytes(PAYLOAD)
    for i, base in enumerate([str(src), src.as_uri()]):
        dest = download.fetch_file(download.join(base, "blob.bin"), tmp_path / f"out{i}" / "b", MD5)
        assert dest.read_bytes() == PAYLOAD


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(download.DownloadError, match=r"cannot read .*nowhere.*Check the mirror"):
        download.fetch_file(str(tmp_path / "nowhere"), tmp_path / "out" / "b", MD5,
                            hint="Check the mirror")
    assert list((tmp_path / "out").iterdir()) == []


def test_unreachable_host(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/blob.bin"
    with pytest.raises(download.DownloadError, match=f"cannot download {url} after 4 attempts"):
        download.fetch_file(url, tmp_path / "blob.bin", MD5)
    assert list(tmp_path.iterdir()) == []


def test_progress_is_logged_for_large_files_only(server, tmp_path, monkeypatch, caplog):
    server.files["blob.bin"] = PAYLOAD
    caplog.set_level(logging.INFO, logger="iishpo.data.download")
    download.fetch_file(f"{server.url}/blob.bin", tmp_path / "a", MD5)
    assert not [r for r in caplog.messages if "%" in r]
    monkeypatch.setattr(download, "PROGRESS_MIN_BYTES", 1000)
    monkeypatch.setattr(download, "CHUNK", 10_000)
    download.fetch_file(f"{server.url}/blob.bin", tmp_path / "b", MD5)
    progress = [r for r in caplog.messages if "%" in r]
    assert 9 <= len(progress) <= 11 and progress[-1].startswith("b: 100%")


@pytest.mark.parametrize("spec", ["md5:xyz", "crc32:00", "sha256:" + "0" * 63, None])
def test_bad_checksum_spec(spec):
    with pytest.raises(ValueError, match="md5|sha256"):
        download.parse_checksum(spec, "files.images.checksum")


# --- archives ---------------------------------------------------------------------------


def _tar(path: Path, *infos: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in infos:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def test_unpack_tar_once_per_stamp(tmp_path, kit):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(kit.tar_bytes({"top/x.txt": b"x", "top/y.txt": b"y"}))
    target = download.unpack(archive, tmp_path / "out", "v1")
    assert (target / "top" / "x.txt").read_bytes() == b"x"
    (target / "top" / "x.txt").write_bytes(b"edited")
    download.unpack(archive, target, "v1")  # same stamp: left alone
    assert (target / "top" / "x.txt").read_bytes() == b"edited"
    download.unpack(archive, target, "v2")  # new stamp: replaced
    assert (target / "top" / "x.txt").read_bytes() == b"x"
    assert kit.leftovers(tmp_path) == []


def test_unpack_only_some_members_and_require_them(tmp_path, kit):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(kit.tar_bytes({"d/keep": b"k", "d/huge": b"h"}))
    target = download.unpack(archive, tmp_path / "out", "s", members=["d/keep"])
    assert (target / "d" / "keep").is_file() and not (target / "d" / "huge").exists()
    with pytest.raises(download.ArchiveError, match=r"lacks \['d/other'\]"):
        download.unpack(archive, tmp_path / "out2", "s", members=["d/keep", "d/other"])
    assert not (tmp_path / "out2").exists() and kit.leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ((tarfile.TarInfo("../evil.txt"), b"evil"), "'../evil.txt' would be written outside"),
        ((tarfile.TarInfo("a/../../evil.txt"), b"evil"), "would be written outside"),
        ((tarfile.TarInfo("/tmp/evil.txt"), b"evil"), "'/tmp/evil.txt' would be written outside"),
        (_link("a/link", "../../evil.txt", tarfile.SYMTYPE), "symlink to '../../evil.txt' outside"),
        (_link("a/link", "/etc/passwd", tarfile.SYMTYPE), "symlink to '/etc/passwd' outside"),
        (_link("a/hard", "../evil.txt", tarfile.LNKTYPE), "hard link to '../evil.txt' outside"),
    ],
)
def test_unpack_rejects_members_escaping_the_target(tmp_path, kit, member, message):
    archive = _tar(tmp_path / "a.tgz", (tarfile.TarInfo("a/ok.txt"), b"ok"), member)
    with pytest.raises(download.ArchiveError, match=message):
        download.unpack(archive, tmp_path / "sub" / "out", "s")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "sub" / "out").exists()
    assert kit.leftovers(tmp_path) == []


def test_unpack_allows_links_inside_the_target(tmp_path):
    archive = _tar(tmp_path / "a.tgz", (tarfile.TarInfo("a/ok.txt"), b"ok"),
                   _link("a/link", "ok.txt", tarfile.SYMTYPE))
    target = download.unpack(archive, tmp_path / "out", "s")
    assert (target / "a" / "link").read_bytes() == b"ok"


def test_unpack_detects_a_truncated_archive(tmp_path, kit):
    data = kit.tar_bytes({f"d/{i}.bin": os.urandom(20_000) for i in range(5)})
    archive = tmp_path / "a.tgz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(download.ArchiveError, match="a.tgz is truncated or corrupt"):
        download.unpack(archive, tmp_path / "out", "s")
    assert not (tmp_path / "out").exists() and kit.leftovers(tmp_path) == []


def test_unpack_rejects_a_file_that_is_no_archive(tmp_path):
    archive = tmp_path / "a.tgz"
    archive.write_bytes(b"<html>not found</html>")
    with pytest.raises(download.ArchiveError, match="not a readable tar or zip archive"):
        download.unpack(archive, tmp_path / "out", "s")


def test_unpack_zip_and_reject_escaping_zip_member(tmp_path, kit):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("d/x.txt", "x")
    assert (download.unpack(good, tmp_path / "out", "s") / "d" / "x.txt").read_text() == "x"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("d/x.txt", "x")
        zf.writestr("../evil.txt", "evil")
    with pytest.raises(download.ArchiveError, match="'../evil.txt' would be written outside"):
        download.unpack(bad, tmp_path / "out2", "s")
    assert not (tmp_path / "out2").exists() and kit.leftovers(tmp_path) == []


def test_temporaries_of_a_killed_unpack_are_removed(tmp_path, kit):
    (tmp_path / ".out.abc123.part").mkdir()
    (tmp_path / ".out.xyz789.old").mkdir()
    archive = tmp_path / "a.tgz"
    archive.write_bytes(kit.tar_bytes({"x.txt": b"x"}))
    download.unpack(archive, tmp_path / "out", "s")
    assert (tmp_path / "out" / "x.txt").read_bytes() == b"x"
    assert kit.leftovers(tmp_path) == []
