"""The one seed derivation of a study: everything random in a run is seeded from here.

A run is identified by its seed (``study.seeds``); inside it, a random stream is
identified by what it is for (:class:`Stream`), the stage and an index (the trial number,
or the repetition of a test retraining). :func:`derive_seed` maps these integers to a
seed with NumPy's ``SeedSequence`` hash: stable across processes, platforms and Python
versions, independent of names and labels (renaming a data set or rewording a log line
changes nothing), and statistically independent streams for different tuples.

The data set, optimizer and strategy are deliberately *not* inputs: trial ``n`` of stage
``k`` trains with the same seed in every run of the same run seed, so IIS and standard
runs are compared under common random numbers (a paired design).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

#: seeds handed to libraries stay below 2**31 - 1 (hyperopt, SMAC and NumPy accept them)
_MASK = 0x7FFFFFFF


class Stream(IntEnum):
    """What a seed is used for; each value is a separate random stream."""

    #: the optimizer's own generator (GA operators, SMAC's scenario, random fill-ups)
    OPTIMIZER = 1
    #: one proposal of a one-trial-at-a-time library (hyperopt's ``suggest``)
    PROPOSAL = 2
    #: weight initialisation and batch order of an evaluation during optimization
    TRAINING = 3
    #: a retraining of the best configuration for the test score (one per repetition/fold)
    TEST = 4


def derive_seed(run_seed: int, stream: Stream, stage: int = 0, index: int = 0) -> int:
    """The seed of ``stream`` for (``run_seed``, ``stage``, ``index``); all must be >= 0."""
    if min(run_seed, stage, index) < 0:
        raise ValueError(
            f"seeds derive from non-negative integers, got run_seed={run_seed}, stage={stage}, index={index}"
        )
    sequence = np.random.SeedSequence(run_seed, spawn_key=(int(stream), stage, index))
    return int(sequence.generate_state(1, dtype=np.uint32)[0]) & _MASK
