"""Shared fixtures."""

from __future__ import annotations

import os

import pytest

from helpers import TINY, compose
from iishpo.settings.config import Settings


@pytest.fixture(autouse=True)
def _quiet_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("PYTHONHASHSEED", os.environ.get("PYTHONHASHSEED", "0"))


@pytest.fixture
def tiny_settings() -> Settings:
    return compose(*TINY)
