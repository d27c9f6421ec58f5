"""What each strategy is, in one table that the configuration, the DAG, the summary and the
figures read, so that a new strategy is one entry here plus its code.

A strategy says how a run spends its budget: its stages (resolution and budget of each, from
the study's ladder, budget and IIS budgets), what each stage but the last hands the next (a
file that a job of its own makes from the stage's trials, or nothing), whether the run's best
configuration is scored on the test set (Experiment 2, summarized) or the run feeds the
importance analysis (Experiment 1), and how the summary and Fig. 5 show it.

Successive halving's stages are the rungs of the ladder, each handing the next its
:data:`PROMOTIONS` (the best 1/eta of the rung's configurations, written by a rule of its
own and read by ``run-stage``); Hyperband's are its brackets' rungs in sequence, the
promotions file at a bracket's end empty, saying "start afresh" (:mod:`iishpo.settings.halving`).
``transfer`` is successive halving that promotes every configuration: a study does not list
it; the ``transfer`` target runs it for :mod:`iishpo.results.transfer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iishpo.settings.halving import (
    halving_rungs,
    hyperband_brackets,
    smallest_halving_budget,
    smallest_hyperband_budget,
)

if TYPE_CHECKING:  # iishpo.settings.config builds the study from this table
    from iishpo.settings.config import Study


@dataclass(frozen=True)
class Handoff:
    """A file each stage of a run but the last writes for the next stage, and the
    ``run-stage`` option that reads it."""

    file: str
    option: str


#: range extraction: the narrowed space and the starting points for the next stage
#: (rule ``extract_ranges``, :mod:`iishpo.narrowing.ranges`)
RANGES = Handoff("ranges.json", "--ranges")

#: successive halving and Hyperband: the configurations the next rung trains again, or none
#: (a new bracket: the optimizer proposes) (rule ``promote_configs``, :mod:`iishpo.settings.halving`)
PROMOTIONS = Handoff("promotions.json", "--promotions")

#: the strategy every compared one is measured against, paired by seed
BASELINE = "standard"
#: the strategy of the ``transfer`` target's runs (:mod:`iishpo.results.transfer`)
TRANSFER = "transfer"


def _last_stage(stages: list[tuple[int, int]]) -> list[int]:
    return [len(stages) - 1]


def _every_stage_at_largest(stages: list[tuple[int, int]]) -> list[int]:
    largest = max(resolution for resolution, _ in stages)
    return [k for k, (resolution, _) in enumerate(stages) if resolution == largest]


@dataclass(frozen=True)
class Strategy:
    """How a run of this strategy spends its budget, and how the study shows its runs."""

    name: str
    #: ``(resolution, budget)`` of each stage of a run
    stages: Callable[[Study], list[tuple[int, int]]]
    #: what each stage but the last hands the next; ``None``: every stage starts from the
    #: full space. A strategy that hands something on needs a ladder of >= 2 resolutions.
    handoff: Handoff | None
    #: the run's best configuration is retrained and scored on the test set and the summary
    #: reads the run (Experiment 2); otherwise the run feeds the importance analysis
    evaluated: bool
    #: Fig. 5's line style for its runs (a Matplotlib linestyle)
    line_style: str | tuple[int, tuple[int, ...]]
    #: the summary compares it with :data:`BASELINE` under this time-reduction label;
    #: ``None``: not compared
    reduction_label: str | None = None
    #: besides :data:`BASELINE`, the strategies it is compared with directly, paired by
    #: seed, where the study has both (it minus each of them)
    compared_with: tuple[str, ...] = ()
    #: its stage budgets are ``study.iis_budgets``, one per ladder resolution
    uses_iis_budgets: bool = False
    #: what the summary adds to the description of its stages
    note: str = ""
    #: the stages (indices into its ``stages``) whose trials the run's best configuration is
    #: chosen from, for the test evaluation and the summary's best validation error
    result_stages: Callable[[list[tuple[int, int]]], list[int]] = _last_stage
    #: it halves (uses ``study.eta``): the fewest evaluations its stages need, from eta and
    #: the number of ladder resolutions; checked at load
    smallest_budget: Callable[[int, int], int] | None = None
    #: ``None``: a study lists it in ``study.strategies``; else the Snakemake target that
    #: runs it, outside ``rule all`` (a study may not list it)
    target: str | None = None

    @property
    def compared(self) -> bool:
        return self.reduction_label is not None

    def describe(self, study: Study) -> str:
        """The summary's words for its stages, e.g. "6 at 8 px, 4 at 16 px" ("all" for the
        whole budget)."""
        words = ", ".join(
            f"{'all' if budget == study.budget else budget} at {resolution} px"
            for resolution, budget in self.stages(study)
        )
        return f"{words} ({self.note})" if self.note else words


def _whole_budget_at_largest(study: Study) -> list[tuple[int, int]]:
    return [(study.ladder[-1], study.budget)]


def _iis_budgets_up_the_ladder(study: Study) -> list[tuple[int, int]]:
    return list(zip(study.ladder, study.iis_budgets, strict=True))


def _iis_budgets_at_largest(study: Study) -> list[tuple[int, int]]:
    return [(study.ladder[-1], budget) for budget in study.iis_budgets]


def _whole_budget_at_every_resolution(study: Study) -> list[tuple[int, int]]:
    return [(resolution, study.budget) for resolution in study.ladder]


def _configurations_at_every_resolution(study: Study) -> list[tuple[int, int]]:
    return [(resolution, study.transfer.configurations) for resolution in study.ladder]


def _halving_rungs(study: Study) -> list[tuple[int, int]]:
    return list(zip(study.ladder, halving_rungs(study.budget, study.eta, len(study.ladder)), strict=True))


def _hyperband_rungs(study: Study) -> list[tuple[int, int]]:
    brackets = hyperband_brackets(study.budget, study.eta, len(study.ladder))
    return [
        (resolution, n)
        for first, bracket in enumerate(brackets)
        for resolution, n in zip(study.ladder[first:], bracket, strict=True)
    ]


#: by name, in the order of the summary's comparisons
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        # the baseline: the whole budget at the largest resolution
        Strategy("standard", _whole_budget_at_largest, handoff=None, evaluated=True, line_style="-"),
        # the paper's method: one stage per ladder resolution, the space narrowed between them;
        # against successive halving too, the other way of spending a budget on small images
        Strategy(
            "iis", _iis_budgets_up_the_ladder, handoff=RANGES, evaluated=True, line_style="--",
            reduction_label="time reduction", uses_iis_budgets=True, compared_with=("halving",),
        ),
        # the control that separates IIS's two effects (the paper's Sec. 5): IIS's stage
        # budgets and range extraction, every stage at the largest resolution
        Strategy(
            "narrowing", _iis_budgets_at_largest, handoff=RANGES, evaluated=True, line_style=":",
            reduction_label="time reduction (narrowing)", uses_iis_budgets=True,
            note="IIS's stages and ranges",
        ),
        # successive halving (Jamieson & Talwalkar 2016) with the ladder as its rungs: the
        # best 1/eta of each rung trained again at the next resolution
        Strategy(
            "halving", _halving_rungs, handoff=PROMOTIONS, evaluated=True, line_style=(0, (5, 1)),
            reduction_label="time reduction (halving)", note="rungs of successive halving",
            smallest_budget=smallest_halving_budget,
        ),
        # Hyperband (Li et al. 2018): brackets of successive halving starting at each rung;
        # the result is the best configuration of every bracket's last (largest) rung
        Strategy(
            "hyperband", _hyperband_rungs, handoff=PROMOTIONS, evaluated=True, line_style=(0, (3, 1, 1, 1, 1, 1)),
            reduction_label="time reduction (hyperband)", note="Hyperband's brackets, rung by rung",
            result_stages=_every_stage_at_largest, smallest_budget=smallest_hyperband_budget,
        ),
        # the paper's Experiment 1: the whole budget at every resolution, each from the full
        # space, for hyperparameter importance per resolution
        Strategy(
            "independent", _whole_budget_at_every_resolution, handoff=None, evaluated=False, line_style="-.",
        ),
        # the rank-correlation analysis across resolutions (iishpo.results.transfer): random
        # configurations drawn at the smallest resolution, every one trained again at every
        # larger one (successive halving that promotes all); run by its own target
        Strategy(
            TRANSFER, _configurations_at_every_resolution, handoff=PROMOTIONS, evaluated=False,
            line_style=(0, (1, 1)), note="every configuration at every resolution", target=TRANSFER,
        ),
    )
}
