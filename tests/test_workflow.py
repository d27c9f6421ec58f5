"""The whole DAG, end to end, through Snakemake itself, on tiny data."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, TINY
from iishpo.store import read_trials


def snakemake_config(*extra: str) -> list[str]:
    """TINY (and ``extra``) as Snakemake ``--config`` pairs: ``overrides`` holds the dotted keys."""
    overrides = " ".join(shlex.quote(o) for o in (*TINY, *extra))
    return [f"overrides={overrides}"]


def snakemake(workdir: Path, *args: str, check: bool = True, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run the real workflow of this repository with ``workdir`` as working directory."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "2", *flags, "--config", *snakemake_config(*args),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "IISHPO_ROOT": str(workdir)}
    result = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=900
    )
    if check and result.returncode != 0:
        pytest.fail(f"snakemake failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    snakemake(workdir)
    return workdir


def test_every_stage_of_the_dag_produced_its_outputs(finished_study: Path) -> None:
    from helpers import compose

    study = compose(*TINY).study
    results = finished_study / "results" / study.name
    for optimizer in study.optimizers:
        for strategy in study.strategies:
            run = results / "synthetic" / optimizer / strategy / "seed0"
            stages = study.stages(strategy)
            for k, (resolution, budget) in enumerate(stages):
                trials = read_trials(run / f"stage{k}" / "trials.jsonl")
                assert len(trials) == budget
                summary = json.loads((run / f"stage{k}" / "stage.json").read_text())
                assert summary["resolution"] == resolution
                assert summary["provenance"]["config"]["study"]["name"] == study.name
                assert summary["provenance"]["packages"]["torch"].startswith("2.")
                assert "commit" in summary["provenance"]["git"]
                assert not (run / f"stage{k}" / "trials.journal.jsonl").exists()
                if k + 1 < len(stages):
                    ranges = json.loads((run / f"stage{k}" / "ranges.json").read_text())
                    assert ranges["space"]["resolution"] == stages[k + 1][0]
                    assert ranges["initial_points"]
            test = json.loads((run / "test.json").read_text())
            assert 0.0 <= test["test_score"] <= 1.0
            assert test["resolution"] == study.ladder[-1]
    markdown = (results / "summary.md").read_text()
    assert "time reduction" in markdown and "Test score" in markdown
    metrics = json.loads((results / "metrics.json").read_text())
    assert set(metrics["synthetic"]) == set(study.optimizers)
    assert (results / "progress.png").stat().st_size > 0
    assert (results / "progress" / "synthetic.csv").read_text().startswith("evaluation,")


def test_iis_stage_starts_from_the_previous_stage_best(finished_study: Path) -> None:
    run = finished_study / "results" / "smoke" / "synthetic" / "tpe" / "iis" / "seed0"
    ranges = json.loads((run / "stage0" / "ranges.json").read_text())
    first = read_trials(run / "stage1" / "trials.jsonl")[0]
    assert first.config == ranges["initial_points"][0]


def test_rerun_of_a_finished_study_does_nothing(finished_study: Path) -> None:
    result = snakemake(finished_study, flags=("--dry-run",))
    assert "Nothing to be done" in result.stdout + result.stderr


def test_bad_config_fails_before_any_job(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "study.budget=5", check=False)
    assert result.returncode != 0
    assert "must be positive and sum to study.budget=5" in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()
