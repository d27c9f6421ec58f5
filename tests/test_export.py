"""The export into Optuna storages, read back by Optuna itself and shown by optuna-dashboard.

The results are made here with the package's writers: trials sampled from the real space,
one failed trial, an IIS stage in a hand-narrowed space, test records. Every expectation
is read from those files as JSON (or from ``conf/``), never from the export's code. The
slow test runs the workflow's ``optuna`` target on a real tiny study.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import TrialState

from browser import dump_dom, needs_chromium
from helpers import CONF, REPO, TINY, compose
from iishpo.cli import main
from iishpo.narrowing.ranges import describe
from iishpo.plan.layout import (
    Layout,
    RunKey,
    digest,
    evaluation_config,
    ranges_config,
    runs,
    stage_config,
    stages,
)
from iishpo.results.artifacts import EvaluationRecord, RangesRecord, StageRecord, write_record
from iishpo.results.export import ExportRefused, export_study
from iishpo.results.provenance import Provenance, provenance
from iishpo.search.space import SearchSpace, build_space
from iishpo.settings.config import Settings
from iishpo.store import Trial, TrialStore

#: the smoke study (16 and 32 px, budget 4, IIS 2 + 2) with one optimizer: two runs
OVERRIDES = (*TINY, "study.optimizers=[random]", "study.strategies=[standard,iis]")
STANDARD = "smoke/synthetic/random/standard/seed0"
IIS = "smoke/synthetic/random/iis/seed0"
#: the storage of each kind at a path without suffix
STORAGES: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda path: f"sqlite:///{path}.db",
    "journal": lambda path: f"{path}.log",
}
CAUSE = "diverged (non-finite loss)"


@functools.cache
def settings(*extra: str) -> Settings:
    return compose(*OVERRIDES, *extra)


@functools.cache
def made_provenance() -> Provenance:
    """Made once (collecting package versions takes a while)."""
    s = settings()
    return provenance(s.resolved, s.overrides, "cpu", 0)


def narrowed(full: SearchSpace) -> SearchSpace:
    """``full`` with narrower numbers and fewer choices, as range extraction may hand on."""
    changes: dict[str, dict[str, Any]] = {
        "learning_rate": {"low": 1e-3, "high": 1e-2},
        "batch_size": {"choices": (32, 64)},
        "conv_filters_0": {"low": 8, "high": 16},
    }
    return full.with_params([replace(p, **changes.get(p.name, {})) for p in full.params])


def make_results(root: Path, config: Settings) -> Layout:
    """Every run's trial, stage and test files; the standard run's trial 1 diverged, the
    IIS run's second stage searched a narrowed space."""
    layout = Layout(root / "results" / config.study.name)
    rng = random.Random(3)
    for run in runs(config.study):
        plans = stages(config.study, run)
        space = build_space(config.space, plans[0].resolution)
        for plan in plans:
            store = TrialStore(layout.trials(plan.key))
            trials = []
            for i in range(plan.budget):
                failed = run.strategy == "standard" and i == 1
                error = None if failed else round(rng.uniform(0.1, 0.9), 4)
                trial = Trial(
                    i, space.sample(rng), "failed" if failed else "ok", error, 1.0 if failed else error, 2, 1,
                    1.5 + i, 1.5 * (i + 1), "Diverged: loss became nan" if failed else None, 100 + i,
                    f"2026-01-02T03:04:{10 + i:02d}+00:00",
                )
                store.append(trial)
                trials.append(trial)
            write_record(layout.stage_record(plan.key), StageRecord(
                run.dataset, run.optimizer, run.strategy, run.seed, plan.key.stage, plan.resolution, plan.budget,
                len(trials), sum(not t.ok for t in trials), trials[-1].elapsed, None,
                digest(stage_config(config, plan.key)), made_provenance(),
            ))
            if plan is not plans[-1]:
                resolution = plans[plan.key.stage + 1].resolution
                space = narrowed(build_space(config.space, resolution))
                write_record(layout.handoff(plan.key), RangesRecord(
                    space, [], describe(space), digest(ranges_config(config, resolution)),
                ))
        best = min((t for t in trials if t.ok), key=lambda t: t.loss)
        write_record(layout.test(run), EvaluationRecord(
            "accuracy", 0.75, 0.05, [0.7, 0.8], best.loss, best.number, best.config, plans[-1].resolution, 3.0,
            digest(evaluation_config(config, run.dataset)), made_provenance(),
        ))
    return layout


