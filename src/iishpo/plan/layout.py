"""The study's runs and where their files lie, and which configuration each job uses.

One owner for three things the Snakefile, the CLI and the summary must agree on:

* the enumeration: :func:`runs` (data sets x optimizers x strategies x seeds) and
  :func:`stages` (a run's stages, with their resolution and budget, as its strategy in
  :data:`iishpo.settings.strategies.STRATEGIES` says);
* the paths: :class:`Layout` turns a :class:`RunKey` or :class:`StageKey` into the
  folder of its files, and gives the same patterns with ``{wildcards}`` for Snakemake;
* the configuration each job depends on: :func:`stage_config`, :func:`ranges_config`, ...
  return the slice of the resolved configuration a job reads, and :func:`digest` its
  fingerprint. The Snakefile passes the digest as a rule ``params`` value (Snakemake
  reruns a job whose params changed) and each job records it in its output, so that the
  summary can refuse results made under another configuration.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from iishpo.optimizers import settings_values
from iishpo.settings.config import Settings, Study
from iishpo.settings.strategies import PROMOTIONS, STRATEGIES, TRANSFER

TRIALS = "trials.jsonl"
STAGE_RECORD = "stage.json"
TEST = "test.json"
#: the optimizer that draws a transfer run's configurations
TRANSFER_DRAWS = "random"


@dataclass(frozen=True)
class RunKey:
    """One optimization run: every wildcard of a run's folder."""

    dataset: str
    optimizer: str
    strategy: str
    seed: int

    def stage(self, stage: int) -> StageKey:
        return StageKey(self.dataset, self.optimizer, self.strategy, self.seed, stage)


@dataclass(frozen=True)
class StageKey:
    """Which run and stage: every wildcard of a stage's folder."""

    dataset: str
    optimizer: str
    strategy: str
    seed: int
    stage: int

    @property
    def run(self) -> RunKey:
        return RunKey(self.dataset, self.optimizer, self.strategy, self.seed)

    def label(self) -> str:
        return f"{self.dataset}/{self.optimizer}/{self.strategy}/seed{self.seed}/stage{self.stage}"


@dataclass(frozen=True)
class StagePlan:
    key: StageKey
    resolution: int
    budget: int


def runs(study: Study) -> list[RunKey]:
    """Every run of the study, in the order of the summary's tables."""
    return [
        RunKey(dataset, optimizer, strategy, seed)
        for dataset in study.datasets
        for optimizer in study.optimizers
        for strategy in study.strategies
        for seed in study.seeds
    ]


def evaluated_runs(study: Study) -> list[RunKey]:
    """The runs that are evaluated on the test set and summarized (Experiment 2)."""
    return [run for run in runs(study) if STRATEGIES[run.strategy].evaluated]


def independent_runs(study: Study) -> list[RunKey]:
    """Experiment 1's runs (strategies without a test evaluation), analysed for importance."""
    return [run for run in runs(study) if not STRATEGIES[run.strategy].evaluated]


def transfer_runs(study: Study) -> list[RunKey]:
    """The ``transfer`` target's runs, one per data set: random search draws
    ``study.transfer.configurations`` at the smallest resolution, every one trained again
    at every larger one (strategy ``transfer``, seed ``study.transfer.seed``)."""
    if len(study.ladder) < 2:
        raise ValueError(
            f"the transfer analysis compares resolutions: it needs a study.ladder of >= 2, got {list(study.ladder)}"
        )
    return [RunKey(dataset, TRANSFER_DRAWS, TRANSFER, study.transfer.seed) for dataset in study.datasets]


def transfer_sources(study: Study, dataset: str) -> list[RunKey]:
    """The runs of ``dataset`` whose configurations the transfer analysis follows across
    resolutions: its transfer run, and the study's runs whose rungs promote (halving,
    Hyperband)."""
    promoting = [run for run in runs(study) if run.dataset == dataset and STRATEGIES[run.strategy].handoff == PROMOTIONS]
    return [run for run in transfer_runs(study) if run.dataset == dataset] + promoting


