"""Device and precision choice (the GPU branches cannot run on the CPU-only test machines)."""

from __future__ import annotations

import pytest
import torch

from iishpo.training.device import device_for, precision_for


def test_auto_precision_is_float32_off_the_gpu() -> None:
    for device in (torch.device("cpu"), torch.device("mps")):
        assert precision_for("auto", device) == "32-true"


def test_auto_precision_is_bf16_mixed_on_a_gpu_that_supports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision_for("auto", torch.device("cuda")) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision_for("auto", torch.device("cuda")) == "32-true"


def test_explicit_precision_passes_unchanged() -> None:
    assert precision_for("16-mixed", torch.device("cpu")) == "16-mixed"


def test_a_gpu_that_was_asked_for_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_for("auto") in (torch.device("cpu"), torch.device("mps"))
    with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
        device_for("gpu")