def opened(url: str) -> BaseStorage | str:
    """The storage as Optuna itself opens it."""
    return url if url.startswith("sqlite:") else JournalStorage(JournalFileBackend(url))


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=opened(url))


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def run_of(name: str) -> RunKey:
    _, dataset, optimizer, strategy, seed = name.split("/")
    return RunKey(dataset, optimizer, strategy, int(seed.removeprefix("seed")))


def expected_trials(layout: Layout, run: RunKey) -> list[tuple[int, dict[str, Any]]]:
    """``(stage, record)`` of every line of the run's trials.jsonl files, in stage order."""
    folders = sorted(layout.run_dir(run).glob("stage*"), key=lambda p: int(p.name.removeprefix("stage")))
    return [
        (int(folder.name.removeprefix("stage")), record)
        for folder in folders if (folder / "trials.jsonl").exists() for record in jsonl(folder / "trials.jsonl")
    ]


@pytest.mark.parametrize("kind", STORAGES)
def test_every_trial_is_in_optuna_as_in_its_trials_jsonl(tmp_path: Path, kind: str) -> None:
    layout = make_results(tmp_path, settings())
    url = STORAGES[kind](tmp_path / "optuna")
    export_study(settings(), layout.root, url)
    assert sorted(optuna.get_all_study_names(opened(url))) == sorted([STANDARD, IIS])
    for name in (STANDARD, IIS):
        study, run = load(url, name), run_of(name)
        test = read_json(layout.run_dir(run) / "test.json")
        expected = expected_trials(layout, run)
        last = expected[-1][0]
        assert study.direction == StudyDirection.MINIMIZE and study.metric_names == ["val_error"]
        assert len(study.trials) == len(expected) == 4
        for trial, (stage, record) in zip(study.trials, expected, strict=True):
            stage_record = read_json(layout.run_dir(run) / f"stage{stage}" / "stage.json")
            assert trial.params == record["config"]
            assert trial.state == (TrialState.COMPLETE if record["status"] == "ok" else TrialState.FAIL)
            assert trial.value == record["val_error"]
            attrs = trial.user_attrs
            assert (attrs["stage"], attrs["stage_trial"], attrs["resolution"]) == (
                stage, record["number"], stage_record["resolution"])
            assert (attrs["epochs"], attrs["best_epoch"], attrs["wall_time"]) == (
                record["epochs"], record["best_epoch"], record["wall_time"])
            assert trial.duration is not None and trial.duration.total_seconds() == pytest.approx(record["wall_time"])
            if record["status"] == "failed":
                assert (attrs["fail_cause"], attrs["error"]) == (CAUSE, record["error"])
            named = stage == last and record["number"] == test["trial"]
            assert attrs.get("test_score") == (test["test_score"] if named else None)
            assert attrs.get("test_metric") == (test["metric"] if named else None)
        stage_record = read_json(layout.run_dir(run) / "stage0" / "stage.json")
        assert study.user_attrs["git_commit"] == stage_record["provenance"]["git"]["commit"]
        assert study.user_attrs["git_dirty"] == stage_record["provenance"]["git"]["dirty"]
        assert study.user_attrs["missing"] == [] and len(study.user_attrs["config_digest"]) == 16
    failed = [t for t in load(url, STANDARD).trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["stage_trial"] for t in failed] == [1]


