"""One ask/tell interface for every HPO algorithm.

The stage runner only ever calls :meth:`Optimizer.ask` and :meth:`Optimizer.tell`, so an
algorithm slots in by subclassing :class:`Optimizer` and naming it from its settings class
(see :mod:`iishpo.optimizers`). Optimizers keep no files: resuming a stage replays the
stored trials through ``ask``/``tell`` (see :meth:`Optimizer.replay`), which restores the
exact state, random streams included, of a run that was never interrupted.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from iishpo.optimizers.settings import OptimizerSettings
from iishpo.search.space import Config, SearchSpace

S = TypeVar("S", bound=OptimizerSettings)


class Optimizer(ABC, Generic[S]):
    """Base class: proposes configurations inside ``space`` and learns from their losses.

    Args:
        space: where to search (already narrowed for later IIS stages).
        budget: evaluations this optimizer will be asked for; algorithms scale their
            start-up phase (TPE's random start, the GA's population) with it.
        seed: makes the sequence of proposals reproducible.
        initial_points: configurations to propose first, in order (IIS: the best of the
            previous stage).
        settings: the algorithm's typed settings, built from ``conf/optimizer/<name>.yaml``
            when the configuration was loaded.
    """

    #: its proposals improve with the losses it is told (the optimizer contract,
    #: tests/optimizers, holds it to this against random search)
    learns_from_losses: ClassVar[bool] = True

    def __init__(
        self,
        space: SearchSpace,
        *,
        budget: int,
        seed: int,
        initial_points: Sequence[Config] = (),
        settings: S,
    ) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1, got {budget}")
        for point in initial_points:
            space.validate(point)
        self.space = space
        self.budget = budget
        self.seed = seed
        self.initial_points = [dict(p) for p in initial_points]
        self.settings = settings
        self.rng = random.Random(seed)

    @abstractmethod
    def ask(self) -> Config:
        """The next configuration to evaluate (a valid point of ``self.space``)."""

    @abstractmethod
    def tell(self, config: Config, loss: float) -> None:
        """Report the loss (validation error; higher is worse) of the last asked config."""

    def replay(self, history: Sequence[tuple[Config, float]]) -> None:
        """Bring a fresh optimizer to the state it had after ``history``.

        Asks again for every stored trial and checks that the proposal is the stored one:
        a mismatch means the seed, space or settings changed since the trials were made.
        """
        for number, (stored, loss) in enumerate(history):
            proposed = self.ask()
            if not _same_config(proposed, stored):
                raise RuntimeError(
                    f"cannot resume: trial {number} in the store was {stored}, but the "
                    f"optimizer now proposes {proposed}. The seed, search space or optimizer "
                    "settings differ from the run that wrote the store; delete the store to "
                    "start over."
                )
            self.tell(proposed, loss)


def _same_config(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, float) or isinstance(other, float):
            if abs(float(value) - float(other)) > 1e-9 * max(1.0, abs(float(value))):
                return False
        elif value != other:
            return False
    return True


def bounded_history(losses: Sequence[float], max_history: int, n_best: int) -> list[int]:
    """The trials (indices, oldest first) a model is fitted on: all of them up to
    ``max_history``; beyond, the ``n_best`` lowest losses (the earlier trial on a tie) and
    the most recent others, ``max_history`` in all.

    A model's fit costs more with every trial, its use does not: the best trials keep its
    picture of where the good configurations are, the recent ones that of where the
    search is now.
    """
    n = len(losses)
    if n <= max_history:
        return list(range(n))
    best = set(sorted(range(n), key=lambda i: (losses[i], i))[:n_best])
    recent = [i for i in reversed(range(n)) if i not in best][: max_history - len(best)]
    return sorted(best.union(recent))