def stages(study: Study, run: RunKey) -> list[StagePlan]:
    """The stages of ``run``, as its strategy plans them."""
    return [
        StagePlan(run.stage(k), resolution, budget)
        for k, (resolution, budget) in enumerate(study.stages(run.strategy))
    ]


def result_stages(study: Study, run: RunKey) -> list[StagePlan]:
    """The stages whose trials the run's best configuration is chosen from (its strategy's
    ``result_stages``: the last, or for Hyperband every bracket's last rung)."""
    plans = stages(study, run)
    return [plans[k] for k in STRATEGIES[run.strategy].result_stages(study.stages(run.strategy))]


def promotion(study: Study, stage: StageKey) -> tuple[int, int]:
    """The next stage's resolution, and how many of ``stage``'s configurations it trains
    again: its whole budget when it climbs the ladder (the next rung), none when it starts
    a new Hyperband bracket (at a resolution no larger than this one)."""
    plans = study.stages(stage.strategy)
    resolution, _ = plans[stage.stage]
    next_resolution, next_budget = plans[stage.stage + 1]
    return next_resolution, next_budget if next_resolution > resolution else 0


def remaining_work(study: Study, run: RunKey, first_stage: int, test_trainings: int) -> float:
    """The training left in ``run`` from stage ``first_stage`` on (``len(stages)``: only
    its test retrainings), in evaluations at the study's last resolution, an evaluation's
    cost taken as its pixels.

    The Snakefile gives it to Snakemake as each job's priority: the jobs with the longest
    chain of work after them start first (critical path first), so that a long run does
    not start late and end the study on one core while the other idles.
    """
    last = study.ladder[-1]
    work = sum(plan.budget * (plan.resolution / last) ** 2 for plan in stages(study, run)[first_stage:])
    return work + (test_trainings if STRATEGIES[run.strategy].evaluated else 0)