def test_each_stage_has_the_distributions_of_the_space_it_searched(tmp_path: Path) -> None:
    layout = make_results(tmp_path, settings())
    url = STORAGES["sqlite"](tmp_path / "optuna")
    export_study(settings(), layout.root, url)
    declared = yaml.safe_load((CONF / "space" / "cnn.yaml").read_text())
    small = yaml.safe_load((CONF / "space" / "cnn_small.yaml").read_text())
    ranges = read_json(layout.run_dir(run_of(IIS)) / "stage0" / "ranges.json")
    narrowed_params = {p["name"]: p for p in ranges["space"]["params"]}
    study = load(url, IIS)
    assert study.user_attrs["narrowed_ranges"] == {"1": ranges["ranges"]}
    by_stage = {stage: [t for t in study.trials if t.user_attrs["stage"] == stage] for stage in (0, 1)}
    assert [len(trials) for trials in by_stage.values()] == [2, 2]
    for trial in by_stage[0]:  # the full space at 16 px: 2x2 pooling allows 3 conv layers
        lr = declared["learning_rate"]
        assert trial.distributions["learning_rate"] == FloatDistribution(lr["low"], lr["high"], log=True)
        assert trial.distributions["n_conv"] == IntDistribution(1, 3)
    for trial in by_stage[1]:
        assert set(trial.distributions) == set(trial.params)
        for name, dist in trial.distributions.items():
            param = narrowed_params[name]
            if param["kind"] == "categorical":  # Optuna keeps one set of choices per study
                assert dist == CategoricalDistribution(small.get(name, declared[name])["choices"])
            else:
                assert (dist.low, dist.high, dist.log) == (param["low"], param["high"], param["log"])
        assert trial.distributions["learning_rate"] == FloatDistribution(1e-3, 1e-2, log=True)
        assert trial.distributions["conv_filters_0"] == IntDistribution(8, 16, log=True)
        n_conv = trial.params["n_conv"]
        assert {p for p in trial.params if p.startswith("conv_filters_")} == {f"conv_filters_{i}" for i in range(n_conv)}


@pytest.mark.parametrize("kind", STORAGES)
def test_exporting_twice_adds_nothing(tmp_path: Path, kind: str) -> None:
    layout = make_results(tmp_path, settings())
    url = STORAGES[kind](tmp_path / "optuna")
    first = export_study(settings(), layout.root, url)
    second = export_study(settings(), layout.root, url)
    assert sorted(first.written) == sorted(second.unchanged) == sorted([STANDARD, IIS])
    assert second.written == second.replaced == []
    assert sorted(optuna.get_all_study_names(opened(url))) == sorted([STANDARD, IIS])
    assert [len(load(url, name).trials) for name in (STANDARD, IIS)] == [4, 4]


def test_an_unfinished_study_exports_what_exists_and_then_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    layout = make_results(tmp_path, settings())
    run = run_of(IIS)
    late = [layout.run_dir(run) / "stage1" / "stage.json", layout.run_dir(run) / "stage1" / "trials.jsonl",
            layout.test(run)]
    kept = {path: path.read_bytes() for path in late}
    for path in late:
        path.unlink()
    url = STORAGES["sqlite"](tmp_path / "optuna")
    with caplog.at_level(logging.WARNING, logger="iishpo.results.export"):
        report = export_study(settings(), layout.root, url)
    assert report.missing == [late[0], late[2]]
    assert all(str(path) in caplog.text for path in report.missing) and "not finished" in caplog.text
    study = load(url, IIS)
    assert [t.params for t in study.trials] == [r["config"] for r in jsonl(layout.run_dir(run) / "stage0" / "trials.jsonl")]
    assert study.user_attrs["missing"] == [
        "synthetic/random/iis/seed0/stage1/stage.json", "synthetic/random/iis/seed0/test.json"]
    for path, data in kept.items():
        path.write_bytes(data)
    again = export_study(settings(), layout.root, url)
    assert (again.written, again.replaced, again.unchanged, again.missing) == ([IIS], [IIS], [STANDARD], [])
    study = load(url, IIS)
    assert [t.params for t in study.trials] == [record["config"] for _, record in expected_trials(layout, run)]
    assert study.user_attrs["missing"] == [] and optuna.get_all_study_names(opened(url)).count(IIS) == 1


