"""A study survives crashes, kills and bad trials without losing finished work.

Real processes are killed here (Snakemake and ``python -m iishpo run-stage``), held in
their second training (tests/hold) so that the kill lands mid-stage however fast the
machine trains, and the slow parts run side by side: the uninterrupted reference stage
starts in the background when the first test asks for it, and later tests compare
against it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from helpers import CONF, REPO, TINY, compose, held, journal_in
from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch
from iishpo.jobs import stage as stage_module
from iishpo.jobs.stage import (
    SUMMARY,
    TRIALS,
    StageFailed,
    StageInterrupted,
    StageKey,
    journal_path,
    run_stage,
)
from iishpo.narrowing.ranges import describe
from iishpo.plan.memory_estimate import estimate_memory_mb
from iishpo.results.artifacts import RangesRecord, write_record
from iishpo.search.space import SearchSpace, build_space
from iishpo.settings.config import ConfigError, Settings
from iishpo.store import WORST_LOSS, Trial, TrialStore, read_trials
from iishpo.training.classifier import Classifier

BUDGET = 6
#: one standard-strategy stage of TPE (model-based, so replay matters) at 32 px
OVERRIDES = [*TINY, "study.strategies=[standard]", "study.optimizers=[tpe]", f"study.budget={BUDGET}"]
KEY = StageKey("synthetic", "tpe", "standard", 0, 0)
STAGE = Path("results/smoke/synthetic/tpe/standard/seed0/stage0")
DATA = Path("data/prepared/synthetic/rgb/32px.npz")
#: what must be equal between a resumed and an uninterrupted run (not timings)
SAME = ("number", "config", "status", "val_error", "loss", "epochs", "best_epoch", "error", "seed")
ENV = {**os.environ, "PYTHONHASHSEED": "0", "IISHPO_CONF": str(CONF)}


def comparable(trials: list[Trial]) -> list[dict[str, Any]]:
    return [{name: getattr(t, name) for name in SAME} for t in trials]


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"process ended ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run_stage_cli(workdir: Path, out_dir: Path, hold: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m iishpo run-stage`` as the workflow runs it, stderr to ``workdir``; with
    ``hold``, held in its second training (:func:`helpers.held`)."""
    command = [
        sys.executable, "-m", "iishpo", "run-stage", "--dataset", KEY.dataset, "--optimizer",
        KEY.optimizer, "--strategy", KEY.strategy, "--seed", str(KEY.seed), "--stage", str(KEY.stage),
        "--data", str(DATA), "--out-dir", str(out_dir), *OVERRIDES,
    ]
    env = {**env_for(workdir), **held(hold)} if hold else env_for(workdir)
    log = open(workdir / f"{out_dir.name}.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, cwd=workdir, env=env, stderr=log, stdout=log)


def env_for(workdir: Path) -> dict[str, str]:
    """The environment of a job in ``workdir``: relative data and results paths land there."""
    return {**ENV, "IISHPO_ROOT": str(workdir)}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The repository's workflow, built up to this stage's trials, in ``workdir``.

    The overrides go in a config file: Snakemake 9 rejects dotted keys in ``--config``.
    """
    configfile = workdir / "overrides.yaml"
    configfile.write_text(yaml.safe_dump({k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in OVERRIDES)}))
    return [
        sys.executable, "-m", "snakemake", str(workdir / STAGE / TRIALS), "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", "--configfile", str(configfile), *args,
    ]


def snakemake(workdir: Path, *args: str) -> str:
    result = subprocess.run(
        snakemake_command(workdir, *args), capture_output=True, text=True, env=env_for(workdir), timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-5000:]}")
    return result.stdout + result.stderr


class Background:
    """The uninterrupted reference stage, run by the CLI in its own directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc = run_stage_cli(workdir, STAGE)

    def trials(self) -> list[Trial]:
        if self.proc.wait(timeout=600) != 0:
            pytest.fail(f"reference stage failed:\n{(self.workdir / 'stage0.log').read_text()[-5000:]}")
        return read_trials(self.workdir / STAGE / TRIALS)

    def trials_file(self) -> bytes:
        """The finished stage's ``trials.jsonl``, once the stage has finished (a test that
        reads it must not depend on how fast the reference trained)."""
        self.trials()
        return (self.workdir / STAGE / TRIALS).read_bytes()

    def summary(self) -> dict[str, Any]:
        self.trials()
        return json.loads((self.workdir / STAGE / SUMMARY).read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw and prepared data where the workflow expects them (made here: faster, and the
    jobs that would make them are not what is tested)."""
    root = tmp_path_factory.mktemp("template")
    settings = compose(*OVERRIDES)
    cfg = settings.datasets["synthetic"]
    raw = root / "data/raw/synthetic"
    fetch(cfg, raw)
    (raw / ".fetched").write_text(json.dumps(cfg, sort_keys=True) + "\n")
    prepare_dataset("synthetic", cfg, raw, {
        r: root / f"data/prepared/synthetic/rgb/{r}px.npz" for r in settings.study.ladder
    })
    return root


def workdir_with_data(data_dir: Path, path: Path) -> Path:
    shutil.copytree(data_dir / "data", path / "data")  # copy2 keeps the mtimes Snakemake compares
    return path


@pytest.fixture(scope="module")
def reference(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    background = Background(workdir_with_data(data_dir, tmp_path_factory.mktemp("reference")))
    yield background
    if background.proc.poll() is None:
        background.proc.kill()
        background.proc.wait()


@pytest.fixture
def settings() -> Settings:
    return compose(*OVERRIDES)


# -- kills ------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_the_whole_workflow_then_rerun_resumes_the_stage(
    data_dir: Path, reference: Background, tmp_path: Path
) -> None:
    """Node loss: Snakemake and the job die by SIGKILL mid-stage (in the second training);
    the rerun finishes the stage from its journal, and the trials are those of a run that
    was never killed."""
    work = workdir_with_data(data_dir, tmp_path / "killed")
    hold = tmp_path / "held"
    proc = subprocess.Popen(
        snakemake_command(work), env={**env_for(work), **held(hold)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    wait_for(hold.exists, proc, "the second training")
    journal = journal_in(work / STAGE)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every process of the group is gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    raw = journal.read_bytes()
    kept = raw[: raw.rfind(b"\n") + 1]
    finished = read_trials(journal)
    assert len(finished) == 1, "the kill should land in the second training"
    assert not (work / STAGE / TRIALS).exists() and not (work / STAGE / SUMMARY).exists()

    # A SIGKILLed Snakemake leaves its lock behind: --unlock, then run as before.
    # No --rerun-incomplete: the outputs never existed, the journal is no output.
    snakemake(work, "--unlock")
    snakemake(work)

    final = (work / STAGE / TRIALS).read_bytes()
    assert final.startswith(kept), "finished trials must be kept as they were, not re-run"
    trials = read_trials(work / STAGE / TRIALS)
    assert [t.number for t in trials] == list(range(BUDGET))
    assert comparable(trials) == comparable(reference.trials())
    assert journal.read_bytes() == final  # the journal stays, complete
    log = (work / STAGE / "run_stage.log").read_text()
    assert f"resuming after {len(finished)} finished evaluations" in log


@pytest.mark.slow
def test_sigterm_and_sigint_stop_cleanly_and_the_stage_resumes(
    data_dir: Path, reference: Background, settings: Settings, tmp_path: Path
) -> None:
    """SLURM's wall time (SIGTERM) or Ctrl-C (SIGINT) while training (the second): the
    process exits with 128 + signal, the journal holds every finished trial, no output
    exists."""
    work = workdir_with_data(data_dir, tmp_path)
    runs = {signum: Path(f"out_{signum.name}") for signum in (signal.SIGTERM, signal.SIGINT)}
    holds = {signum: work / f"held_{signum.name}" for signum in runs}
    procs = {signum: run_stage_cli(work, out, holds[signum]) for signum, out in runs.items()}  # side by side
    for signum, proc in procs.items():
        wait_for(holds[signum].exists, proc, f"the second training of {runs[signum]}")
        proc.send_signal(signum)
    for signum, proc in procs.items():
        out = runs[signum]
        assert proc.wait(timeout=120) == 128 + signum
        journal = journal_in(work / out)
        assert sorted((work / out).iterdir()) == [journal]
        finished = read_trials(journal)
        assert len(finished) == 1
        log = (work / f"{out.name}.log").read_text()
        assert f"interrupted by {signum.name} after {len(finished)} finished evaluations" in log

        run_stage(settings, KEY, work / DATA, None, work / out)
        assert comparable(read_trials(work / out / TRIALS)) == comparable(reference.trials())


@pytest.mark.slow
def test_signals_inside_training_and_while_recording(
    data_dir: Path, reference: Background, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, at exact moments: SIGINT while a trial is being written keeps that
    trial; SIGTERM inside Lightning's fit stops at once (Lightning does not swallow it)."""
    out = tmp_path / "out"
    data = data_dir / DATA
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    append = TrialStore.append

    def append_interrupted(self: TrialStore, trial: Trial) -> None:
        if trial.number == 1:
            os.kill(os.getpid(), signal.SIGINT)
        append(self, trial)

    monkeypatch.setattr(TrialStore, "append", append_interrupted)
    with pytest.raises(StageInterrupted) as stop:
        run_stage(settings, KEY, data, None, out)
    assert stop.value.code == 130
    assert [t.number for t in read_trials(journal_in(out))] == [0, 1]  # the trial being written is kept
    monkeypatch.undo()

    step = Classifier.training_step
    evaluations: list[int] = []
    real_evaluate = stage_module.evaluate_trial

    def counting_evaluate(*args: Any, **kwargs: Any) -> Any:
        evaluations.append(1)
        return real_evaluate(*args, **kwargs)

    def step_interrupted(self: Classifier, batch: Any, batch_idx: int) -> Any:
        if len(evaluations) == 2 and self.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(stage_module, "evaluate_trial", counting_evaluate)
    monkeypatch.setattr(Classifier, "training_step", step_interrupted)
    with pytest.raises(StageInterrupted) as stop:
        run_stage(settings, KEY, data, None, out)
    assert stop.value.code == 143
    assert [t.number for t in read_trials(journal_in(out))] == [0, 1, 2]
    assert not (out / TRIALS).exists() and not (out / SUMMARY).exists()
    assert {s: signal.getsignal(s) for s in before} == before
    monkeypatch.undo()

    run_stage(settings, KEY, data, None, out)
    assert comparable(read_trials(out / TRIALS)) == comparable(reference.trials())


@pytest.mark.slow
def test_resume_after_a_torn_journal_write(
    data_dir: Path, reference: Background, settings: Settings, tmp_path: Path
) -> None:
    """Killed in the middle of appending trial 2: the torn line is cut off, trial 2 is
    evaluated again, and the stage ends as an uninterrupted one."""
    expected = reference.trials()
    records = reference.trials_file().splitlines(keepends=True)
    out = tmp_path / "elsewhere" / "stage0"
    out.mkdir(parents=True)
    journal_path(settings, KEY, data_dir / DATA, None, out).write_bytes(b"".join(records[:2]) + records[2][:40])
    run_stage(settings, KEY, data_dir / DATA, None, out)
    final = (out / TRIALS).read_bytes()
    assert final.startswith(b"".join(records[:2]))
    assert comparable(read_trials(out / TRIALS)) == comparable(expected)


def test_outputs_deleted_after_a_finished_stage_are_rewritten_from_its_journal(
    data_dir: Path, reference: Background, settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed after writing both outputs but before Snakemake accepted them (a SLURM time
    limit in that instant): Snakemake deletes the outputs as incomplete; the rerun trains
    nothing and writes the same outputs again from the journal, which stays."""
    out = tmp_path / "stage0"
    out.mkdir()
    journal = journal_path(settings, KEY, data_dir / DATA, None, out)
    journal.write_bytes(reference.trials_file())
    monkeypatch.setattr(stage_module, "evaluate_trial", lambda *a, **k: pytest.fail("trained again"))
    run_stage(settings, KEY, data_dir / DATA, None, out)
    assert (out / TRIALS).read_bytes() == journal.read_bytes() == reference.trials_file()
    assert sorted(p.name for p in out.iterdir()) == sorted([journal.name, TRIALS, SUMMARY])


def test_a_journal_of_other_inputs_is_kept_and_not_resumed(
    data_dir: Path, reference: Background, settings: Settings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stage whose configuration changed (here the trainer's patience) starts afresh
    beside the old journal; changing it back resumes the old journal without training."""
    out = tmp_path / "stage0"
    out.mkdir()
    old = journal_path(settings, KEY, data_dir / DATA, None, out)
    old.write_bytes(reference.trials_file())
    changed = compose(*OVERRIDES, "trainer.patience=2")
    new = journal_path(changed, KEY, data_dir / DATA, None, out)
    assert new != old
    trained: list[int] = []
    real_evaluate = stage_module.evaluate_trial

    def counting_evaluate(*args: Any, **kwargs: Any) -> Any:
        trained.append(1)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(stage_module, "evaluate_trial", counting_evaluate)
    run_stage(changed, KEY, data_dir / DATA, None, out)
    assert len(trained) == BUDGET
    assert (out / TRIALS).read_bytes() == new.read_bytes()
    assert old.read_bytes() == reference.trials_file()

    monkeypatch.setattr(stage_module, "evaluate_trial", lambda *a, **k: pytest.fail("trained again"))
    run_stage(settings, KEY, data_dir / DATA, None, out)
    assert (out / TRIALS).read_bytes() == old.read_bytes()


# -- failing trials ---------------------------------------------------------------------


def ranges_file(path: Path, settings: Settings, learning_rate: tuple[float, float], initial: list[dict]) -> Path:
    """A narrowed space as ``extract-ranges`` writes it, with a learning rate range of our choosing."""
    space = build_space(settings.space, 32).to_dict()
    for param in space["params"]:
        if param["name"] == "learning_rate":
            param["low"], param["high"] = learning_rate
    narrowed = SearchSpace.from_dict(space)
    write_record(path, RangesRecord(narrowed, initial, describe(narrowed), config_digest=""))
    return path


SMALL = {
    "learning_rate": 0.01, "batch_size": 16, "l1": 1e-6, "l2": 1e-6, "filter_size": 3,
    "n_conv": 1, "n_fc": 1, "conv_filters_0": 4, "fc_units_0": 8,
}
BIG = {
    "learning_rate": 0.01, "batch_size": 128, "l1": 1e-6, "l2": 1e-6, "filter_size": 7,
    "n_conv": 4, "n_fc": 2, **{f"conv_filters_{i}": 32 for i in range(4)},
    "fc_units_0": 128, "fc_units_1": 128,
}


def spy_on_tell(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    told: list[float] = []
    create = stage_module.create_optimizer

    def create_spied(*args: Any, **kwargs: Any) -> Any:
        optimizer = create(*args, **kwargs)
        tell = optimizer.tell

        def spied(config: dict, loss: float) -> None:
            told.append(loss)
            tell(config, loss)

        optimizer.tell = spied
        return optimizer

    monkeypatch.setattr(stage_module, "create_optimizer", create_spied)
    return told


def test_diverging_oversized_and_raising_trials_fail_and_the_stage_goes_on(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 8.0
    settings = compose(
        *OVERRIDES, "study.budget=5", "study.max_failure_fraction=1.0", f"trainer.memory_limit_mb={limit}"
    )
    shapes = (3, 32, 10, 60, 40)  # channels, px, classes, largest train and val batches
    assert estimate_memory_mb(SMALL, *shapes[:3], min(16, shapes[3]), shapes[4]) < limit
    assert estimate_memory_mb(BIG, *shapes[:3], min(128, shapes[3]), shapes[4]) > limit
    initial = [
        {**SMALL, "learning_rate": 1e30},  # diverges: non-finite loss in the second step
        BIG,  # over trainer.memory_limit_mb: fails before training
        SMALL,  # fine
        {**SMALL, "learning_rate": 0.0123},  # raises inside training
        {**SMALL, "learning_rate": 0.0234},  # the allocator refuses
    ]
    ranges = ranges_file(tmp_path / "ranges.json", settings, (1e-4, 1e31), initial)
    step = Classifier.training_step

    def misbehaving_step(self: Classifier, batch: Any, batch_idx: int) -> Any:
        if math.isclose(self.lr, 0.0123):
            raise ZeroDivisionError("injected bug")
        if math.isclose(self.lr, 0.0234):
            raise MemoryError("injected: cannot allocate")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", misbehaving_step)
    told = spy_on_tell(monkeypatch)
    summary = run_stage(settings, KEY, data_dir / DATA, ranges, tmp_path / "out")

    trials = read_trials(tmp_path / "out" / TRIALS)
    assert [t.status for t in trials] == ["failed", "failed", "ok", "failed", "failed"]
    errors = [t.error or "" for t in trials]
    assert errors[0].startswith("Diverged: loss became ")
    assert errors[1].startswith("MemoryLimitExceeded: needs ~") and f"> trainer.memory_limit_mb={limit:g}" in errors[1]
    assert errors[3] == "ZeroDivisionError: injected bug"
    assert errors[4] == "OutOfMemory: MemoryError: injected: cannot allocate"
    assert [t.loss for t in trials] == told == [WORST_LOSS, WORST_LOSS, trials[2].val_error, WORST_LOSS, WORST_LOSS]
    assert all(t.val_error is None for t in trials if not t.ok)
    assert summary.n_failed == 4 and summary.best is not None and summary.best.number == 2
    assert (tmp_path / "out" / SUMMARY).exists()
    assert journal_in(tmp_path / "out").read_bytes() == (tmp_path / "out" / TRIALS).read_bytes()


def test_too_many_failures_stop_the_stage_naming_the_cause(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = compose(*OVERRIDES, "study.budget=4", "study.max_failure_fraction=0.5")
    ranges = ranges_file(tmp_path / "ranges.json", settings, (1e29, 1e31), [])
    out = tmp_path / "out"
    with pytest.raises(StageFailed) as failed:
        run_stage(settings, KEY, data_dir / DATA, ranges, out)
    message = str(failed.value)
    assert "3 of 3 evaluations failed" in message and "study.max_failure_fraction=0.5" in message
    assert "most common cause: diverged (non-finite loss) (3x)" in message
    journal = journal_in(out)
    assert sorted(out.iterdir()) == [journal]

    # Run again: the journal already exceeds the limit, so it stops before training.
    monkeypatch.setattr(stage_module, "evaluate_trial", lambda *a, **k: pytest.fail("trained again"))
    with pytest.raises(StageFailed, match="most common cause: diverged"):
        run_stage(settings, KEY, data_dir / DATA, ranges, out)
    assert lines(journal) == 3


def test_memory_limit_must_be_positive_or_null(settings: Settings) -> None:
    assert settings.trainer.memory_limit_mb is None  # the default: no limit
    for value, message in (("0", "must be a positive number"), ("lots", "must be a number or null")):
        with pytest.raises(ConfigError, match=f"trainer.memory_limit_mb {message}"):
            compose(*TINY, f"trainer.memory_limit_mb={value}")


# -- provenance -------------------------------------------------------------------------


@pytest.mark.slow
def test_stage_outputs_carry_their_provenance(reference: Background) -> None:
    summary = reference.summary()
    provenance = summary["provenance"]
    assert provenance["config"]["trainer"]["max_epochs"] == 2
    assert provenance["config"]["study"]["budget"] == BUDGET
    assert provenance["seed"] == KEY.seed and summary["seed"] == KEY.seed
    assert provenance["packages"]["torch"].startswith("2.") and provenance["packages"]["lightning"]
    # accelerator "auto": the GPU when torch sees one, else the CPU
    if torch.cuda.is_available():
        assert provenance["device"] == f"cuda:{torch.cuda.get_device_name(0)}"
        assert provenance["precision"] == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true")
    else:
        assert provenance["device"].startswith("cpu (")
        assert provenance["precision"] == "32-true"  # precision "auto" on a CPU
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    assert provenance["git"]["commit"] == head.stdout.strip()
    assert f"study.budget={BUDGET}" in provenance["overrides"]
