"""The run layout: enumeration of runs and stages, paths, and each job's configuration slice."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from helpers import TINY, compose
from iishpo import cli
from iishpo.plan.layout import (
    Layout,
    RunKey,
    StageKey,
    dataset_config,
    digest,
    evaluation_config,
    ranges_config,
    remaining_work,
    runs,
    stage_config,
    stages,
    summary_config,
    transfer_config,
    transfer_runs,
    transfer_sources,
)
from iishpo.settings.config import ConfigError, Study
from iishpo.settings.strategies import STRATEGIES, Handoff, Strategy


def test_runs_are_every_dataset_optimizer_strategy_seed() -> None:
    study = compose(
        *TINY, "study.seeds=[3,1]", "study.optimizers=[tpe,random]", "study.strategies=[standard,iis]"
    ).study
    expected = [
        RunKey(d, o, s, seed)
        for d, o, s, seed in itertools.product(["synthetic"], ["tpe", "random"], ["standard", "iis"], [3, 1])
    ]
    assert runs(study) == expected


def test_stages_follow_the_strategy() -> None:
    study = compose(*TINY, "study.ladder=[8,16,32]", "study.budget=6", "study.iis_budgets=[3,2,1]").study
    iis = RunKey("synthetic", "ga", "iis", 2)
    assert [(p.key, p.resolution, p.budget) for p in stages(study, iis)] == [
        (StageKey("synthetic", "ga", "iis", 2, 0), 8, 3),
        (StageKey("synthetic", "ga", "iis", 2, 1), 16, 2),
        (StageKey("synthetic", "ga", "iis", 2, 2), 32, 1),
    ]
    standard = RunKey("synthetic", "ga", "standard", 2)
    assert [(p.key, p.resolution, p.budget) for p in stages(study, standard)] == [
        (StageKey("synthetic", "ga", "standard", 2, 0), 32, 6)
    ]


def test_remaining_work_counts_later_stages_by_pixels_and_the_test_retrainings() -> None:
    study = compose(
        *TINY, "study.ladder=[8,16,32]", "study.budget=6", "study.iis_budgets=[3,2,1]",
        "study.strategies=[standard,iis,independent]",
    ).study
    iis = RunKey("synthetic", "ga", "iis", 0)
    # 3 evaluations at 8 px cost 3/16 of one at 32 px, 2 at 16 px 2/4; then 3 retrainings
    assert remaining_work(study, iis, 0, test_trainings=3) == 3 / 16 + 2 / 4 + 1 + 3
    assert remaining_work(study, iis, 2, test_trainings=3) == 1 + 3
    assert remaining_work(study, iis, 3, test_trainings=3) == 3  # the test evaluation alone
    assert remaining_work(study, RunKey("synthetic", "ga", "standard", 0), 0, test_trainings=2) == 6 + 2
    # Experiment 1's runs have no test evaluation
    assert remaining_work(study, RunKey("synthetic", "ga", "independent", 0), 1, test_trainings=3) == 6 / 4 + 6


def test_paths_and_snakemake_patterns_agree() -> None:
    layout = Layout.of(compose(*TINY, "paths.root=/data/hpo", "paths.results=out"))
    key = StageKey("synthetic", "tpe", "iis", 3, 1)
    out = Path("/data/hpo/out/smoke")  # relative paths are relative to paths.root
    assert layout.root == out
    assert layout.trials(key) == out / "synthetic/tpe/iis/seed3/stage1/trials.jsonl"
    assert layout.stage_record(key).name == "stage.json" and layout.handoff(key).name == "ranges.json"
    assert layout.test(key.run) == out / "synthetic/tpe/iis/seed3/test.json"
    assert Path(layout.stage_pattern().format(**asdict(key))) == layout.stage_dir(key)
    assert Path(layout.run_pattern().format(**asdict(key.run))) == layout.run_dir(key.run)
    assert layout.progress("synthetic") == out / "progress/synthetic.csv"


def test_files_are_every_output_of_every_run_the_summary_and_the_importance_analysis() -> None:
    study = compose(*TINY, "study.optimizers=[tpe]", "study.strategies=[standard,iis,independent]").study
    run = "synthetic/tpe/{}/seed0"
    importance = "importance/synthetic/"
    expected = [
        "configuration.json",
        f"{run.format('standard')}/stage0/trials.jsonl", f"{run.format('standard')}/stage0/stage.json",
        f"{run.format('standard')}/test.json",
        f"{run.format('iis')}/stage0/trials.jsonl", f"{run.format('iis')}/stage0/stage.json",
        f"{run.format('iis')}/stage0/ranges.json",
        f"{run.format('iis')}/stage1/trials.jsonl", f"{run.format('iis')}/stage1/stage.json",
        f"{run.format('iis')}/test.json",
        # Experiment 1: a stage per resolution, each from the full space; no test evaluation
        f"{run.format('independent')}/stage0/trials.jsonl", f"{run.format('independent')}/stage0/stage.json",
        f"{run.format('independent')}/stage1/trials.jsonl", f"{run.format('independent')}/stage1/stage.json",
        "summary.md", "table1.md", "comparisons.csv", "summary.csv", "runs.csv", "metrics.json",
        "progress/synthetic.csv", "figures/fig5_progress_synthetic.png", "figures/fig5_progress_synthetic.svg",
        "figures/mean_rank_synthetic.png", "figures/mean_rank_synthetic.svg",
        f"{importance}importance.md", f"{importance}importance.csv",
        f"{importance}fig2_importance.png", f"{importance}fig2_importance.svg",
        f"{importance}fig3_learning_rate.png", f"{importance}fig3_learning_rate.svg",
        f"{importance}fig4_learning_rate_fc.png", f"{importance}fig4_learning_rate_fc.svg",
    ]
    assert Layout("/r").files(study) == [Path("/r", path) for path in expected]
    standard = compose(*TINY, "study.optimizers=[tpe]", "study.strategies=[standard]").study
    assert Layout("/r").files(standard) == [Path("/r", path) for path in expected[:4] + expected[14:25]]


def test_transfer_runs_one_per_dataset_and_its_sources_add_the_promoting_runs() -> None:
    syn2 = ("+dataset@datasets.syn2=synthetic", "study.datasets=[synthetic,syn2]")
    study = compose(*TINY, *syn2, "study.optimizers=[tpe,ga]", "study.strategies=[standard,halving]",
                    "study.transfer.seed=4").study
    assert transfer_runs(study) == [RunKey("synthetic", "random", "transfer", 4), RunKey("syn2", "random", "transfer", 4)]
    assert transfer_sources(study, "syn2") == [
        RunKey("syn2", "random", "transfer", 4), RunKey("syn2", "tpe", "halving", 0), RunKey("syn2", "ga", "halving", 0)]
    # a transfer stage per ladder resolution, each with every configuration
    assert [(p.resolution, p.budget) for p in stages(study, transfer_runs(study)[0])] == [(16, 30), (32, 30)]
    run = "synthetic/random/transfer/seed4"
    assert Layout("/r").transfer_files(compose(*TINY, "study.transfer.seed=4").study) == [Path("/r", path) for path in (
        f"{run}/stage0/trials.jsonl", f"{run}/stage0/stage.json", f"{run}/stage0/promotions.json",
        f"{run}/stage1/trials.jsonl", f"{run}/stage1/stage.json",
        "transfer/synthetic/transfer.md", "transfer/synthetic/transfer.json",
        "transfer/synthetic/rank_correlation.png", "transfer/synthetic/rank_correlation.svg",
    )]


def test_a_new_strategy_is_one_entry_of_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy whose stages hand the next a file other than ranges (as successive halving's
    promotions will) gets its stages, files, priorities and checks from its entry alone."""
    promotions = Handoff("promotions.json", "--promotions")

    def rungs(study: Study) -> list[tuple[int, int]]:
        return [(r, study.budget // 2**k) for k, r in enumerate(study.ladder)]

    monkeypatch.setitem(STRATEGIES, "rungs", Strategy("rungs", rungs, handoff=promotions, evaluated=True, line_style="-"))
    study = compose(
        *TINY, "study.optimizers=[tpe]", "study.strategies=[rungs]", "study.ladder=[8,16,32]", "study.budget=8"
    ).study
    run = RunKey("synthetic", "tpe", "rungs", 0)
    assert [(p.resolution, p.budget) for p in stages(study, run)] == [(8, 8), (16, 4), (32, 2)]
    stage = "synthetic/tpe/rungs/seed0/stage{}/"
    assert Layout("/r").run_files(study, run) == [Path("/r", path) for path in (
        stage.format(0) + "trials.jsonl", stage.format(0) + "stage.json", stage.format(0) + "promotions.json",
        stage.format(1) + "trials.jsonl", stage.format(1) + "stage.json", stage.format(1) + "promotions.json",
        stage.format(2) + "trials.jsonl", stage.format(2) + "stage.json", "synthetic/tpe/rungs/seed0/test.json",
    )]
    assert remaining_work(study, run, 1, test_trainings=3) == 4 / 4 + 2 + 3
    with pytest.raises(ConfigError, match=r"the rungs strategy needs a ladder of >= 2 resolutions, got \[32\]"):
        compose(*TINY, "study.strategies=[rungs]", "study.ladder=[32]")
    with pytest.raises(ValueError, match="strategy 'standard' hands nothing from one stage to the next"):
        Layout("/r").handoff(StageKey("synthetic", "tpe", "standard", 0, 0))


def test_check_prints_the_layout_enumeration(capsys: pytest.CaptureFixture[str]) -> None:
    overrides = [*TINY, "study.seeds=[0,4]"]
    assert cli.main(["check", *overrides]) == 0
    printed = json.loads(capsys.readouterr().out)
    study = compose(*overrides).study
    assert printed["study"] == "smoke"
    assert [(r["dataset"], r["optimizer"], r["strategy"], r["seed"]) for r in printed["runs"]] == [
        (r.dataset, r.optimizer, r.strategy, r.seed) for r in runs(study)
    ]
    assert [r["stages"] for r in printed["runs"]][:2] == [[[32, 4]], [[32, 4]]]


def test_digest_ignores_key_order_and_sees_values() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
    assert digest({"a": 1}) != digest({"a": 1.5})


TPE0 = StageKey("synthetic", "tpe", "iis", 0, 0)
RANDOM0 = StageKey("synthetic", "random", "iis", 0, 0)
TRANSFER0 = StageKey("synthetic", "random", "transfer", 0, 0)


def fingerprints(*overrides: str) -> dict[str, str]:
    """The digest of every kind of job's slice under ``TINY + overrides``."""
    settings = compose(*TINY, *overrides)
    return {
        "data": digest(dataset_config(settings, "synthetic")),
        "tpe stage": digest(stage_config(settings, TPE0)),
        "random stage": digest(stage_config(settings, RANDOM0)),
        "ranges": digest(ranges_config(settings, 32)),
        "test": digest(evaluation_config(settings, "synthetic")),
        "summary": digest(summary_config(settings)),
        "transfer stage": digest(stage_config(settings, TRANSFER0)),
        "transfer": digest(transfer_config(settings)),
    }


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ("optimizers.tpe.gamma=0.3", {"tpe stage"}),
        ("study.ranges.margin=0.5", {"ranges", "summary"}),
        ("trainer.max_epochs=3", {"tpe stage", "random stage", "test", "transfer stage"}),
        ("space.learning_rate.high=0.2", {"tpe stage", "random stage", "ranges", "transfer stage"}),
        ("datasets.synthetic.seed=7", {"data"}),
        ("datasets.synthetic.test_metric=mean_class_accuracy", {"data", "test", "summary"}),
        ("study.seeds=[0,1]", {"summary"}),
        ("study.max_failure_fraction=0.25", {"tpe stage", "random stage", "summary", "transfer stage"}),
        # the transfer target's settings: its stages and its analysis, not the study's jobs
        ("study.transfer.configurations=8", {"transfer stage", "transfer"}),
        ("study.transfer.resamples=500", {"transfer"}),
    ],
)
def test_each_job_depends_on_its_slice_only(override: str, changed: set[str]) -> None:
    before, after = fingerprints(), fingerprints(override)
    assert {job for job in before if before[job] != after[job]} == changed
