"""Why downloads are not pooch's: a link that breaks every transfer part-way.

Serves a random file from a loopback HTTP server that closes every response after
``--cut-mb`` MB (answering ``Range`` requests, as the upstream servers do) and fetches it
with the project's downloader (``iishpo.data.download.fetch_file``: resumes a broken
transfer from where it stopped) and with pooch (``Pooch.fetch`` with as many retries,
each starting the file anew). Prints, for each, whether the verified file arrived, the
requests made and the bytes the server sent, side by side in one run.

    .venv/bin/python benchmarks/download_resume.py [--size-mb 20] [--cut-mb 6]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pooch

from iishpo.data import download


class CuttingServer(ThreadingHTTPServer):
    """Serves ``payload`` at every path, each response cut after ``cut`` bytes."""

    def __init__(self, payload: bytes, cut: int) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.payload, self.cut = payload, cut
        self.requests, self.sent = 0, 0


class Handler(BaseHTTPRequestHandler):
    server: CuttingServer

    def do_GET(self) -> None:  # http.server's naming
        served = self.server
        start = int(self.headers.get("Range", "bytes=0-").removeprefix("bytes=").split("-")[0])
        body = served.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(served.payload) - 1}/{len(served.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        chunk = body[: served.cut]
        served.requests += 1
        served.sent += len(chunk)
        self.wfile.write(chunk)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        """Quiet: the counts are the output."""


def attempt(name: str, fetch: object, server: CuttingServer, size: int) -> None:
    """Run ``fetch`` (a callable returning the fetched path) and print what it cost."""
    server.requests = server.sent = 0
    try:
        path = fetch()  # type: ignore[operator]
        outcome = "verified file" if Path(path).stat().st_size == size else "wrong size"
    except Exception as err:  # noqa: BLE001 - whatever the library raises once it gives up
        outcome = f"failed ({type(err).__name__})"
    print(f"{name:>8}: {outcome:<28} {server.requests:>3} requests, {server.sent / 1e6:7.1f} MB sent "
          f"({server.sent / size:.2f} x the file)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--cut-mb", type=float, default=6.0, help="every response is closed after this much")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    size = int(args.size_mb * 1e6)
    payload = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    sha256 = hashlib.sha256(payload).hexdigest()
    server = CuttingServer(payload, int(args.cut_mb * 1e6))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data.bin"
    download.RETRY_DELAY_S = 0.0  # the wait between retries is not what is compared
    print(f"a {size / 1e6:.1f} MB file, every transfer cut after {args.cut_mb:.1f} MB; "
          f"{download.RETRIES} attempts each")
    with tempfile.TemporaryDirectory() as scratch:
        attempt("iishpo", lambda: download.fetch_file(url, Path(scratch) / "ours" / "data.bin", ("sha256", sha256)),
                server, size)
        fetcher = pooch.create(path=Path(scratch) / "pooch", base_url=url.rsplit("/", 1)[0] + "/",
                               registry={"data.bin": f"sha256:{sha256}"}, retry_if_failed=download.RETRIES - 1)
        attempt("pooch", lambda: fetcher.fetch("data.bin"), server, size)
    server.shutdown()


if __name__ == "__main__":
    main()
