"""Real trial stores of a tiny Experiment 1: random search and TPE run independently at 16
and 32 px (full space at each, no narrowing), made once per test session by real stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TINY, compose
from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch
from iishpo.jobs.stage import TRIALS, StageKey, run_stage
from iishpo.settings.config import Settings
from iishpo.store import Trial, read_trials

PER_RESOLUTION = 8
OPTIMIZERS = ("random", "tpe")
#: the iis strategy's stages give one stage per resolution; without a ranges file each
#: stage searches the full space, which is what Experiment 1 needs.
OVERRIDES = [
    *TINY, "study.strategies=[iis]", f"study.optimizers=[{','.join(OPTIMIZERS)}]",
    f"study.budget={2 * PER_RESOLUTION}", f"study.iis_budgets=[{PER_RESOLUTION},{PER_RESOLUTION}]",
]


def settings() -> Settings:
    return compose(*OVERRIDES)


def stage_dir(root: Path, optimizer: str, stage: int) -> Path:
    return root / "results" / optimizer / f"stage{stage}"


def make_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stores under one session-wide folder (made by the first caller)."""
    root = tmp_path_factory.getbasetemp() / "experiment1-stores"
    done = root / "done"
    if done.exists():
        return root
    config = settings()
    dataset = config.datasets["synthetic"]
    raw = root / "raw"
    fetch(dataset, raw)
    prepared = {r: root / f"prepared/{r}px.npz" for r in config.study.ladder}
    prepare_dataset("synthetic", dataset, raw, prepared)
    for optimizer in OPTIMIZERS:
        for stage, (resolution, _) in enumerate(config.study.stages("iis")):
            key = StageKey("synthetic", optimizer, "iis", 0, stage)
            run_stage(config, key, prepared[resolution], None, stage_dir(root, optimizer, stage))
    done.write_text(json.dumps(list(config.study.ladder)))
    return root


def trials_by_resolution(root: Path) -> dict[int, dict[str, list[Trial]]]:
    """``{resolution: {optimizer: trials}}`` read back from the stores."""
    ladder = json.loads((root / "done").read_text())
    return {
        resolution: {o: read_trials(stage_dir(root, o, stage) / TRIALS) for o in OPTIMIZERS}
        for stage, resolution in enumerate(ladder)
    }
