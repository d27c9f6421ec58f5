"""The whole DAG, end to end, through Snakemake itself, on tiny data; every number the
summary reports recomputed from the trial, stage and test files; and which jobs a
configuration change reruns (`snakemake -n`)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from helpers import REPO, compose, journal_in
from iishpo.jobs.stage import JOURNALS
from iishpo.plan.layout import (
    Layout,
    RunKey,
    StageKey,
    digest,
    figure_files,
    promotion,
    remaining_work,
    result_stages,
    runs,
    stage_config,
    stages,
)
from iishpo.results.artifacts import read_evaluation, read_promotions, read_ranges, read_stage
from iishpo.search.space import Config, SearchSpace
from iishpo.settings.config import Settings
from iishpo.settings.strategies import PROMOTIONS, RANGES, STRATEGIES
from iishpo.store import Trial, read_trials
from workflow_runs import STUDY, jobs_in, planned_jobs, snakemake

pytestmark = pytest.mark.slow

def wildcards(key: RunKey | StageKey) -> str:
    """As Snakemake prints a job's wildcards."""
    return ", ".join(f"{name}={value}" for name, value in asdict(key).items())


def jobs_of(
    settings: Settings, optimizers: set[str], from_stage: int = 0,
    strategies: tuple[str, ...] = ("standard", "iis", "narrowing"),
) -> set[tuple[str, str]]:
    """The jobs of the given optimizers' runs: their stages from ``from_stage`` on (staged
    strategies), the range extractions feeding those, their test evaluations, the summary
    and the record of the resolved configuration (which holds every setting)."""
    chosen = [run for run in runs(settings.study) if run.optimizer in optimizers and run.strategy in strategies]
    return jobs_of_runs(settings, chosen, from_stage)


def jobs_of_runs(settings: Settings, chosen: list[RunKey], from_stage: int = 0) -> set[tuple[str, str]]:
    """As :func:`jobs_of`, for the runs ``chosen``."""
    jobs = {("summarize", ""), ("record_configuration", "")}
    for run in chosen:
        plans = stages(settings.study, run)
        handoff = {RANGES: "extract_ranges", PROMOTIONS: "promote_configs"}.get(STRATEGIES[run.strategy].handoff)
        for plan in plans:
            if plan.key.stage >= from_stage:
                jobs.add(("run_stage", wildcards(plan.key)))
            if handoff and plan.key.stage + 1 < len(plans) and plan.key.stage + 1 >= from_stage:
                jobs.add((handoff, wildcards(plan.key)))
        jobs.add(("evaluate_test", wildcards(run)))
    return jobs


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    snakemake(workdir)
    return workdir


@pytest.fixture(scope="module")
def settings() -> Settings:
    return compose(*STUDY)


@pytest.fixture(scope="module")
def layout(finished_study: Path, settings: Settings) -> Layout:
    return Layout(finished_study / Path(settings.paths["results"]).relative_to(settings.paths["root"]) / settings.study.name)


def test_every_stage_of_the_dag_produced_its_outputs(settings: Settings, layout: Layout) -> None:
    for run in runs(settings.study):
        plans = stages(settings.study, run)
        for plan in plans:
            trials = read_trials(layout.trials(plan.key))
            assert len(trials) == plan.budget
            record = read_stage(layout.stage_record(plan.key))
            assert (record.resolution, record.budget, record.n_trials) == (plan.resolution, plan.budget, plan.budget)
            assert record.n_failed == sum(not t.ok for t in trials)
            assert record.wall_time == trials[-1].elapsed
            # the same configuration; its paths are the study directory's (IISHPO_ROOT)
            assert {**record.provenance.config, "paths": None} == {**settings.resolved, "paths": None}
            assert record.provenance.config["paths"]["root"] == str(layout.root.parents[1])
            assert record.config_digest == digest(stage_config(settings, plan.key))
            assert journal_in(layout.stage_dir(plan.key)).read_bytes() == layout.trials(plan.key).read_bytes()
            if plan.key.stage + 1 < len(plans):
                ranges = read_ranges(layout.handoff(plan.key))
                assert ranges.space.resolution == plans[plan.key.stage + 1].resolution
        test = read_evaluation(layout.test(run))
        best = by_hand_best(read_trials(layout.trials(plans[-1].key)))[0]
        assert (test.trial, test.val_error, test.config) == (best.number, best.val_error, best.config)
        assert test.resolution == settings.study.ladder[-1]
        assert test.metric == settings.datasets[run.dataset]["test_metric"]


