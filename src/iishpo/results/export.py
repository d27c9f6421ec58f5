"""Export a study's runs into an Optuna storage, one Optuna study per run, so that Optuna's
own tools (optuna-dashboard, ``optuna.visualization``) can show them.

The results folder stays the record; the storage is a view derived from its
``trials.jsonl``, ``stage.json``, ``ranges.json`` and ``test.json`` files.

Storage forms, the strings optuna-dashboard takes too (:data:`FORMS`): ``sqlite:///PATH``
(RDBStorage on an SQLite file; ``sqlite:////abs/path.db`` for an absolute path) or a
``PATH`` ending ``.log`` (JournalStorage on a JournalFileBackend).

Each run is the Optuna study ``<study>/<dataset>/<optimizer>/<strategy>/seed<k>``
(direction minimize), its trials in stage order:

* parameters: the hyperparameters a trial has (per-layer ones as ``conv_filters_0``, ...),
  with the distributions of the space its stage searched: the full space at the stage's
  resolution, or the space the stage before narrowed (that stage's ``ranges.json``).
  Optuna keeps one set of choices per categorical parameter and study, so a categorical
  has its declared choices in every stage; the narrowed choices are in the study's
  ``narrowed_ranges``.
* value: the validation error (metric name ``val_error``); a failed trial is ``FAIL``,
  with ``fail_cause`` and ``error``.
* user attributes: ``stage``, ``resolution``, ``stage_trial`` (its number in the stage),
  ``epochs``, ``best_epoch``, ``wall_time``; ``test_score`` and ``test_metric`` on the
  trial of the last stage (Hyperband: of a bracket's last rung) that the run's ``test.json``
  retrained.
* the study's user attributes: the run, ``config_digest`` (of the configuration slices of
  all its jobs), ``git_commit``, ``git_dirty``, ``narrowed_ranges``, ``missing`` (its result
  files not there yet) and ``export_digest`` (of everything above).

Exporting again adds nothing twice: a study with the same ``export_digest`` is left as it
is, one of the same configuration exported from an earlier state of the run (a stage
missing then) is replaced, and one that holds trials of another configuration is refused
before anything is written.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudySummary
from optuna.trial import FrozenTrial, TrialState, create_trial

from iishpo.plan.layout import (
    Layout,
    RunKey,
    StagePlan,
    digest,
    evaluation_config,
    result_stages,
    runs,
    stage_config,
    stages,
)
from iishpo.results.artifacts import (
    EvaluationRecord,
    RangesRecord,
    StageRecord,
    read_evaluation,
    read_ranges,
    read_stage,
)
from iishpo.search.space import CATEGORICAL, INT, Param, build_space
from iishpo.settings.config import Settings
from iishpo.settings.strategies import RANGES, STRATEGIES
from iishpo.store import Trial, read_trials
from iishpo.training.failures import failure_cause

log = logging.getLogger(__name__)

SQLITE = "sqlite:///"
JOURNAL_SUFFIX = ".log"
FORMS = (
    f"{SQLITE}PATH (an SQLite file; {SQLITE}/PATH for an absolute path) or "
    f"PATH{JOURNAL_SUFFIX} (an Optuna journal file)"
)
SQLITE_HEADER = b"SQLite format 3\x00"
#: the name of the trials' value
METRIC = "val_error"
#: the study attribute that tells an unchanged export from one to replace
EXPORT_DIGEST = "export_digest"
#: how many missing files the log names before it counts the rest
NAMED_MISSING = 10
#: what an export did with a run's study
WRITTEN, REPLACED, UNCHANGED = "written", "replaced", "unchanged"


class ExportRefused(ValueError):
    """The export cannot go ahead and wrote nothing; the message says why and what is allowed."""


@dataclass(frozen=True)
class Storage:
    """An SQLite file or an Optuna journal file, as the command's ``--storage`` names it."""

    url: str
    path: Path
    journal: bool

    def open(self) -> BaseStorage:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.journal:
            return JournalStorage(JournalFileBackend(str(self.path)))
        return RDBStorage(self.url)


