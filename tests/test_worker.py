"""The warm worker runs a job as the job would run itself, and never outlives its client.

Real processes throughout: a worker on a socket in a temporary directory, and ``python -m
iishpo run-stage`` clients in their own working directories; a command that is to be
signalled or killed mid-stage is held in its second training (tests/hold), however fast
the machine trains.
"""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import CONF, REPO, TINY, compose, held, journal_in
from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch
from iishpo.jobs.stage import SUMMARY, TRIALS
from iishpo.results.provenance import package_versions
from iishpo.settings import config as config_module
from iishpo.settings.config import load_settings
from iishpo.store import read_trials
from iishpo.worker import SOCKET_VARIABLE, preload

OVERRIDES = [*TINY, "study.strategies=[standard]", "study.optimizers=[random]", "study.budget=2"]
DATA = Path("data/32px.npz")
#: every process with tests/hold on PYTHONPATH, which the worker and its clients must share
ENV = {**os.environ, "PYTHONHASHSEED": "0", "IISHPO_CONF": str(CONF), **held()}
SAME = ("number", "config", "status", "val_error", "loss", "epochs", "best_epoch", "error", "seed")


def run_stage_command(*extra: str) -> list[str]:
    return [
        sys.executable, "-m", "iishpo", "run-stage", "--dataset", "synthetic", "--optimizer", "random",
        "--strategy", "standard", "--seed", "0", "--stage", "0", "--data", str(DATA), "--out-dir", "out",
        *OVERRIDES, *extra,
    ]


def env_for(workdir: Path, socket: Path | None) -> dict[str, str]:
    env = {**ENV, "IISHPO_ROOT": str(workdir)}
    env.pop(SOCKET_VARIABLE, None)
    if socket is not None:
        env[SOCKET_VARIABLE] = str(socket)
    return env


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    cfg = compose(*OVERRIDES).datasets["synthetic"]
    fetch(cfg, root / "raw")
    prepare_dataset("synthetic", cfg, root / "raw", {32: root / DATA})
    return root / DATA


def workdir(data_file: Path, path: Path) -> Path:
    (path / DATA.parent).mkdir(parents=True)
    (path / DATA).write_bytes(data_file.read_bytes())
    return path