def by_hand_best(trials: list[Trial]) -> list[Trial]:
    """Successful trials, lowest validation error first, ties by number."""
    ok = [t for t in trials if t.status == "ok"]
    return sorted(ok, key=lambda t: (t.val_error, t.number))


def in_space(config: Config, space: SearchSpace) -> bool:
    """Every active parameter present and inside its narrowed domain, nothing else given."""
    active = set()
    for p in space.params:
        if p.active_if is not None and not config[p.active_if[0]] > p.active_if[1]:
            continue
        active.add(p.name)
        value = config[p.name]
        if p.kind == "categorical":
            if value not in p.choices:
                return False
        elif not (p.low <= value <= p.high) or (p.kind == "int" and value != int(value)):
            return False
    return set(config) == active


def test_iis_stage_starts_from_the_previous_stage_best_inside_the_narrowed_space(
    settings: Settings, layout: Layout
) -> None:
    n_initial = settings.study.ranges.n_initial
    for run in runs(settings.study):
        if run.strategy != "iis":
            continue
        plans = stages(settings.study, run)
        for previous, plan in itertools.pairwise(plans):
            ranges = read_ranges(layout.handoff(previous.key))
            best = by_hand_best(read_trials(layout.trials(previous.key)))[:n_initial]
            assert ranges.initial_points == [ranges.space.project(t.config) for t in best]
            trials = read_trials(layout.trials(plan.key))
            assert [t.config for t in trials[: len(ranges.initial_points)]] == ranges.initial_points
            outside = [t.config for t in trials if not in_space(t.config, ranges.space)]
            assert not outside, f"{run}: stage {plan.key.stage} trials outside the narrowed space"