def parse_storage(url: str) -> Storage:
    """The storage ``url`` names; :class:`ExportRefused` for any other form."""
    if url.startswith(SQLITE) and len(url) > len(SQLITE):
        return Storage(url, Path(url.removeprefix(SQLITE)), journal=False)
    scheme, separator, _ = url.partition("://")
    if separator:
        what = "names no file" if scheme == "sqlite" else f"scheme {scheme!r} is not supported"
        raise ExportRefused(f"storage {url!r}: {what}; allowed: {FORMS}")
    if url.endswith(JOURNAL_SUFFIX):
        return Storage(url, Path(url), journal=True)
    raise ExportRefused(f"storage {url!r} is neither an SQLite URL nor a journal file; allowed: {FORMS}")


def check_writable(storage: Storage) -> None:
    """Refuse a storage this process cannot write, or a file of the other kind, before
    anything is written: by opening the file, if there is one, and an unnamed temporary file
    in its folder (SQLite writes its own journal there); missing folders are made later."""
    path = storage.path
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    header = b""
    try:
        if path.exists():
            with path.open("r+b") as fh:
                header = fh.read(len(SQLITE_HEADER))
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ExportRefused(
            f"storage {storage.url!r}: cannot write {path} ({err.strerror or err}); it must be a file "
            "this process can create or write"
        ) from err
    if storage.journal and header == SQLITE_HEADER:
        raise ExportRefused(f"storage {storage.url!r}: {path} is an SQLite file; name it {SQLITE}{path}")
    if not storage.journal and header and header != SQLITE_HEADER:
        raise ExportRefused(f"storage {storage.url!r}: {path} is not an SQLite file; allowed: {FORMS}")


def study_name(study: str, run: RunKey) -> str:
    """The Optuna study of ``run``: ``<study>/<dataset>/<optimizer>/<strategy>/seed<k>``."""
    return f"{study}/{Layout.RUN.format(**asdict(run))}"


@dataclass(frozen=True)
class RunFiles:
    """What of a run's results is there: its finished stages, its test record, and the
    result files that are missing."""

    run: RunKey
    stages: list[tuple[StagePlan, StageRecord]]
    test: EvaluationRecord | None
    missing: list[Path]


def run_files(settings: Settings, layout: Layout, run: RunKey) -> RunFiles:
    """A stage is there when Snakemake's outputs for it are: its trials and its record."""
    found, missing = [], []
    for plan in stages(settings.study, run):
        record = layout.stage_record(plan.key)
        if record.is_file() and layout.trials(plan.key).is_file():
            found.append((plan, read_stage(record)))
        else:
            missing.append(record)
    test = None
    if STRATEGIES[run.strategy].evaluated:
        if layout.test(run).is_file():
            test = read_evaluation(layout.test(run))
        else:
            missing.append(layout.test(run))
    return RunFiles(run, found, test, missing)


def stale_files(settings: Settings, layout: Layout, files: RunFiles) -> list[Path]:
    """The run's records made under another configuration than ``settings``."""
    stale = [
        layout.stage_record(plan.key) for plan, record in files.stages
        if record.config_digest != digest(stage_config(settings, plan.key))
    ]
    if files.test is not None and files.test.config_digest != digest(evaluation_config(settings, files.run.dataset)):
        stale.append(layout.test(files.run))
    return stale


def run_digest(settings: Settings, run: RunKey) -> str:
    """The fingerprint of the configuration of every job of ``run``, finished or not."""
    return digest({
        "stages": [digest(stage_config(settings, plan.key)) for plan in stages(settings.study, run)],
        "test": digest(evaluation_config(settings, run.dataset)) if STRATEGIES[run.strategy].evaluated else None,
    })


def ranges_input(layout: Layout, plan: StagePlan) -> RangesRecord | None:
    """The narrowed space a stage searched: what the stage before handed it, where its
    strategy hands on ranges (the stage's ``handoff`` input in workflow/rules/common.smk);
    ``None`` where it searched the full space."""
    key = plan.key
    if key.stage > 0 and STRATEGIES[key.strategy].handoff == RANGES:
        return read_ranges(layout.handoff(key.run.stage(key.stage - 1)))
    return None


