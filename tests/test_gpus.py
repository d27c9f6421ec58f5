"""Distinct GPUs for concurrent jobs, tested on the CPU with simulated device ids."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iishpo.jobs.gpus import VISIBLE, claim_device, gpu_for_job, slot_order

#: A job: claims a device, reports it, holds it until ``release`` exists (or forever);
#: it logs (to stderr) when it finds every slot taken and waits.
HOLDER = """
import logging, sys, time
from pathlib import Path
from iishpo.jobs.gpus import claim_device
logging.basicConfig(level=logging.INFO)
lock_dir, devices, share, report, release = sys.argv[1:]
with claim_device(Path(lock_dir), [int(d) for d in devices.split(",")], int(share), poll_s=0.05) as device:
    Path(report).write_text(str(device))
    while not Path(release).exists():
        time.sleep(0.05)
"""


def start_holder(tmp_path: Path, name: str, devices: str, share: int) -> tuple[subprocess.Popen[bytes], Path]:
    """A HOLDER process; its device is written to the returned path, its log beside it (``.log``)."""
    report = tmp_path / f"{name}.device"
    process = subprocess.Popen([
        sys.executable, "-c", HOLDER, str(tmp_path / "locks"), devices, str(share), str(report),
        str(tmp_path / "release"),
    ], stderr=report.with_suffix(".log").open("wb"))
    return process, report


def wait_for(path: Path, text: str = "", timeout_s: float = 30.0) -> str:
    """What ``path`` holds once it holds something, and ``text`` in it."""
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text() or text not in path.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not written within {timeout_s} s")
        time.sleep(0.05)
    return path.read_text()


def test_first_slots_of_every_device_come_before_any_second_slot() -> None:
    assert slot_order([0, 1, 2], 2) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    with pytest.raises(ValueError, match="share must be >= 1"):
        slot_order([0], 0)


def test_concurrent_processes_get_distinct_devices(tmp_path: Path) -> None:
    holders = [start_holder(tmp_path, f"job{i}", "0,1,2", 1) for i in range(3)]
    try:
        devices = sorted(int(wait_for(report)) for _, report in holders)
    finally:
        (tmp_path / "release").touch()
        for process, _ in holders:
            process.wait(timeout=30)
    assert devices == [0, 1, 2]


def test_share_lets_k_jobs_use_one_device_and_no_more(tmp_path: Path) -> None:
    holders = [start_holder(tmp_path, f"job{i}", "3", 2) for i in range(2)]
    try:
        assert [wait_for(report) for _, report in holders] == ["3", "3"]
        with (
            pytest.raises(TimeoutError, match=r"no free GPU slot among devices \[3\] x share 2"),
            claim_device(tmp_path / "locks", [3], 2, poll_s=0.05, timeout_s=0.3),
        ):
            pass
    finally:
        (tmp_path / "release").touch()
        for process, _ in holders:
            process.wait(timeout=30)


def test_a_killed_holders_slot_is_claimed_again(tmp_path: Path) -> None:
    process, report = start_holder(tmp_path, "killed", "0", 1)
    assert wait_for(report) == "0"
    with pytest.raises(TimeoutError), claim_device(tmp_path / "locks", [0], 1, timeout_s=0.2):
        pass
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with claim_device(tmp_path / "locks", [0], 1, timeout_s=5) as device:
        assert device == 0


def test_a_waiting_job_gets_the_slot_a_finished_job_releases(tmp_path: Path) -> None:
    with claim_device(tmp_path / "locks", [1], 1) as held:
        assert held == 1
        waiter, report = start_holder(tmp_path, "waiter", "1", 1)
        wait_for(report.with_suffix(".log"), "are taken; waiting")  # it tried every slot
        assert not report.exists(), "the waiter took a slot that was held"
    try:
        assert wait_for(report) == "1"
    finally:
        (tmp_path / "release").touch()
        waiter.wait(timeout=30)


def test_no_device_means_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VISIBLE, raising=False)
    with gpu_for_job(tmp_path / "locks", (), 1) as visible:
        assert visible is None and VISIBLE not in os.environ
    with claim_device(tmp_path / "locks", [], 1) as device:
        assert device is None


def test_the_claimed_device_is_the_only_one_the_job_sees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VISIBLE, raising=False)
    with gpu_for_job(tmp_path / "locks", (4, 5), 1) as first:
        assert first == os.environ[VISIBLE] == "4"
        with gpu_for_job(tmp_path / "other", (4, 5), 1) as nested:
            assert nested == "4", "a device set by a scheduler (or a caller) is kept"
    assert VISIBLE not in os.environ


def test_a_scheduler_assigned_device_is_not_claimed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VISIBLE, "2")
    with gpu_for_job(tmp_path / "locks", (0, 1), 1) as visible:
        assert visible == "2"
    assert not (tmp_path / "locks").exists()
    assert os.environ[VISIBLE] == "2"


def test_bad_devices_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"distinct ids >= 0, got \[0, 0\]"), claim_device(tmp_path, [0, 0], 1):
        pass
