"""Download and unpack data set files so that a failure never leaves a half-written file.

A file comes from a *base location*: a local directory, a ``file://`` URL or an
``http(s)://`` URL. It is written to a partial file next to its destination
(``.<name>.partial``), its checksum (md5 or sha256) is verified, and only then is it
renamed into place. A broken HTTP transfer is retried and resumed with a ``Range`` request
where the server allows it; when every retry fails, the partial file stays, and the next
run resumes it (a server that ignores ``Range`` sends the whole file again, which replaces
it). A resumed file whose checksum is wrong is downloaded whole once more.
Archives (tar in any compression, or zip) are unpacked member by member into a temporary
directory after each member has been checked not to escape it, then renamed into place.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlparse
from urllib.request import Request, url2pathname, urlopen

log = logging.getLogger(__name__)

ALGORITHMS = ("md5", "sha256")
#: attempts per file before a broken transfer is given up; seconds waited before retry n
#: are ``RETRY_DELAY_S * n``
RETRIES = 4
RETRY_DELAY_S = 1.0
TIMEOUT_S = 60.0
CHUNK = 1 << 20
#: files smaller than this download without progress messages
PROGRESS_MIN_BYTES = 8 << 20
#: name of the file that marks a completely unpacked archive (holds the archive's stamp)
STAMP = ".unpacked"
#: suffix of the file a download is written to until it is verified
PARTIAL = ".partial"

Checksum = tuple[str, str]


class DownloadError(OSError):
    """A file could not be fetched: the message names the URL and what to try."""


class ChecksumError(ValueError):
    """A fetched file is not the expected one: the message names file, expected and got."""


class ArchiveError(ValueError):
    """An archive is corrupt, truncated, lacks a member, or has a member escaping its target."""


def parse_checksum(spec: Any, where: str) -> Checksum:
    """``"md5:<hex>"`` or ``"sha256:<hex>"`` as ``(algorithm, lowercase hex)``."""
    algorithm, _, digest = str(spec).partition(":")
    if not isinstance(spec, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"{where} must be 'md5:<hex>' or 'sha256:<hex>', got {spec!r}")
    digest = digest.lower()
    length = hashlib.new(algorithm).digest_size * 2
    if len(digest) != length or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{where}: the {algorithm} must be {length} hex digits, got {digest!r}")
    return algorithm, digest


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def stamp_of(path: Path) -> str:
    """Identifies a file's version cheaply: a replaced or edited file gets a new stamp."""
    stat = path.stat()
    return f"{path.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def join(base: str, name: str) -> str:
    """The location of file ``name`` under ``base`` (URL or local directory)."""
    if is_url(base):
        return base.rstrip("/") + "/" + quote(name)
    return str(Path(base) / name)


def is_url(location: str) -> bool:
    """``location`` is a ``file://`` or ``http(s)://`` URL, not a plain path."""
    return urlparse(location).scheme in ("http", "https", "file")


def _local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if len(parsed.scheme) > 1:
        raise ValueError(f"unsupported location {url!r}: use a local path, file://, http:// or https://")
    return Path(url)  # a plain path (a one-letter "scheme" is a Windows drive)


def _content_range(value: str | None) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    try:
        unit, spec = (value or "").split(" ", 1)
        span, total = spec.split("/", 1)
        if unit != "bytes":
            raise ValueError(unit)
        return int(span.split("-", 1)[0]), None if total == "*" else int(total)
    except ValueError as err:
        raise http.client.HTTPException(f"malformed Content-Range {value!r}") from err


