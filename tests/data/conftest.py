"""A loopback HTTP server and miniature archives in the exact upstream formats.

The server (127.0.0.1, random port, one thread per request) answers ``Range`` requests
with 206 (416 when the range starts at or after the end), and can be told to cut a transfer after some bytes or to answer with an error
status, so the real download code runs against it end to end.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import scipy.io
from PIL import Image

from iishpo.data import download


@dataclass
class Server:
    """What the loopback server serves; tests change these fields between requests."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    #: name -> byte counts after which successive transfers of it are cut
    cut_after: dict[str, list[int]] = field(default_factory=dict)
    #: name -> HTTP status to answer instead of the file
    status: dict[str, int] = field(default_factory=dict)
    ranges: bool = True
    #: (name, Range header or None) of every request, in order
    requests: list[tuple[str, str | None]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:  # http.server's naming
        state: Server = self.server.state
        name = self.path.lstrip("/")
        header = self.headers.get("Range")
        state.requests.append((name, header))
        if name in state.status or name not in state.files:
            self.send_error(state.status.get(name, 404))
            return
        data, start = state.files[name], 0
        if header and state.ranges:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):  # as Apache and nginx answer
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cuts = state.cut_after.get(name)
        if cuts:
            self.wfile.write(body[: cuts.pop(0)])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = Server(url=f"http://127.0.0.1:{httpd.server_address[1]}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd.state  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    """A tar archive of regular files (with their parent directory entries first)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for folder in sorted({n.rsplit("/", 1)[0] for n in members if "/" in n and ".." not in n}):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def mat_bytes(variables: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables)
    return buf.getvalue()


@dataclass
class Flowers:
    """A miniature 102 Flowers release: file name -> bytes, and what its split should be."""

    files: dict[str, bytes]
    labels: np.ndarray            # 1-based, one per image
    ids: dict[str, np.ndarray]    # split -> 1-based image ids
    side: int                     # shorter side of every image (px)

    def config(self, url: str, **extra: Any) -> dict[str, Any]:
        """The flowers102 data set config with this release's checksums as the official ones."""
        roles = {"images": "102flowers.tgz", "labels": "imagelabels.mat", "setid": "setid.mat"}
        return {
            "kind": "flowers102", "color": "rgb", "native_resolution": None,
            "test_metric": "mean_class_accuracy", "url": url, "mirror": None,
            "mirror_checksums": {},
            "files": {r: {"name": n, "checksum": md5(self.files[n])} for r, n in roles.items()},
            **extra,
        }


def flowers_release(
    n_classes: int = 5, per_split: int = 10, images: dict[str, bytes] | None = None
) -> Flowers:
    """``images`` replaces archive members (e.g. a corrupt JPEG or an escaping member)."""
    rng = np.random.default_rng(0)
    n = 3 * per_split
    labels = (np.arange(n) % n_classes + 1).astype(np.uint8)
    order = rng.permutation(n) + 1
    ids = {"train": order[:per_split], "val": order[per_split:2 * per_split],
           "test": order[2 * per_split:]}
    side = 40
    members = {
        f"jpg/image_{i:05d}.jpg": encode(rng.integers(0, 256, (side, side + 12, 3), np.uint8), "JPEG")
        for i in range(1, n + 1)
    }
    members.update(images or {})
    files = {
        "102flowers.tgz": tar_bytes(members),
        "imagelabels.mat": mat_bytes({"labels": labels[None, :]}),
        "setid.mat": mat_bytes({"trnid": ids["train"][None, :].astype(np.uint16),
                                "valid": ids["val"][None, :].astype(np.uint16),
                                "tstid": ids["test"][None, :].astype(np.uint16)}),
    }
    return Flowers(files, labels, ids, side)


@pytest.fixture
def flowers() -> Flowers:
    return flowers_release()


@pytest.fixture
def make_flowers() -> Any:
    return flowers_release


@dataclass
class STL10:
    """A miniature ``stl10_binary.tar.gz`` and the upright images it encodes."""

    archive: bytes
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    folds: list[np.ndarray]
    class_names: list[str]

    def config(self, url: str) -> dict[str, Any]:
        return {
            "kind": "stl10", "color": "gray", "native_resolution": 96, "test_metric": "accuracy",
            "url": url, "mirror": None, "mirror_checksums": {},
            "files": {"archive": {"name": "stl10_binary.tar.gz", "checksum": md5(self.archive)}},
        }


@pytest.fixture
def stl10() -> STL10:
    rng = np.random.default_rng(1)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    x_train = rng.integers(0, 256, (20, 96, 96, 3), np.uint8)
    x_test = rng.integers(0, 256, (12, 96, 96, 3), np.uint8)
    y_train, y_test = np.arange(20) % 10, np.arange(12) % 10
    folds = [np.sort(rng.choice(20, 4, replace=False)) for _ in range(10)]

    def binary(x: np.ndarray) -> bytes:  # upstream layout: per image C x W x H (column-major)
        return np.ascontiguousarray(x.transpose(0, 3, 2, 1)).tobytes()

    members = {
        "stl10_binary/class_names.txt": "\n".join(names).encode() + b"\n",
        "stl10_binary/fold_indices.txt": b"".join(
            " ".join(map(str, f)).encode() + b" \n" for f in folds),
        "stl10_binary/test_X.bin": binary(x_test),
        "stl10_binary/test_y.bin": (y_test + 1).astype(np.uint8).tobytes(),
        "stl10_binary/train_X.bin": binary(x_train),
        "stl10_binary/train_y.bin": (y_train + 1).astype(np.uint8).tobytes(),
        "stl10_binary/unlabeled_X.bin": binary(x_test[:2]),
    }
    return STL10(tar_bytes(members), x_train, y_train, x_test, y_test, folds, names)


def leftovers(directory: Path) -> list[str]:
    """Temporary or partial files or folders a step may have left in ``directory``."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.rglob("*")
                  if p.name.endswith((".part", ".old", ".tmp", download.PARTIAL)))


@pytest.fixture
def kit() -> SimpleNamespace:
    """Helpers for building test data (conftest modules are not meant to be imported)."""
    return SimpleNamespace(md5=md5, tar_bytes=tar_bytes, encode=encode, leftovers=leftovers)


@pytest.fixture
def flowers_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real 102 Flowers mirror the flowers-cpu study reads (relative to paths.root, so
    found from any working directory); the test skips, naming the path, where it is missing."""
    from iishpo.data.paths import ROOT_ENV, resolve_paths
    from iishpo.settings.config import compose_config

    conf = Path(__file__).resolve().parents[2] / "conf"
    monkeypatch.chdir(tmp_path)  # the study's relative mirror path does not depend on this
    cfg = resolve_paths(compose_config(["study=flowers-cpu"], conf), conf)
    mirror = Path(cfg["datasets"]["flowers102"]["mirror"])
    if not (mirror / "102flowers.tgz").is_file():
        pytest.skip(f"real 102 Flowers mirror not found: no {mirror / '102flowers.tgz'} (the "
                    f"flowers-cpu study's mirror, relative to paths.root {cfg['paths']['root']}; "
                    f"set {ROOT_ENV} to a directory where it is found to run this test)")
    return mirror