# -- the summary, recomputed -------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def run_numbers(settings: Settings, layout: Layout, run: RunKey) -> dict:
    plans = stages(settings.study, run)
    trials = [read_trials(layout.trials(p.key)) for p in plans]
    last = by_hand_best(trials[-1])[0]
    return {
        "wall_time": sum(read_stage(layout.stage_record(p.key)).wall_time for p in plans),
        "n_evaluations": sum(len(t) for t in trials),
        "n_failed": sum(not t.ok for stage in trials for t in stage),
        "best_val_error": last.val_error,
        "test_score": read_evaluation(layout.test(run)).test_score,
        "test_metric": settings.datasets[run.dataset]["test_metric"],
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_runs_table_matches_the_result_files(settings: Settings, layout: Layout) -> None:
    rows = read_csv(layout.runs_table)
    assert [(r["dataset"], r["optimizer"], r["strategy"], int(r["seed"])) for r in rows] == [
        (r.dataset, r.optimizer, r.strategy, r.seed) for r in runs(settings.study)
    ]
    for row, run in zip(rows, runs(settings.study)):
        expected = run_numbers(settings, layout, run)
        assert float(row["wall_time"]) == pytest.approx(expected["wall_time"], rel=1e-12)
        assert int(row["n_evaluations"]) == expected["n_evaluations"] == settings.study.budget
        assert int(row["n_failed"]) == expected["n_failed"]
        assert float(row["best_val_error"]) == expected["best_val_error"]
        assert float(row["test_score"]) == expected["test_score"]
        assert row["test_metric"] == expected["test_metric"]


def groups(settings: Settings, layout: Layout) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for run in runs(settings.study):
        out.setdefault((run.optimizer, run.strategy), []).append(run_numbers(settings, layout, run))
    return out


def test_table_1_time_reduction_and_metrics_match_the_result_files(settings: Settings, layout: Layout) -> None:
    expected = groups(settings, layout)
    rows = {(r["optimizer"], r["strategy"]): r for r in read_csv(layout.summary_table)}
    assert rows.keys() == expected.keys()
    metrics = json.loads(layout.metrics.read_text())["synthetic"]
    markdown = layout.summary_markdown.read_text().splitlines()
    optimizers = settings.study.optimizers
    compared = [s for s in settings.study.strategies if s != "standard"]
    assert compared == ["iis", "narrowing"]
    time_cells: dict[str, list[str]] = {s: [] for s in settings.study.strategies}
    labels = {s: "time reduction" if s == "iis" else f"time reduction ({s})" for s in compared}
    time_cells.update({label: [] for label in labels.values()})
    for (optimizer, strategy), members in expected.items():
        row = rows[(optimizer, strategy)]
        assert int(row["n_seeds"]) == len(settings.study.seeds) == len(members)
        assert int(row["n_failed"]) == sum(m["n_failed"] for m in members)
        for field in ("wall_time", "best_val_error", "test_score"):
            mean, std = mean_std([m[field] for m in members])
            assert float(row[f"{field}_mean"]) == pytest.approx(mean, rel=1e-12, abs=1e-15)
            assert float(row[f"{field}_std"]) == pytest.approx(std, rel=1e-9, abs=1e-12)
            assert metrics[optimizer][strategy][field] == round(mean, 3 if field == "wall_time" else 6)
        if strategy in compared:
            standard = mean_std([m["wall_time"] for m in expected[(optimizer, "standard")]])[0]
            reduction = 1 - mean_std([m["wall_time"] for m in members])[0] / standard
            assert float(row["time_reduction"]) == pytest.approx(reduction, rel=1e-12)
        else:
            assert row["time_reduction"] == ""
    for optimizer in optimizers:
        for strategy in settings.study.strategies:
            mean, std = mean_std([m["wall_time"] for m in expected[(optimizer, strategy)]])
            time_cells[strategy].append(f"{mean:.1f} ± {std:.1f}")
        standard = mean_std([m["wall_time"] for m in expected[(optimizer, "standard")]])[0]
        for strategy, label in labels.items():
            staged = mean_std([m["wall_time"] for m in expected[(optimizer, strategy)]])[0]
            time_cells[label].append(f"{1 - staged / standard:.0%}")
    for label, cells in time_cells.items():
        assert f"| {label} | " + " | ".join(cells) + " |" in markdown


def test_progress_rows_match_the_trials(settings: Settings, layout: Layout) -> None:
    series: dict[str, list[list[float]]] = {}
    for run in runs(settings.study):
        curve: list[float] = []
        for plan in stages(settings.study, run):
            best = math.inf
            for t in read_trials(layout.trials(plan.key)):
                if t.status == "ok":
                    best = min(best, t.val_error)  # type: ignore[type-var]
                curve.append(best)
        series.setdefault(f"{run.optimizer}-{run.strategy}", []).append(curve)
    expected = []
    for name in sorted(series):
        for i in range(settings.study.budget):
            values = [curve[i] for curve in series[name] if curve[i] != math.inf]
            if values:
                expected.append((i + 1, name, round(sum(values) / len(values), 6)))
    rows = read_csv(layout.progress("synthetic"))
    assert [(int(r["evaluation"]), r["series"], float(r["best_val_error"])) for r in rows] == expected
    assert {r["series"] for r in rows} == {f"{o}-{s}" for o in settings.study.optimizers for s in settings.study.strategies}
    figures = figure_files(layout.progress_figure("synthetic")) + figure_files(layout.rank_figure("synthetic"))
    assert all(p.stat().st_size > 5000 for p in figures)


def test_summary_refuses_results_of_another_configuration(finished_study: Path, settings: Settings) -> None:
    changed = [*STUDY, "optimizers.tpe.gamma=0.3"]
    result = subprocess.run(
        [sys.executable, "-m", "iishpo", "summarize", "--results", "results/smoke", *changed],
        cwd=finished_study, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "IISHPO_CONF": str(REPO / "conf")},
    )
    assert result.returncode == 1
    named = set(re.findall(r"results/smoke/\S+?\.json", result.stderr))
    layout = Layout("results/smoke")
    assert named == {
        str(layout.stage_record(p.key))
        for run in runs(settings.study) if run.optimizer == "tpe" for p in stages(settings.study, run)
    }


