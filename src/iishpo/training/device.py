"""Which device a process trains on, from ``trainer.accelerator``."""

from __future__ import annotations

import torch


def device_for(accelerator: str) -> torch.device:
    """``auto`` takes a CUDA GPU, else Apple's MPS, else the CPU; ``gpu``/``cuda``
    insists on a CUDA GPU (a job that asked for one must not fall back silently)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(f"trainer.accelerator={accelerator!r} but no CUDA GPU is visible")
        return torch.device("cuda")
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return torch.device("mps")
    return torch.device("cpu")


def precision_for(precision: str, device: torch.device) -> str:
    """Lightning's precision for ``trainer.precision`` on ``device``.

    ``auto`` is bf16 mixed precision on a CUDA GPU that supports it (autocast: weights,
    gradients and SGD's momentum stay float32, so the penalties and small learning rates
    keep their precision) and full float32 elsewhere (CPU, MPS, older GPUs), where mixed
    precision brings no speed. Any other value is Lightning's own and passes unchanged.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"