@contextmanager
def _open(url: str, offset: int) -> Iterator[tuple[BinaryIO, int | None, int]]:
    """Open ``url`` at ``offset`` if the source allows: (stream, total size, served offset)."""
    local = _local_path(url)
    if local is not None:
        with local.open("rb") as fh:
            fh.seek(offset)
            yield fh, local.stat().st_size, offset
        return
    headers = {"User-Agent": "iishpo", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with urlopen(Request(url, headers=headers), timeout=TIMEOUT_S) as resp:
        if offset and resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            yield resp, total, start
            return
        length = resp.headers.get("Content-Length")
        yield resp, int(length) if length else None, 0


def _copy(stream: BinaryIO, out: BinaryIO, total: int | None, name: str) -> None:
    """Copy until end of stream, logging progress every tenth of a large file."""
    size = total or 0
    step = size // 10 if size >= PROGRESS_MIN_BYTES else 0
    next_mark = (out.tell() // step + 1) * step if step else 0
    while block := stream.read(CHUNK):
        out.write(block)
        if step and out.tell() >= next_mark:
            log.info("%s: %d%% (%.1f of %.1f MB)", name, 100 * out.tell() // size,
                     out.tell() / 1e6, size / 1e6)
            next_mark += step
    if total is not None and out.tell() < total:
        raise ConnectionError(f"connection closed after {out.tell()} of {total} bytes")


def _transfer(url: str, out: BinaryIO, name: str, hint: str) -> None:
    """Fill ``out`` with the bytes at ``url`` from ``out.tell()`` on, retrying and resuming."""
    local = _local_path(url) is not None
    for attempt in range(1, RETRIES + 1):
        try:
            with _open(url, out.tell()) as (stream, total, start):
                out.seek(start)
                out.truncate()
                _copy(stream, out, total, name)
            return
        except HTTPError as err:
            if err.code == 416 and out.tell():
                # nothing lies beyond what ``out`` holds: the checksum tells if it is whole
                log.info("%s: the server has no bytes after %d; verifying them", name, out.tell())
                return
            if err.code < 500:
                raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}. {hint}") from err
            error: Exception = err
        except (OSError, http.client.HTTPException) as err:
            if local:
                raise DownloadError(f"cannot read {url}: {err}. {hint}") from err
            error = err
        if attempt < RETRIES:
            log.warning("%s: transfer from %s broken at %d bytes (%s); retry %d of %d",
                        name, url, out.tell(), error, attempt, RETRIES - 1)
            time.sleep(RETRY_DELAY_S * attempt)
    reason = error.reason if isinstance(error, URLError) else error
    raise DownloadError(f"cannot download {url} after {RETRIES} attempts: {reason}; the "
                        f"{out.tell()} bytes received are kept in {out.name} and the next run "
                        f"resumes from there. {hint}")


def _remove_stale(dest: Path) -> None:
    """Delete temporaries that a killed run left next to ``dest`` (a run is one per target)."""
    for stale in [*dest.parent.glob(f".{dest.name}.*.part"), *dest.parent.glob(f".{dest.name}.*.old")]:
        log.warning("removing %s, left by an interrupted run", stale)
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()


def partial_of(dest: Path) -> Path:
    """Where ``dest`` is downloaded to until verified (hidden, next to it)."""
    return dest.with_name(f".{dest.name}{PARTIAL}")


def _download(url: str, partial: Path, name: str, hint: str) -> int:
    """Append the rest of ``url`` to ``partial``; return the bytes it already held.

    On failure ``partial`` keeps what arrived (an empty one is removed).
    """
    partial.touch()
    try:
        with partial.open("r+b") as out:
            held = out.seek(0, os.SEEK_END)
            if held:
                log.info("%s: resuming %s after the %d bytes an earlier run left", name, url, held)
            else:
                log.info("%s: fetching %s", name, url)
            _transfer(url, out, name, hint)
    except BaseException:
        if partial.stat().st_size == 0:
            partial.unlink()
        raise
    return held


def fetch_file(url: str, dest: Path, checksum: Checksum, hint: str = "") -> Path:
    """Make ``dest`` hold the verified file at ``url`` (kept as is if already verified).

    ``hint`` ends the error message of a failed download (e.g. which mirror setting to use).
    A transfer that breaks leaves :func:`partial_of` ``(dest)`` for the next call to resume;
    ``dest`` itself only ever holds a verified file.
    """
    algorithm, expected = checksum
    if dest.is_file():
        if file_digest(dest, algorithm) == expected:
            log.info("%s: present, %s verified", dest, algorithm)
            return dest
        log.warning("%s: present but its %s differs from %s; downloading again", dest, algorithm, expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_of(dest)
    resumed = _download(url, partial, dest.name, hint)
    got = file_digest(partial, algorithm)
    if got != expected and resumed:
        log.warning("%s: %s %s after resuming an earlier run's %d bytes (from another version "
                    "of the file?); downloading it whole", dest.name, algorithm, got, resumed)
        partial.unlink()
        _download(url, partial, dest.name, hint)
        got = file_digest(partial, algorithm)
    if got != expected:
        partial.unlink()
        raise ChecksumError(
            f"checksum mismatch for {dest.name} from {url}: expected {algorithm} {expected}, "
            f"got {got}; the download was deleted. A mirror whose files differ from the "
            "official ones needs its own checksums (mirror_checksums)"
        )
    os.replace(partial, dest)
    return dest


# --- archives ---------------------------------------------------------------------------


def _escapes(name: str) -> bool:
    path = posixpath.normpath(name.replace("\\", "/"))
    return path.startswith(("/", "../")) or path == ".."


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    where = f"{archive}: member {member.name!r}"
    if _escapes(member.name):
        raise ArchiveError(f"{where} would be written outside the target directory; refusing to unpack")
    if member.issym():
        link = posixpath.join(posixpath.dirname(member.name), member.linkname)
        if member.linkname.startswith("/") or _escapes(link):
            raise ArchiveError(f"{where} is a symlink to {member.linkname!r} outside the target "
                               "directory; refusing to unpack")
    elif member.islnk():
        if _escapes(member.linkname):
            raise ArchiveError(f"{where} is a hard link to {member.linkname!r} outside the target "
                               "directory; refusing to unpack")
    elif not (member.isfile() or member.isdir()):
        raise ArchiveError(f"{where} is a device or fifo; refusing to unpack")


def _unpack_tar(archive: Path, into: Path, wanted: Collection[str] | None) -> set[str]:
    found = set()
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            _check_tar_member(member, archive)
            if wanted is None or member.name in wanted:
                tf.extract(member, into, filter="data")
                found.add(member.name)
    return found


def _unpack_zip(archive: Path, into: Path, wanted: Collection[str] | None) -> set[str]:
    found = set()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if _escapes(info.filename):
                raise ArchiveError(f"{archive}: member {info.filename!r} would be written outside "
                                   "the target directory; refusing to unpack")
            if wanted is None or info.filename in wanted:
                zf.extract(info, into)
                found.add(info.filename)
    return found


def unpack(archive: Path, target: Path, stamp: str, members: Collection[str] | None = None) -> Path:
    """Unpack ``archive`` (tar or zip) into ``target`` unless it already holds ``stamp``.

    ``stamp`` identifies the archive (see :func:`stamp_of`): a target unpacked from another
    archive, or left by an interrupted run, is replaced. ``members`` restricts unpacking to these member names, all
    of which must be present. Nothing half-unpacked ever sits at ``target``.
    """
    marker = target / STAMP
    if marker.is_file() and marker.read_text() == stamp:
        return target
    if zipfile.is_zipfile(archive):
        unpacker = _unpack_zip
    elif tarfile.is_tarfile(archive):
        unpacker = _unpack_tar
    else:
        raise ArchiveError(f"{archive} is not a readable tar or zip archive (truncated or corrupt?)")
    log.info("unpacking %s into %s", archive, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    try:
        try:
            found = unpacker(archive, tmp, members)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:
            raise ArchiveError(f"{archive} is truncated or corrupt: {err}") from err
        missing = sorted(set(members or ()) - found)
        if missing:
            raise ArchiveError(f"{archive} lacks {missing}; is it the right archive?")
        (tmp / STAMP).write_text(stamp)
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            target.rename(old / target.name)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --- data sets downloaded from a fixed list of files -------------------------------------

#: the configuration key of a local mirror (see :mod:`iishpo.data.paths`)
LOCATIONS = ("mirror",)


def check_remote(cfg: Mapping[str, Any]) -> None:
    """Validate ``url``, ``files`` (role -> {name, checksum}), ``mirror``, ``mirror_checksums``."""
    if not isinstance(cfg.get("url"), str) or not cfg["url"]:
        raise ValueError(f"url must be the base URL of the official files, got {cfg.get('url')!r}")
    files = cfg.get("files")
    if not isinstance(files, Mapping) or not files:
        raise ValueError(f"files must map a role to {{name, checksum}}, got {files!r}")
    for role, spec in files.items():
        if not isinstance(spec, Mapping) or set(spec) != {"name", "checksum"}:
            raise ValueError(f"files.{role} must be {{name, checksum}}, got {spec!r}")
        parse_checksum(spec["checksum"], f"files.{role}.checksum")
    mirror = cfg.get("mirror")
    if mirror is not None and (not isinstance(mirror, str) or not mirror):
        raise ValueError(f"mirror must be null, a directory or a file:// or http(s):// URL, got {mirror!r}")
    if mirror is not None:
        _local_path(mirror)
    overrides = cfg.get("mirror_checksums") or {}
    if not isinstance(overrides, Mapping) or not set(overrides) <= set(files):
        raise ValueError(f"mirror_checksums must map roles among {sorted(files)} to "
                         f"'md5:<hex>' or 'sha256:<hex>', got {overrides!r}")
    for role, spec in overrides.items():
        parse_checksum(spec, f"mirror_checksums.{role}")


def fetch_remote(cfg: Mapping[str, Any], raw_dir: Path) -> dict[str, Path]:
    """Fetch every file of ``cfg['files']`` into ``raw_dir``, from ``mirror`` if set.

    A mirror's file is checked against ``mirror_checksums[role]`` when given, else against
    the official checksum (a byte-identical copy needs no entry).
    """
    check_remote(cfg)
    mirror = cfg.get("mirror")
    overrides = cfg.get("mirror_checksums") or {}
    names = [spec["name"] for spec in cfg["files"].values()]
    key = f"datasets.{cfg['kind']}.mirror"
    if mirror is None:
        hint = (f"If this host is unreachable, set {key} to a directory or a file:// or http(s):// "
                f"URL holding {names} (and mirror_checksums if they differ from the official files)")
    else:
        hint = f"Check {key} (now {mirror!r}): it must hold {names}"
    paths = {}
    for role, spec in cfg["files"].items():
        checksum = overrides[role] if mirror and role in overrides else spec["checksum"]
        url = join(mirror or cfg["url"], spec["name"])
        paths[role] = fetch_file(url, raw_dir / spec["name"], parse_checksum(checksum, role), hint)
    return paths