def test_a_storage_with_trials_of_another_configuration_is_refused_naming_the_study(tmp_path: Path) -> None:
    url = STORAGES["journal"](tmp_path / "optuna")
    export_study(settings(), make_results(tmp_path / "a", settings()).root, url)
    before = {name: (load(url, name).user_attrs, len(load(url, name).trials)) for name in (STANDARD, IIS)}
    other = settings("trainer.max_epochs=3")
    with pytest.raises(ExportRefused, match=f"another configuration .*{STANDARD}, {IIS}"):
        export_study(other, make_results(tmp_path / "b", other).root, url)
    assert {name: (load(url, name).user_attrs, len(load(url, name).trials)) for name in (STANDARD, IIS)} == before


def test_results_of_another_configuration_are_refused_naming_the_files(tmp_path: Path) -> None:
    layout = make_results(tmp_path, settings())
    url = STORAGES["sqlite"](tmp_path / "optuna")
    with pytest.raises(ExportRefused, match="another configuration") as caught:
        export_study(settings("trainer.max_epochs=3"), layout.root, url)
    assert str(layout.run_dir(run_of(IIS)) / "stage1" / "stage.json") in str(caught.value)
    assert not (tmp_path / "optuna.db").exists()


def test_results_with_nothing_finished_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportRefused, match="no finished stage of study 'smoke'"):
        export_study(settings(), tmp_path / "results" / "smoke", STORAGES["sqlite"](tmp_path / "optuna"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", [
    "postgresql://user@localhost/optuna", "redis://localhost:6379", "journal:///{tmp}/optuna.log", "sqlite://",
    "{tmp}/optuna.db", "{tmp}/optuna.jsonl",
])
def test_an_unknown_storage_form_is_refused_before_anything_is_written(tmp_path: Path, url: str) -> None:
    layout = make_results(tmp_path, settings())
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ExportRefused, match=r"allowed: sqlite:///PATH .* or PATH\.log"):
        export_study(settings(), layout.root, url.format(tmp=tmp_path))
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(("make", "url", "says"), [
    (lambda tmp: (tmp / "file").write_text(""), "sqlite:///{tmp}/file/optuna.db", "cannot write .*Not a directory"),
    (lambda tmp: (tmp / "file").write_text(""), "{tmp}/file/deeper/optuna.log", "cannot write .*Not a directory"),
    (lambda tmp: (tmp / "optuna.db").mkdir(), "sqlite:///{tmp}/optuna.db", "cannot write .*Is a directory"),
    (lambda tmp: (tmp / "optuna.log").write_text("{}\n"), "sqlite:///{tmp}/optuna.log", "is not an SQLite file"),
    (lambda tmp: (tmp / "optuna.log").write_bytes(b"SQLite format 3\x00..."), "{tmp}/optuna.log",
     "is an SQLite file; name it sqlite:///"),
    pytest.param(lambda tmp: (tmp / "closed").mkdir(mode=0o555), "sqlite:///{tmp}/closed/optuna.db",
                 "cannot write .*Permission denied",
                 marks=pytest.mark.skipif(os.geteuid() == 0, reason="root may write any folder")),
])
def test_a_storage_that_cannot_be_written_is_refused_before_anything_is_written(
    tmp_path: Path, make: Callable[[Path], object], url: str, says: str,
) -> None:
    layout = make_results(tmp_path, settings())
    make(tmp_path)
    before = {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")}
    with pytest.raises(ExportRefused, match=says):
        export_study(settings(), layout.root, url.format(tmp=tmp_path))
    assert {path: path.read_bytes() if path.is_file() else None for path in tmp_path.rglob("*")} == before


def test_the_command_exports_and_answers_a_refusal_with_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("IISHPO_CONF", str(CONF))
    layout = make_results(tmp_path, settings())
    url = STORAGES["sqlite"](tmp_path / "optuna")
    command = ["export-optuna", "--results", str(layout.root), "--storage"]
    assert main([*command, url, *OVERRIDES]) == 0
    assert sorted(optuna.get_all_study_names(url)) == sorted([STANDARD, IIS])
    assert main([*command, "mysql://localhost/optuna", *OVERRIDES]) == 1
    assert "scheme 'mysql' is not supported" in capsys.readouterr().err


# -- optuna-dashboard -----------------------------------------------------------------------

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextmanager
def dashboard(storage: str, log: Path) -> Iterator[str]:
    """optuna-dashboard serving ``storage`` on a free loopback port, stopped on exit; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                NO_PROXY.open(f"{base}/api/studies", timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not answer on {base}:\n{log.read_text()}")
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


class HistoryPlot(HTMLParser):
    """The points and axis titles inside ``#plot-history`` (plotly's SVG) of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.points = 0
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if self.depth:
            self.depth += 1
            self.points += found.get("class") == "point"
        elif found.get("id") == "plot-history":
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        self.depth = max(0, self.depth - 1)

    def handle_data(self, data: str) -> None:
        if self.depth and data.strip():
            self.texts.append(data.strip())


@needs_chromium
@pytest.mark.parametrize("kind", STORAGES)
def test_optuna_dashboard_plots_the_history_of_every_completed_trial(tmp_path: Path, kind: str) -> None:
    layout = make_results(tmp_path, settings())
    url = STORAGES[kind](tmp_path / "optuna")
    export_study(settings(), layout.root, url)
    with dashboard(url, tmp_path / "dashboard.log") as base:
        summaries = json.loads(NO_PROXY.open(f"{base}/api/studies", timeout=30).read())["study_summaries"]
        ids = {s["study_name"]: s["study_id"] for s in summaries}
        assert sorted(ids) == sorted([STANDARD, IIS])
        plots = {name: HistoryPlot() for name in ids}
        for name, plot in plots.items():
            plot.feed(dump_dom(f"{base}/dashboard/studies/{ids[name]}"))
    for name, plot in plots.items():
        completed = [r for _, r in expected_trials(layout, run_of(name)) if r["status"] == "ok"]
        assert plot.points == len(completed), (name, plot.texts)
        assert "val_error" in plot.texts and "Trial" in plot.texts
    assert plots[STANDARD].points == 3  # its failed trial has no value to plot


@pytest.mark.slow
def test_the_optuna_target_exports_a_real_study_after_its_summary(tmp_path: Path) -> None:
    overrides = " ".join([*TINY, "study.optimizers=[random,tpe]", "study.strategies=[standard,iis]", "evaluation.repeats=1"])
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
        "--cores", "2", "optuna", "--config", f"overrides={overrides}",
    ]
    env = {**os.environ, "IISHPO_ROOT": str(tmp_path)}  # data and results land in tmp_path
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=1800, env=env)
    assert result.returncode == 0, result.stderr[-6000:]
    config = compose(*overrides.split())
    layout = Layout(tmp_path / "results" / config.study.name)
    assert layout.summary_markdown.exists()
    url = f"sqlite:///{layout.root / 'optuna.db'}"
    names = [f"smoke/{run.dataset}/{run.optimizer}/{run.strategy}/seed{run.seed}" for run in runs(config.study)]
    assert sorted(optuna.get_all_study_names(url)) == sorted(names) and len(names) == 4
    for name in names:
        expected = expected_trials(layout, run_of(name))
        trials = load(url, name).trials
        assert [(t.params, t.value, t.state.name) for t in trials] == [
            (r["config"], r["val_error"], "COMPLETE" if r["status"] == "ok" else "FAIL") for _, r in expected]
        test = read_json(layout.run_dir(run_of(name)) / "test.json")
        scored = [t for t in trials if "test_score" in t.user_attrs]
        assert [(t.user_attrs["stage_trial"], t.user_attrs["test_score"]) for t in scored] == [
            (test["trial"], test["test_score"])]
    assert "wrote" in (layout.root / "export_optuna.log").read_text()