class Layout:
    """Paths of one study's results: ``<results>/<study>/<dataset>/<optimizer>/<strategy>/seed<k>/``."""

    RUN = "{dataset}/{optimizer}/{strategy}/seed{seed}"
    STAGE = RUN + "/stage{stage}"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        return cls(Path(settings.paths["results"]) / settings.study.name)

    # Snakemake patterns: the same paths with {wildcards}.
    def run_pattern(self) -> str:
        return f"{self.root}/{self.RUN}"

    def stage_pattern(self) -> str:
        return f"{self.root}/{self.STAGE}"

    def run_dir(self, run: RunKey) -> Path:
        return self.root / self.RUN.format(**asdict(run))

    def stage_dir(self, stage: StageKey) -> Path:
        return self.root / self.STAGE.format(**asdict(stage))

    def trials(self, stage: StageKey) -> Path:
        return self.stage_dir(stage) / TRIALS

    def stage_record(self, stage: StageKey) -> Path:
        return self.stage_dir(stage) / STAGE_RECORD

    def handoff(self, stage: StageKey) -> Path:
        """The file ``stage`` hands the next stage of its run (its strategy's handoff)."""
        handoff = STRATEGIES[stage.strategy].handoff
        if handoff is None:
            raise ValueError(f"strategy {stage.strategy!r} hands nothing from one stage to the next")
        return self.stage_dir(stage) / handoff.file

    def test(self, run: RunKey) -> Path:
        return self.run_dir(run) / TEST

    # The summary's outputs.
    @property
    def summary_markdown(self) -> Path:
        return self.root / "summary.md"

    @property
    def summary_table(self) -> Path:
        return self.root / "summary.csv"

    @property
    def runs_table(self) -> Path:
        return self.root / "runs.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def comparisons(self) -> Path:
        return self.root / "comparisons.csv"

    @property
    def table1(self) -> Path:
        return self.root / "table1.md"

    @property
    def configuration(self) -> Path:
        """The resolved configuration and provenance of the study (for the report)."""
        return self.root / "configuration.json"

    def progress(self, dataset: str) -> Path:
        return self.root / "progress" / f"{dataset}.csv"

    def progress_figure(self, dataset: str) -> Path:
        """Fig. 5's stem: ``figures.FORMATS`` give the files (:func:`figure_files`)."""
        return self.root / "figures" / f"fig5_progress_{dataset}"

    def rank_figure(self, dataset: str) -> Path:
        """The stem of each strategy's mean rank over wall time (:mod:`iishpo.results.ranking`)."""
        return self.root / "figures" / f"mean_rank_{dataset}"

    # Experiment 1: hyperparameter importance of the ``independent`` runs.
    def importance_dir(self, dataset: str) -> Path:
        return self.root / "importance" / dataset

    def importance_markdown(self, dataset: str) -> Path:
        return self.importance_dir(dataset) / "importance.md"

    def importance_table(self, dataset: str) -> Path:
        return self.importance_dir(dataset) / "importance.csv"

    def importance_figures(self, dataset: str) -> dict[str, Path]:
        """The stems of Figs. 2-4, by the name of their caption in ``workflow/report``."""
        folder = self.importance_dir(dataset)
        return {name: folder / name for name in IMPORTANCE_FIGURES}

    # The transfer target: rank correlation across resolutions (iishpo.results.transfer).
    def transfer_dir(self, dataset: str) -> Path:
        return self.root / "transfer" / dataset

    def transfer_markdown(self, dataset: str) -> Path:
        return self.transfer_dir(dataset) / "transfer.md"

    def transfer_record(self, dataset: str) -> Path:
        return self.transfer_dir(dataset) / "transfer.json"

    def transfer_figure(self, dataset: str) -> Path:
        """The figure's stem (:func:`figure_files` gives its files)."""
        return self.transfer_dir(dataset) / "rank_correlation"

    def transfer_analysis_files(self, dataset: str) -> list[Path]:
        """Every file ``analyze_transfer`` writes for ``dataset``."""
        return [self.transfer_markdown(dataset), self.transfer_record(dataset), *figure_files(self.transfer_figure(dataset))]

    def transfer_files(self, study: Study) -> list[Path]:
        """What the ``transfer`` target asks for: the transfer runs' files and each data
        set's analysis (which also reads the study's promoting runs: :func:`transfer_sources`)."""
        files = [path for run in transfer_runs(study) for path in self.run_files(study, run)]
        return files + [path for dataset in study.datasets for path in self.transfer_analysis_files(dataset)]

    # Every file of the study: what `rule all` asks for.
    def files(self, study: Study) -> list[Path]:
        """Every output of the study (logs and trial journals aside).

        ``rule all`` asks for all of them: Snakemake looks for a job's missing outputs only
        among the files asked for, and compares a job's params only when each of its
        outputs has metadata, so an output that a change of data sets adds to the summary
        (its progress file and figure) would otherwise leave the old summary standing.
        """
        files = [self.configuration]
        for run in runs(study):
            files += self.run_files(study, run)
        if evaluated_runs(study):
            files += self.summary_files(study.datasets)
        if independent_runs(study):
            files += [path for dataset in study.datasets for path in self.importance_files(dataset)]
        return files

    def run_files(self, study: Study, run: RunKey) -> list[Path]:
        """Each stage's trials and record, what each stage but the last hands on (if its
        strategy hands anything on), and the test evaluation of an evaluated run."""
        strategy = STRATEGIES[run.strategy]
        plans = stages(study, run)
        files: list[Path] = []
        for plan in plans:
            files += [self.trials(plan.key), self.stage_record(plan.key)]
            if strategy.handoff is not None and plan is not plans[-1]:
                files.append(self.handoff(plan.key))
        if strategy.evaluated:
            files.append(self.test(run))
        return files

    def summary_files(self, datasets: Sequence[str]) -> list[Path]:
        """Every file ``summarize`` writes."""
        return [
            self.summary_markdown, self.table1, self.comparisons, self.summary_table, self.runs_table,
            self.metrics, *(self.progress(d) for d in datasets),
            *(path for d in datasets for path in figure_files(self.progress_figure(d))),
            *(path for d in datasets for path in figure_files(self.rank_figure(d))),
        ]

    def importance_files(self, dataset: str) -> list[Path]:
        """Every file ``analyze_importance`` writes for ``dataset``."""
        stems = self.importance_figures(dataset).values()
        return [
            self.importance_markdown(dataset), self.importance_table(dataset),
            *(path for stem in stems for path in figure_files(stem)),
        ]