def distribution(param: Param, declared: Param) -> BaseDistribution:
    """``param`` as an Optuna distribution; a categorical one with the ``declared`` choices,
    since Optuna refuses other choices for a parameter it already has in the study."""
    if param.kind == CATEGORICAL:
        return CategoricalDistribution(declared.choices)  # type: ignore[arg-type]
    if param.kind == INT:
        return IntDistribution(int(param.low), int(param.high), log=param.log)  # type: ignore[arg-type]
    return FloatDistribution(param.low, param.high, log=param.log)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunExport:
    """One run as an Optuna study: its name, its user attributes and its trials."""

    name: str
    attrs: dict[str, Any]
    trials: list[FrozenTrial]

    @property
    def fingerprint(self) -> str:
        """The digest of everything the study holds, to tell whether it changed."""
        return digest({"attrs": self.attrs, "trials": [_trial_content(t) for t in self.trials]})


def _trial_content(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "state": trial.state.name, "value": trial.value, "params": trial.params,
        "distributions": {name: distribution_to_json(d) for name, d in trial.distributions.items()},
        "user_attrs": trial.user_attrs, "start": str(trial.datetime_start), "complete": str(trial.datetime_complete),
    }


def run_export(settings: Settings, layout: Layout, files: RunFiles) -> RunExport:
    """The finished stages of a run as an Optuna study (the module doc says what goes where)."""
    trials: list[FrozenTrial] = []
    narrowed: dict[str, Any] = {}
    result = {plan.key.stage for plan in result_stages(settings.study, files.run)}
    for plan, _ in files.stages:
        declared = build_space(settings.space, plan.resolution)
        ranges = ranges_input(layout, plan)
        if ranges is not None:
            narrowed[str(plan.key.stage)] = ranges.ranges
        space = declared if ranges is None else ranges.space
        distributions = {p.name: distribution(p, declared[p.name]) for p in space.params}
        test = files.test if plan.key.stage in result else None
        path = layout.trials(plan.key)
        for trial in read_trials(path):
            try:
                trials.append(frozen_trial(trial, plan, distributions, test))
            except ValueError as err:  # a value outside the space the stage searched
                raise ValueError(f"{path}: trial {trial.number}: {err}") from err
    records = [record.provenance for _, record in files.stages]
    if files.test is not None:
        records.append(files.test.provenance)
    run = files.run
    attrs = {
        "study": settings.study.name, "dataset": run.dataset, "optimizer": run.optimizer,
        "strategy": run.strategy, "seed": run.seed, "config_digest": run_digest(settings, run),
        "git_commit": ", ".join(dict.fromkeys(str(p.git["commit"]) for p in records)),
        "git_dirty": any(bool(p.git["dirty"]) for p in records),
        "narrowed_ranges": narrowed,
        "missing": [str(path.relative_to(layout.root)) for path in files.missing],
    }
    return RunExport(study_name(settings.study.name, run), attrs, trials)


def frozen_trial(
    trial: Trial, plan: StagePlan, distributions: dict[str, BaseDistribution], test: EvaluationRecord | None,
) -> FrozenTrial:
    """One journalled trial as an Optuna trial, timed as it ran (start: finished minus its
    wall time, in local time as Optuna keeps it)."""
    attrs: dict[str, Any] = {
        "stage": plan.key.stage, "resolution": plan.resolution, "stage_trial": trial.number,
        "epochs": trial.epochs, "best_epoch": trial.best_epoch, "wall_time": trial.wall_time,
    }
    if not trial.ok:
        attrs |= {"fail_cause": failure_cause(trial.error or ""), "error": trial.error}
    # the number and the configuration: Hyperband's result stages each have a trial of that number
    if test is not None and (test.trial, test.config) == (trial.number, trial.config):
        attrs |= {"test_score": test.test_score, "test_metric": test.metric}
    frozen = create_trial(
        state=TrialState.COMPLETE if trial.ok else TrialState.FAIL,
        value=trial.val_error if trial.ok else None,
        params=trial.config,
        distributions={name: distributions[name] for name in trial.config},
        user_attrs=attrs,
    )
    complete = datetime.fromisoformat(trial.finished_at).astimezone().replace(tzinfo=None)
    frozen.datetime_start = complete - timedelta(seconds=trial.wall_time)
    frozen.datetime_complete = complete
    return frozen


@dataclass(frozen=True)
class ExportReport:
    """What an export did, by Optuna study name (``written`` includes ``replaced``), and the
    result files it found missing."""

    written: list[str]
    replaced: list[str]
    unchanged: list[str]
    missing: list[Path]