def test_every_job_ran_in_the_warm_worker(finished_study: Path, settings: Settings) -> None:
    """The local run forked each job from one warm worker (the trials are those of a fresh
    process: tests/test_worker.py), and stopped it."""
    notes = (finished_study / ".snakemake" / "iishpo-worker.log").read_text()
    ran = re.findall(r"ran \['([a-z-]+)'\] in (\S+) as pid \d+: exit (\d+)", notes)
    study = settings.study
    expected = {
        "fetch": 1, "prepare": 1, "record-configuration": 1, "summarize": 1,
        "run-stage": sum(len(stages(study, run)) for run in runs(study)),
        "extract-ranges": sum(
            len(stages(study, run)) - 1 for run in runs(study) if STRATEGIES[run.strategy].handoff is not None
        ),
        "evaluate-test": len(runs(study)),
    }
    assert Counter(command for command, _, _ in ran) == expected
    assert {(cwd, code) for _, cwd, code in ran} == {(str(finished_study), "0")}
    socket = re.search(r"serving on (\S+)", notes)
    assert socket and not Path(socket.group(1)).parent.exists()


def test_the_longest_chains_of_work_started_first(finished_study: Path, settings: Settings) -> None:
    """Every run's first stage is ready once the data are prepared; Snakemake started them
    in the order of their priority, the training left in their run (critical path first),
    so that a long `standard` run does not start last and end the study on one core."""
    log = min((finished_study / ".snakemake" / "log").glob("*.snakemake.log"))  # the study's run
    first_stage = {wildcards(run.stage(0)): run for run in runs(settings.study)}
    started = [first_stage[w] for rule, w in jobs_in(log.read_text()) if rule == "run_stage" and w in first_stage]
    assert sorted(started, key=str) == sorted(first_stage.values(), key=str)
    work = [remaining_work(settings.study, run, 0, settings.evaluation.repeats) for run in started]
    assert len(set(work)) > 1 and work == sorted(work, reverse=True), list(zip(started, work))


# -- reruns -------------------------------------------------------------------------------


def test_rerun_of_a_finished_study_does_nothing(finished_study: Path) -> None:
    assert planned_jobs(finished_study) == set()


def test_an_optimizer_setting_reruns_that_optimizer_only(finished_study: Path, settings: Settings) -> None:
    assert planned_jobs(finished_study, "optimizers.tpe.gamma=0.3") == jobs_of(settings, {"tpe"})


def test_a_range_setting_reruns_the_iis_stages_after_extraction(finished_study: Path, settings: Settings) -> None:
    assert planned_jobs(finished_study, "study.ranges.margin=0.5") == jobs_of(
        settings, set(settings.study.optimizers), from_stage=1, strategies=("iis", "narrowing")
    )