#: Figs. 2-4 of Experiment 1, named as their captions in workflow/report/
IMPORTANCE_FIGURES = ("fig2_importance", "fig3_learning_rate", "fig4_learning_rate_fc")
#: what every figure is written as (one file per format)
FIGURE_FORMATS = ("png", "svg")


def figure_files(stem: Path) -> list[Path]:
    """The files of the figure ``stem``, one per format."""
    return [stem.with_name(f"{stem.name}.{fmt}") for fmt in FIGURE_FORMATS]


# -- what each job depends on ------------------------------------------------------------


def digest(config_slice: Any) -> str:
    """A short fingerprint of a JSON-able configuration slice (key order does not matter)."""
    text = json.dumps(config_slice, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_config(settings: Settings, dataset: str) -> dict[str, Any]:
    """What fetching and preparing a data set read: its whole entry under ``datasets``."""
    return settings.resolved["datasets"][dataset]


def stage_config(settings: Settings, stage: StageKey) -> dict[str, Any]:
    """What a stage reads besides its input files: its resolution and budget, the failure
    limit, the search space, the trainer and its optimizer's settings (the name of their
    class is code, as the algorithm is, and left out)."""
    resolution, budget = settings.study.stages(stage.strategy)[stage.stage]
    resolved = settings.resolved
    return {
        "resolution": resolution,
        "budget": budget,
        "max_failure_fraction": resolved["study"]["max_failure_fraction"],
        "space": resolved["space"],
        "trainer": resolved["trainer"],
        "optimizer": settings_values(resolved["optimizers"][stage.optimizer]),
    }


def ranges_config(settings: Settings, next_resolution: int) -> dict[str, Any]:
    """What range extraction reads: the range settings, the space and the resolution of the
    stage it narrows the space for."""
    return {
        "ranges": settings.resolved["study"]["ranges"],
        "space": settings.resolved["space"],
        "resolution": next_resolution,
    }


def promotions_config(next_resolution: int, promote: int) -> dict[str, Any]:
    """What a promotion reads besides the rung's trials: how many to promote, and where to."""
    return {"resolution": next_resolution, "promote": promote}


def evaluation_config(settings: Settings, dataset: str) -> dict[str, Any]:
    """What the test-set evaluation reads: the trainer, the repeats and the data set's metric."""
    return {
        "trainer": settings.resolved["trainer"],
        "evaluation": settings.resolved["evaluation"],
        "test_metric": settings.resolved["datasets"][dataset]["test_metric"],
    }


def _study_runs(settings: Settings) -> dict[str, Any]:
    """The study without the transfer settings, which only the transfer target reads."""
    return {key: value for key, value in settings.resolved["study"].items() if key != "transfer"}


def importance_config(settings: Settings) -> dict[str, Any]:
    """What the importance analysis reads: the study (its runs) and the search space."""
    return {"study": _study_runs(settings), "space": settings.resolved["space"]}


def transfer_config(settings: Settings) -> dict[str, Any]:
    """What the transfer analysis reads besides its input files: the transfer settings."""
    return {"transfer": settings.resolved["study"]["transfer"]}


def summary_config(settings: Settings) -> dict[str, Any]:
    """What the summary reads: the study and each of its data sets' metric."""
    return {
        "study": _study_runs(settings),
        "test_metrics": {d: settings.resolved["datasets"][d]["test_metric"] for d in settings.study.datasets},
    }