def export_study(settings: Settings, results: Path, url: str) -> ExportReport:
    """Write every run of the study in ``results`` with something finished into the storage
    ``url``, one Optuna study per run.

    Raises :class:`ExportRefused`, before anything is written, for a storage form that is
    not allowed or a path that cannot be written, results made under another configuration
    than ``settings``, results with nothing finished, and a storage whose study of the same
    name holds trials of another configuration.
    """
    storage = parse_storage(url)
    check_writable(storage)
    exports, missing = read_study(settings, Layout(results))
    backend = storage.open()
    stored = {s.study_name: s for s in optuna.get_all_study_summaries(backend, include_best_trial=False)}
    foreign = [
        e.name for e in exports
        if e.name in stored and stored[e.name].n_trials > 0
        and stored[e.name].user_attrs.get("config_digest") != e.attrs["config_digest"]
    ]
    if foreign:
        raise ExportRefused(
            f"storage {url!r} holds trials of another configuration under the study name(s) "
            f"{', '.join(foreign)}; export to another storage or delete those studies"
        )
    outcomes = {e.name: write_run(backend, e, stored.get(e.name)) for e in exports}
    report = ExportReport(
        written=[name for name, outcome in outcomes.items() if outcome != UNCHANGED],
        replaced=[name for name, outcome in outcomes.items() if outcome == REPLACED],
        unchanged=[name for name, outcome in outcomes.items() if outcome == UNCHANGED],
        missing=missing,
    )
    log.info(
        "%s: %d Optuna studies written, %d of them replacing an earlier export, %d unchanged",
        url, len(report.written), len(report.replaced), len(report.unchanged),
    )
    return report


def read_study(settings: Settings, layout: Layout) -> tuple[list[RunExport], list[Path]]:
    """Every run with a finished stage as an Optuna study, and the result files missing.

    Raises :class:`ExportRefused` for results made under another configuration than
    ``settings``, naming the files, and for results with nothing finished.
    """
    found = [run_files(settings, layout, run) for run in runs(settings.study)]
    stale = [path for files in found for path in stale_files(settings, layout, files)]
    if stale:
        raise ExportRefused(
            f"{len(stale)} result file(s) were made under another configuration than the one given "
            f"(pass the overrides of the study that made them, e.g. study=NAME): {', '.join(map(str, stale))}"
        )
    exports = [run_export(settings, layout, files) for files in found if files.stages]
    if not exports:
        raise ExportRefused(f"{layout.root}: no finished stage of study {settings.study.name!r} to export")
    missing = [path for files in found for path in files.missing]
    if missing:
        named = ", ".join(str(p) for p in missing[:NAMED_MISSING])
        more = f" and {len(missing) - NAMED_MISSING} more" if len(missing) > NAMED_MISSING else ""
        log.warning(
            "study %s is not finished: exporting what exists; %d result file(s) missing: %s%s",
            settings.study.name, len(missing), named, more,
        )
    return exports, missing



def write_run(backend: BaseStorage, export: RunExport, stored: StudySummary | None) -> str:
    """Write one run's study unless ``stored`` (the storage's study of that name) holds it
    already; what happened: :data:`WRITTEN`, :data:`REPLACED` or :data:`UNCHANGED`."""
    if stored is not None and stored.user_attrs.get(EXPORT_DIGEST) == export.fingerprint:
        log.info("%s: unchanged (%d trials), skipped", export.name, len(export.trials))
        return UNCHANGED
    if stored is not None:
        optuna.delete_study(study_name=export.name, storage=backend)
    study = optuna.create_study(storage=backend, study_name=export.name, direction="minimize")
    with warnings.catch_warnings():  # an experimental API since Optuna 3.2: its warning is noise here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC])  # optuna-dashboard's axis title instead of "Objective 0"
    for key, value in export.attrs.items():
        study.set_user_attr(key, value)
    study.add_trials(export.trials)
    study.set_user_attr(EXPORT_DIGEST, export.fingerprint)  # last: the study is complete
    failed = sum(t.state == TrialState.FAIL for t in export.trials)
    log.info(
        "%s: wrote %d trials (%d failed)%s", export.name, len(export.trials), failed,
        "" if stored is None else ", replacing an earlier export",
    )
    return WRITTEN if stored is None else REPLACED
