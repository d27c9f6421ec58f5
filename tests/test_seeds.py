"""The one seed derivation: stable, independent of names, distinct per stream and index."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iishpo.jobs.stage import StageKey, training_seed
from iishpo.seeds import Stream, derive_seed


def test_values_are_pinned_across_releases() -> None:
    # The README promises that a seed gives the same trials in every release that keeps
    # this function; a changed value here is a change of results and must be announced.
    assert derive_seed(0, Stream.TRAINING, 0, 0) == 707637316
    assert derive_seed(3, Stream.OPTIMIZER, 1) == 1187049591


def test_same_in_another_process() -> None:
    code = "from iishpo.seeds import Stream, derive_seed; print(derive_seed(5, Stream.TEST, 2, 9))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == derive_seed(5, Stream.TEST, 2, 9)


def test_every_stream_stage_and_index_gets_its_own_seed() -> None:
    seeds = {
        derive_seed(run, stream, stage, index)
        for run in range(3) for stream in Stream for stage in range(3) for index in range(20)
    }
    assert len(seeds) == 3 * len(Stream) * 3 * 20
    assert all(0 <= s < 2**31 - 1 for s in seeds)


def test_training_seeds_do_not_depend_on_names() -> None:
    # common random numbers: trial n of stage k trains alike in every run of a run seed
    iis = StageKey("synthetic", "tpe", "iis", seed=1, stage=0)
    standard = StageKey("flowers102", "smac", "standard", seed=1, stage=0)
    assert training_seed(iis, 4) == training_seed(standard, 4) == derive_seed(1, Stream.TRAINING, 0, 4)
    assert training_seed(iis, 4) != training_seed(StageKey("synthetic", "tpe", "iis", seed=2, stage=0), 4)


def test_stage_and_index_default_to_zero() -> None:
    assert derive_seed(3, Stream.OPTIMIZER) == derive_seed(3, Stream.OPTIMIZER, 0, 0)


@pytest.mark.parametrize("inputs", [(-1, 0, 0), (0, -1, 0), (0, 0, -1)])
def test_negative_inputs_are_rejected(inputs: tuple[int, int, int]) -> None:
    run_seed, stage, index = inputs
    with pytest.raises(ValueError, match="seeds derive from non-negative integers"):
        derive_seed(run_seed, Stream.TRAINING, stage, index)
