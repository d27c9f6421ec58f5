"""The study on a real one-node SLURM cluster, through profiles/slurm.

Needs root (the packages are installed with apt-get when missing, and the daemons run as
root) and ports 6817/6818. Slow: about 15 minutes on two cores. Run it on its own:
``python -m pytest -m slurm tests/test_slurm.py``; a plain ``pytest`` skips it.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO, journal_in
from iishpo.store import read_trials
from workflow_runs import planned_jobs, snakemake

pytestmark = pytest.mark.slurm

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
#: Submit through the slurm profile; short status intervals keep the test quick.
SLURM = (
    "--profile", str(REPO / "profiles" / "slurm"), "--jobs", "4",
    "--seconds-between-status-checks", "5", "--slurm-init-seconds-before-status-checks", "5",
)
#: The smoke study at one seed, IIS against standard: every rule of the DAG, small
#: enough for a step of CI.
SMOKE = ("study.seeds=[0]", "study.strategies=[standard,iis]")
#: SLURM's shortest time limit is 1 minute; slurmctld checks limits every 30 s and the
#: test cluster's KillWait is 5 s, so a job over it is gone at most this long after it started.
KILLED_WITHIN_S = 95
#: The long stage holds this many times KILLED_WITHIN_S of training, so that it still
#: outlasts the limit on a machine (or under a load) five times faster than the measurement.
LONG_STAGE_MARGIN = 5
#: Probe trainings that measure this machine's rate before the long stage is sized.
PROBE_BUDGET = 10
#: Simulates a faster machine: the sized budget is divided by this (README, "Run the tests").
SPEEDUP = float(os.environ.get("IISHPO_TEST_SPEEDUP", "1"))


def long_stage(budget: int) -> tuple[str, ...]:
    """One stage, the random optimizer, standard strategy, seed 0, ``budget`` trainings."""
    return ("study.name=long", "study.optimizers=[random]", "study.strategies=[standard]",
            "study.seeds=[0]", f"study.budget={budget}")


def seconds_per_training(workdir: Path) -> float:
    """This machine's seconds per training of the long stage, from a short run of it (the
    stage's own clock, so that the optimizer's and the journal's share count too)."""
    snakemake(workdir, *long_stage(PROBE_BUDGET))
    trials = read_trials(workdir / "results/long/synthetic/random/standard/seed0/stage0/trials.jsonl")
    return trials[-1].elapsed / len(trials)


def sized_budget(rate: float, speedup: float = SPEEDUP) -> int:
    """Trainings that take LONG_STAGE_MARGIN times SLURM's kill horizon at ``rate``, divided by
    ``speedup``: sized from the machine, so that the stage is killed part-way on any machine."""
    return max(PROBE_BUDGET, math.ceil(LONG_STAGE_MARGIN * KILLED_WITHIN_S / rate / speedup))


@pytest.fixture(scope="module", autouse=True)
def _only_when_selected(request: pytest.FixtureRequest) -> None:
    """Installing packages and starting daemons as root is never a side effect of a plain
    ``pytest``: these tests run only when ``-m`` names the marker."""
    if "slurm" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("starts a SLURM cluster as root: run with `-m slurm`")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Munge, slurmctld and slurmd for this module; stopped by pid at the end."""
    subprocess.run([str(CLUSTER), "install"], check=True, timeout=900)
    state = tmp_path_factory.mktemp("slurm")
    subprocess.run([str(CLUSTER), "start", str(state)], check=True, timeout=120)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    daemons = dict(line.split() for line in (state / "pids").read_text().splitlines())
    assert set(daemons) == {"munged", "slurmctld", "slurmd"}
    try:
        yield state
    finally:
        if previous is None:
            del os.environ["SLURM_CONF"]
        else:
            os.environ["SLURM_CONF"] = previous
        subprocess.run([str(CLUSTER), "stop", str(state)], check=True, timeout=120)
    running = {name: pid for name, pid in daemons.items() if Path(f"/proc/{pid}").exists()}
    assert not running, f"daemons left running: {running}"


def trials_of(workdir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every stage's trials: configuration, outcome and validation error, in order."""
    return {
        path.relative_to(workdir).as_posix(): [
            (t.number, t.config, t.status, t.val_error, t.error) for t in read_trials(path)
        ]
        for path in sorted((workdir / "results").rglob("trials.jsonl"))
    }