def test_an_edited_conf_file_reruns_what_it_affects(finished_study: Path, settings: Settings, tmp_path: Path) -> None:
    """A copy of the workflow with its own conf/: moving it reruns nothing, editing the GA's
    file reruns the GA's jobs."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(REPO / "Snakefile", copy / "Snakefile")
    for folder in ("workflow", "conf"):
        shutil.copytree(REPO / folder, copy / folder)
    assert planned_jobs(finished_study, snakefile=copy / "Snakefile") == set()
    ga = copy / "conf" / "optimizer" / "ga.yaml"
    values = yaml.safe_load(ga.read_text())
    ga.write_text(yaml.safe_dump({**values, "mutation_sigma": values["mutation_sigma"] * 2}))
    assert planned_jobs(finished_study, snakefile=copy / "Snakefile") == jobs_of(settings, {"ga"})


#: a second data set, the built-in one under another name: its own data and results
SYN2 = "+dataset@datasets.syn2=synthetic"


@pytest.mark.parametrize(
    ("change", "new_runs", "new_data"),
    [
        # the summary gains syn2's progress file and figure, outputs it did not have
        ((SYN2, "study.datasets=[syn2]"), lambda run: run.dataset == "syn2", True),
        ((SYN2, "study.datasets=[synthetic,syn2]"), lambda run: run.dataset == "syn2", True),
        (("study.seeds=[0,1,2]",), lambda run: run.seed == 2, False),
        (("study.seeds=[1]",), lambda run: False, False),
        (("study.optimizers=[ga,random]",), lambda run: False, False),
        (("study.strategies=[standard,iis,narrowing,halving]",), lambda run: run.strategy == "halving", False),
    ],
    ids=["replace-dataset", "add-dataset", "add-seed", "drop-seed", "drop-optimizers", "add-strategy"],
)
def test_a_changed_study_reruns_its_new_runs_and_the_summary(
    finished_study: Path, change: tuple[str, ...], new_runs: Callable[[RunKey], bool], new_data: bool
) -> None:
    """Data sets, optimizers, strategies and seeds decide which runs exist and what the summary holds:
    a change plans the runs it adds (and their data), the summary and the record of the
    configuration, nothing else."""
    changed = compose(*STUDY, *change)
    expected = jobs_of_runs(changed, [run for run in runs(changed.study) if new_runs(run)])
    if new_data:
        expected |= {("fetch_dataset", "dataset=syn2"), ("prepare_dataset", "dataset=syn2, color=rgb")}
    assert planned_jobs(finished_study, *change) == expected


def test_a_finished_study_holds_every_file_its_layout_names(settings: Settings, layout: Layout) -> None:
    """`rule all` asks for every file of the study (Layout.files); the run wrote exactly those,
    besides logs and trial journals."""
    written = {
        path for path in layout.root.rglob("*")
        if path.is_file() and path.suffix != ".log" and not path.match(JOURNALS)
    }
    assert written == set(layout.files(settings.study))


def test_bad_config_fails_before_any_job(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "study.budget=5", check=False)
    assert result.returncode != 0
    assert "must be positive and sum to study.budget=5" in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


#: standard, IIS, successive halving and Hyperband in one tiny study, one seed: 6 evaluations
#: per run (halving 5 at 16 px, 1 at 32 px; Hyperband [3, 1] then [2], eta 3)
HALVING_STUDY = ("study.strategies=[standard,iis,halving,hyperband]", "study.budget=6", "study.iis_budgets=[3,3]", "study.seeds=[0]")


def test_halving_and_hyperband_run_rung_by_rung_through_the_dag(tmp_path: Path) -> None:
    """Each rung a stage; promotions.json between them holds the rung's best (none at a
    Hyperband bracket's end) and is what the next rung evaluated; the test retrained the best
    of the last rungs; the summary has their rows."""
    snakemake(tmp_path, *HALVING_STUDY)
    settings = compose(*STUDY, *HALVING_STUDY)
    layout = Layout(tmp_path / "results" / settings.study.name)
    halved = [run for run in runs(settings.study) if run.strategy in ("halving", "hyperband")]
    assert {run.strategy for run in halved} == {"halving", "hyperband"}
    for run in halved:
        plans = stages(settings.study, run)
        trials = [read_trials(layout.trials(plan.key)) for plan in plans]
        assert [len(t) for t in trials] == [plan.budget for plan in plans]
        assert [read_stage(layout.stage_record(p.key)).resolution for p in plans] == [p.resolution for p in plans]
        for plan in plans[:-1]:
            promotions = read_promotions(layout.handoff(plan.key))
            resolution, promote = promotion(settings.study, plan.key)
            assert promotions.resolution == resolution == plans[plan.key.stage + 1].resolution
            best = sorted(trials[plan.key.stage], key=lambda t: (t.loss, t.number))[:promote]
            assert (promotions.trials, promotions.configs) == ([t.number for t in best], [t.config for t in best])
            if promote:  # the next rung evaluated exactly the promoted configurations
                assert [t.config for t in trials[plan.key.stage + 1]] == promotions.configs
        result = [t for plan in result_stages(settings.study, run) for t in by_hand_best(read_trials(layout.trials(plan.key)))]
        best = min(result, key=lambda t: t.val_error)  # type: ignore[arg-type,return-value]
        test = read_evaluation(layout.test(run))
        assert (test.val_error, test.config, test.resolution) == (best.val_error, best.config, settings.study.ladder[-1])
    rows = {(r["optimizer"], r["strategy"]): r for r in read_csv(layout.runs_table)}
    for run in halved:
        assert int(rows[(run.optimizer, run.strategy)]["n_evaluations"]) == settings.study.budget
    summary = {(r["optimizer"], r["strategy"]): r for r in read_csv(layout.summary_table)}
    assert all(summary[(run.optimizer, run.strategy)]["time_reduction"] != "" for run in halved)
