"""Headless Chromium for the browser tests: a page's DOM after its scripts ran, and the
mark that skips a test, saying why, where Chromium is not installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium)",
)
#: headless and quiet: no profile of its own, nothing fetched but the page and what it loads
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def dump_dom(url: str, virtual_ms: int = 20000) -> str:
    """The DOM of ``url`` once its scripts had ``virtual_ms`` of virtual time (Chromium
    stops the clock while requests are pending), in a fresh profile."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={virtual_ms}", "--dump-dom", url],
            check=True, capture_output=True, text=True, timeout=180,
        )
    return result.stdout