def test_smoke_study_on_slurm_equals_a_local_run(cluster: Path, tmp_path: Path) -> None:
    local, on_slurm = tmp_path / "local", tmp_path / "slurm"
    snakemake(local, *SMOKE)
    jobs = len(planned_jobs(on_slurm, *SMOKE))
    result = snakemake(on_slurm, *SMOKE, flags=SLURM)
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", result.stdout + result.stderr)
    assert len(submitted) == jobs, "every job of the smoke DAG should have gone through sbatch"
    expected = trials_of(local)
    assert len(expected) == 12  # 4 optimizers x (1 standard + 2 iis stages)
    assert trials_of(on_slurm) == expected
    assert (on_slurm / "results" / "smoke" / "summary.md").is_file()
    # the local run forked its trainings from a warm worker, the SLURM jobs were processes
    assert "ran ['run-stage']" in (local / ".snakemake" / "iishpo-worker.log").read_text()
    assert not (on_slurm / ".snakemake" / "iishpo-worker.log").exists()


def slurm_log_of(output: str, rule: str) -> str:
    """The SLURM log of the failed job of ``rule`` that Snakemake names in ``output``."""
    found = re.search(rf"log: \S+, (\S+slurm_logs/rule_{rule}/\S+\.log)", output)
    assert found, output[-3000:]
    return Path(found.group(1)).read_text()


def test_a_stage_killed_for_memory_or_wall_time_resumes_from_its_journal(
    cluster: Path, tmp_path: Path,
) -> None:
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    budget = sized_budget(seconds_per_training(tmp_path / "probe"))
    stage_flags = long_stage(budget)
    stage = killed / "results/long/synthetic/random/standard/seed0/stage0"
    # The uninterrupted reference runs here on one core while the SLURM job uses the other.
    with ThreadPoolExecutor(max_workers=1) as background:
        reference = background.submit(snakemake, uninterrupted, *stage_flags)

        # Memory: 100 MB is less than importing torch needs. Without cgroups (this test
        # cluster) SLURM's state is FAILED; with cgroups it is OUT_OF_MEMORY.
        oom = snakemake(killed, *stage_flags, check=False,
                        flags=(*SLURM, "--set-resources", "run_stage:mem_mb=100"))
        output = oom.stdout + oom.stderr
        assert oom.returncode != 0
        assert re.search(r"Error in rule run_stage:\s+message: SLURM-job '\d+' failed, SLURM status "
                         r"is: '(FAILED|OUT_OF_MEMORY)'", output), output[-3000:]
        assert "Exceeded job memory limit" in slurm_log_of(output, "run_stage")

        # Wall time: SLURM's shortest limit, 1 minute, stops the stage part-way.
        timeout = snakemake(killed, *stage_flags, check=False,
                            flags=(*SLURM, "--set-resources", "run_stage:runtime=1"))
        output = timeout.stdout + timeout.stderr
        assert timeout.returncode != 0, (
            f"the stage of {budget} trainings finished within SLURM's 1-minute limit: this machine "
            f"trained more than {LONG_STAGE_MARGIN}x faster than the probe measured")
        assert re.search(r"Error in rule run_stage:\s+message: SLURM-job '\d+' failed, SLURM status "
                         r"is: 'TIMEOUT'", output), output[-3000:]
        assert "DUE TO TIME LIMIT" in slurm_log_of(output, "run_stage")
        journal = read_trials(journal_in(stage))
        assert 0 < len(journal) < budget
        assert not (stage / "trials.jsonl").exists()

        snakemake(killed, *stage_flags, flags=SLURM)
        log = (stage / "run_stage.log").read_text()
        assert f"resuming after {len(journal)} finished evaluations" in log
        reference.result()
    assert trials_of(killed) == trials_of(uninterrupted)


def test_a_resource_the_cluster_lacks_fails_at_submission_naming_the_rule(
    cluster: Path, tmp_path: Path,
) -> None:
    result = snakemake(tmp_path, check=False, flags=(*SLURM, "--set-resources", "fetch_dataset:gpu=1"))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(
        r"Error in rule fetch_dataset:\s+message: SLURM sbatch failed\. The error message was "
        r"'sbatch: error: Invalid generic resource \(gres\) specification'", output
    ), output[-3000:]
    assert "--gpus=1" in output, "the failing sbatch call is shown, with the resource it asked for"
    # Nothing that needs the data ran; only the configuration record (no input) may have.
    results = tmp_path / "results"
    written = {p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()}
    assert written <= {"smoke/configuration.json", "smoke/record_configuration.log"}, written
    assert not (tmp_path / "data" / "raw" / "synthetic" / ".fetched").exists()
    assert not (tmp_path / "data" / "prepared").exists()