class Worker:
    def __init__(self, directory: Path) -> None:
        self.socket = directory / "w.sock"
        self.log = directory / "worker.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iishpo.worker", "--socket", str(self.socket)],
            env=env_for(directory, None), stderr=self.log.open("wb"), start_new_session=True,
        )
        wait_for(lambda: self.socket.exists() or self.proc.poll() is not None, "the worker's socket")
        assert self.proc.poll() is None, self.log.read_text()

    def notes(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    running = Worker(tmp_path_factory.mktemp("worker"))
    yield running
    running.proc.terminate()
    assert running.proc.wait(timeout=30) == 0
    assert not running.socket.exists()


def client(work: Path, socket: Path | None, *extra: str, hold: Path | None = None) -> subprocess.Popen[bytes]:
    """The command in ``work``; with ``hold``, held in its second training (:func:`helpers.held`)."""
    env = {**env_for(work, socket), **held(hold)}
    log = (work / "client.log").open("wb")
    return subprocess.Popen(run_stage_command(*extra), cwd=work, env=env, stdout=log, stderr=log)


def comparable(work: Path) -> list[dict]:
    return [{name: getattr(t, name) for name in SAME} for t in read_trials(work / "out" / TRIALS)]


def test_a_stage_through_the_worker_equals_one_in_process(data_file: Path, worker: Worker, tmp_path: Path) -> None:
    alone = workdir(data_file, tmp_path / "alone")
    served = workdir(data_file, tmp_path / "served")
    in_process = client(alone, tmp_path / "no-such.sock")  # no worker there: runs itself
    through = client(served, worker.socket)
    assert through.wait(timeout=600) == 0, (served / "client.log").read_text()
    assert in_process.wait(timeout=600) == 0, (alone / "client.log").read_text()
    assert f"ran ['run-stage'] in {served} as pid" in worker.notes()
    assert str(alone) not in worker.notes()
    assert comparable(served) == comparable(alone)
    assert len(comparable(served)) == 2
    best = [json.loads((w / "out" / SUMMARY).read_text())["best"] for w in (alone, served)]
    assert best[0] == best[1]
    assert journal_in(served / "out").read_bytes() == (served / "out" / TRIALS).read_bytes()


@pytest.mark.parametrize(("extra", "code", "message"), [
    (("trainer.max_epochs=-1",), 2, "configuration error"),
    (("--data", "missing.npz"), 1, "missing.npz"),
])
def test_a_failing_command_exits_through_the_worker_as_in_process(
    data_file: Path, worker: Worker, tmp_path: Path, extra: tuple[str, ...], code: int, message: str
) -> None:
    for name, socket in (("alone", None), ("served", worker.socket)):
        work = workdir(data_file, tmp_path / name)
        assert client(work, socket, *extra).wait(timeout=600) == code, name
        assert message in (work / "client.log").read_text(), name


def test_a_signal_to_the_client_stops_the_command_cleanly(data_file: Path, worker: Worker, tmp_path: Path) -> None:
    work, hold = workdir(data_file, tmp_path / "work"), tmp_path / "held"
    proc = client(work, worker.socket, hold=hold)
    wait_for(lambda: hold.exists() or proc.poll() is not None, "the second training")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM after 1 finished evaluations" in (work / "client.log").read_text()
    assert len(read_trials(journal_in(work / "out"))) == 1
    wait_for(lambda: not descendants(worker.proc.pid), "the command to end", timeout=30)


def test_a_killed_client_takes_its_command_with_it(data_file: Path, worker: Worker, tmp_path: Path) -> None:
    """The command is gone, not only no longer below the worker: nothing is left that
    could write the journal beside a rerun of the job."""
    work, hold = workdir(data_file, tmp_path / "work"), tmp_path / "held"
    proc = client(work, worker.socket, hold=hold)
    wait_for(lambda: hold.exists() or proc.poll() is not None, "the second training")
    running = descendants(worker.proc.pid)
    assert len(running) == 2  # the session and the command
    proc.kill()
    proc.wait()
    wait_for(lambda: not descendants(worker.proc.pid) and not any(Path(f"/proc/{pid}").exists() for pid in running),
             "the command to die", timeout=30)
    assert len(read_trials(journal_in(work / "out"))) == 1


def test_a_job_the_worker_cannot_run_as_itself_runs_in_process(data_file: Path, worker: Worker, tmp_path: Path) -> None:
    work = workdir(data_file, tmp_path / "work")
    env = {**env_for(work, worker.socket), "PYTHONHASHSEED": "1"}
    log = (work / "client.log").open("wb")
    proc = subprocess.run(run_stage_command(), check=False, cwd=work, env=env, stdout=log, stderr=log, timeout=600)
    assert proc.returncode == 0, (work / "client.log").read_text()
    assert "PYTHONHASHSEED='1' differs from the worker's '0'" in worker.notes()
    assert len(read_trials(work / "out" / TRIALS)) == 2


def test_the_client_imports_nothing_heavy() -> None:
    code = "import sys, iishpo.worker; print(' '.join(sorted(sys.modules)))"
    modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    heavy = {"torch", "lightning", "hydra", "omegaconf", "numpy", "smac", "hyperopt"}
    assert not heavy & {m.split(".")[0] for m in modules}


def record_configuration(workdir: Path, *flags: str, warm_worker: bool = True) -> subprocess.CompletedProcess[str]:
    """A real local Snakemake run of this repository with one light job."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "record_configuration", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir), "--cores", "1", *flags,
         "--config", f"overrides=study=smoke resources.warm_worker={str(warm_worker).lower()}"],
        capture_output=True, text=True, env=env_for(workdir, None), timeout=600, check=True,
    )


def test_a_local_run_starts_a_warm_worker_and_stops_it_at_the_end(tmp_path: Path) -> None:
    result = record_configuration(tmp_path)
    started = re.search(r"a warm worker \(pid (\d+)\) runs the jobs", result.stderr)
    assert started, result.stderr[-3000:]
    assert not Path(f"/proc/{started.group(1)}").exists()
    notes = (tmp_path / ".snakemake" / "iishpo-worker.log").read_text()
    assert "composed the configuration with overrides ['study=smoke', 'resources.warm_worker=true']" in notes


def test_the_worker_forks_its_jobs_from_a_frozen_heap_with_the_run_composed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a job would compose, the package versions it records and the entry points its
    first Trainer asks for are there already; the preloaded objects are out of the garbage
    collector's reach."""
    import lightning as L
    from lightning.fabric.utilities import registry

    overrides = [*OVERRIDES, "trainer.max_epochs=3"]  # not composed before in this process
    composed: list[list[str]] = []
    real = config_module.compose
    monkeypatch.setattr(config_module, "compose", lambda **kwargs: composed.append(kwargs["overrides"]) or real(**kwargs))
    package_versions.cache_clear()
    if hasattr(registry.entry_points, "cache_clear"):  # looked up already in this process
        registry.entry_points.cache_clear()
    try:
        preload(overrides)
        assert package_versions.cache_info().currsize == 1
        looked_up = registry.entry_points.cache_info()  # type: ignore[attr-defined]
        L.Trainer(accelerator="cpu", devices=1, barebones=True)
        assert looked_up.currsize == 1 and registry.entry_points.cache_info().misses == looked_up.misses  # type: ignore[attr-defined]
        assert gc.get_freeze_count() > 0
        assert load_settings(overrides, config_dir=CONF).trainer.max_epochs == 3
        assert composed == [overrides]
        preload(["study=no-such-study"])
        assert "cannot compose the run's configuration: " in capsys.readouterr().err
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(("flags", "warm_worker"), [(("--dry-run",), True), ((), False)])
def test_no_warm_worker_for_a_dry_run_or_when_switched_off(tmp_path: Path, flags: tuple[str, ...], warm_worker: bool) -> None:
    result = record_configuration(tmp_path, *flags, warm_worker=warm_worker)
    assert "warm worker" not in result.stderr
    assert not (tmp_path / ".snakemake" / "iishpo-worker.log").exists()
