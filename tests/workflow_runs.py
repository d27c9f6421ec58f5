"""The repository's real workflow run in a test's directory: shared by the end-to-end
suites (tests/test_workflow.py, tests/test_slurm.py), which must not import each other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, TINY

#: the tiny study: every optimizer, both strategies, two seeds (so that std is not 0)
STUDY = (*TINY, "study.seeds=[0,1]")


def snakemake_config(*extra: str) -> list[str]:
    """STUDY (and ``extra``) as Snakemake ``--config`` pairs: ``overrides`` holds the dotted
    keys, space-separated (none of them contains a space or a quote)."""
    return ["overrides=" + " ".join((*STUDY, *extra))]


def snakemake(
    workdir: Path, *args: str, check: bool = True, flags: tuple[str, ...] = (), snakefile: Path = REPO / "Snakefile"
) -> subprocess.CompletedProcess[str]:
    """Run the real workflow of this repository with ``workdir`` as working directory."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(snakefile),
        "--directory", str(workdir), "--cores", "2", *flags, "--config", *snakemake_config(*args),
    ]
    env = {**os.environ, "IISHPO_ROOT": str(workdir)}  # data and results land in workdir
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=1800)
    if check and result.returncode != 0:
        pytest.fail(f"snakemake failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result


def jobs_in(output: str) -> list[tuple[str, str]]:
    """``(rule, wildcards)`` of every job Snakemake printed (a run's log or a dry run's
    plan), in the order printed."""
    jobs: list[list[str]] = []
    for line in output.splitlines():
        if match := re.fullmatch(r"(?:local)?rule (\w+):", line.strip()):
            jobs.append([match.group(1), ""])
        elif line.strip().startswith("wildcards:") and jobs:
            jobs[-1][1] = line.strip().removeprefix("wildcards: ")
    return [(rule, wildcards) for rule, wildcards in jobs]


def planned_jobs(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> set[tuple[str, str]]:
    """``(rule, wildcards)`` of every job ``snakemake -n`` would run, the target rule left out."""
    result = snakemake(workdir, *args, flags=("--dry-run",), snakefile=snakefile)
    return {(rule, wildcards) for rule, wildcards in jobs_in(result.stdout + result.stderr) if rule != "default"}
