"""Give concurrent training jobs on one machine distinct GPUs.

Snakemake's ``--resources gpu=N`` only limits how many GPU jobs run at once; it does not
say which device each one should use, so without this every job would train on GPU 0.
Each device has ``share`` slots, one lock file each under a directory; a job takes the
first free slot, preferring devices with fewer jobs on them, and holds an exclusive
``flock`` on it while it runs. The kernel drops the lock when the process exits for any
reason (including SIGKILL or an out-of-memory kill), so a killed job's slot is free
again at once and no stale claim needs cleaning up.

A scheduler that already assigns devices (SLURM sets ``CUDA_VISIBLE_DEVICES`` for a job
with ``--gpus``) is left alone; with no GPU the job runs on the CPU.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

VISIBLE = "CUDA_VISIBLE_DEVICES"


def available_devices() -> tuple[int, ...]:
    """Ids of the CUDA devices torch sees on this machine (empty without a GPU)."""
    import torch

    return tuple(range(torch.cuda.device_count())) if torch.cuda.is_available() else ()


def slot_order(devices: Sequence[int], share: int) -> list[tuple[int, int]]:
    """``(device, slot)`` pairs in the order jobs take them: every device's first slot
    before any device's second, so that N jobs on N devices never share one."""
    if share < 1:
        raise ValueError(f"share must be >= 1 (jobs per GPU), got {share}")
    return [(device, slot) for slot in range(share) for device in devices]


def _try_lock(path: Path) -> IO[bytes] | None:
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextmanager
def claim_device(
    lock_dir: Path, devices: Sequence[int], share: int, poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> Iterator[int | None]:
    """Hold one of ``devices`` (with at most ``share`` holders each) while inside.

    Yields the device id, or ``None`` when ``devices`` is empty (train on the CPU).
    Waits for a free slot when all are taken; raises ``TimeoutError`` after
    ``timeout_s`` (``None``: wait as long as it takes). Lock files are per host, so
    ``lock_dir`` may sit on a file system that several machines share.
    """
    if not devices:
        yield None
        return
    if len(set(devices)) != len(devices) or min(devices) < 0:
        raise ValueError(f"devices must be distinct ids >= 0, got {list(devices)}")
    order = slot_order(devices, share)
    lock_dir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waiting_logged = False
    while True:
        for device, slot in order:
            handle = _try_lock(lock_dir / f"{host}.gpu{device}.slot{slot}.lock")
            if handle is None:
                continue
            try:
                handle.truncate(0)
                handle.write(f"{os.getpid()}\n".encode())
                handle.flush()
                yield device
            finally:
                handle.close()  # releases the lock
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(
                f"no free GPU slot among devices {list(devices)} x share {share} in {lock_dir} "
                f"after {timeout_s} s: raise resources.gpus.share or run fewer GPU jobs at once"
            )
        if not waiting_logged:
            log.info("all %d GPU slots in %s are taken; waiting", len(order), lock_dir)
            waiting_logged = True
        time.sleep(poll_s)


@contextmanager
def gpu_for_job(lock_dir: Path, devices: Sequence[int] | None, share: int) -> Iterator[str | None]:
    """Run the body on one claimed GPU; yields the ``CUDA_VISIBLE_DEVICES`` in effect.

    Sets ``CUDA_VISIBLE_DEVICES`` to the claimed device, so call it before the first
    CUDA call of the process; the job then sees that GPU as its only one and
    ``trainer.accelerator: auto`` uses it. When ``CUDA_VISIBLE_DEVICES`` is already set,
    a scheduler has chosen and nothing is claimed. ``devices`` ``None`` means every GPU
    of the machine; none there yields ``None``: the job trains on the CPU.
    """
    if VISIBLE in os.environ:
        yield os.environ[VISIBLE] or None
        return
    candidates = available_devices() if devices is None else tuple(devices)
    with claim_device(lock_dir, candidates, share) as device:
        if device is None:
            yield None
            return
        os.environ[VISIBLE] = str(device)
        try:
            yield str(device)
        finally:
            os.environ.pop(VISIBLE, None)
