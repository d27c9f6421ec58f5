# Configuration (validated at load, before any job), the study's layout, and what each
# job depends on (src/iishpo/plan/layout.py owns all three); what each strategy's stages are and
# hand on comes from src/iishpo/settings/strategies.py.
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from iishpo.settings.config import ConfigError, load_settings, overrides_from_mapping
from iishpo.plan.job_resources import evaluation_runtime, training_mem_mb, training_runtime
from iishpo.plan.layout import (
    Layout, RunKey, StageKey, dataset_config, digest, evaluation_config, promotion,
    promotions_config, ranges_config, remaining_work, result_stages, runs, stage_config, stages,
    summary_config,
)
from iishpo.settings.strategies import PROMOTIONS, RANGES, STRATEGIES

OVERRIDES = overrides_from_mapping(config)
# conf/ sits next to the Snakefile that was started (./Snakefile or workflow/Snakefile).
CONF = next(
    d for d in (Path(workflow.basedir) / "conf", Path(workflow.basedir).parent / "conf")
    if (d / "config.yaml").is_file()
)
try:
    SETTINGS = load_settings(OVERRIDES, config_dir=CONF)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}")

STUDY = SETTINGS.study
LAYOUT = Layout.of(SETTINGS)
RAW = SETTINGS.paths["raw"]
PREPARED = SETTINGS.paths["prepared"]
RUN = LAYOUT.run_pattern()
STAGE = LAYOUT.stage_pattern()


# The study's strategies, and those of runs that a target of their own asks for (transfer).
DAG_STRATEGIES = (*STUDY.strategies, *(name for name, s in STRATEGIES.items() if s.target is not None))


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    optimizer="[A-Za-z0-9_.-]+",
    strategy="|".join(DAG_STRATEGIES),
    seed=r"\d+",
    stage=r"\d+",
    resolution=r"\d+",


def same_for_every_job(value):
    """A params value that is not a rerun trigger.

    Snakemake's params trigger skips params computed from a job's input (they follow from
    it). The command and the overrides below are the same for every job; what a job reads
    of the configuration is its `config` param, the digest of its slice (layout.py), so an
    override reruns exactly the jobs whose slice it changes.
    """
    return lambda wildcards, input: value


# Each job composes the same configuration: same overrides, same conf/ directory.
IISHPO = same_for_every_job(
    "IISHPO_CONF={} {} -m iishpo".format(shlex.quote(str(CONF)), shlex.quote(sys.executable))
)
OVERRIDE_ARGS = same_for_every_job(" ".join(shlex.quote(o) for o in OVERRIDES))


def stage_key(wildcards):
    return StageKey(
        wildcards.dataset, wildcards.optimizer, wildcards.strategy, int(wildcards.seed),
        int(wildcards.stage),
    )


def run_key(wildcards):
    return RunKey(wildcards.dataset, wildcards.optimizer, wildcards.strategy, int(wildcards.seed))


def stage_plan(key):
    return stages(STUDY, key.run)[key.stage]


def prepared_file(dataset, resolution):
    color = SETTINGS.datasets[dataset]["color"]
    return f"{PREPARED}/{dataset}/{color}/{resolution}px.npz"


def stage_inputs(wildcards):
    key = stage_key(wildcards)
    inputs = {"data": prepared_file(key.dataset, stage_plan(key).resolution)}
    if key.stage > 0 and STRATEGIES[key.strategy].handoff is not None:
        inputs["handoff"] = str(LAYOUT.handoff(key.run.stage(key.stage - 1)))
    return inputs


def handoff_option(wildcards, input):
    """run-stage's option that reads what the stage before handed on, if anything."""
    if "handoff" not in input.keys():
        return ""
    return f"{STRATEGIES[wildcards.strategy].handoff.option} {input.handoff}"


def handing_on(handoff):
    """The wildcard constraint of the strategies whose stages hand on ``handoff``."""
    return "|".join(s for s in DAG_STRATEGIES if STRATEGIES[s].handoff == handoff) or "(?!)"


def next_resolution(wildcards):
    key = stage_key(wildcards)
    return stage_plan(key.run.stage(key.stage + 1)).resolution


def promotion_of(wildcards):
    """(next resolution, how many to promote) after a stage of successive halving or Hyperband."""
    return promotion(STUDY, stage_key(wildcards))


def result_trials(wildcards):
    """The trials the run's best configuration is chosen from (its strategy's result stages)."""
    return [str(LAYOUT.trials(plan.key)) for plan in result_stages(STUDY, run_key(wildcards))]


# What each job asks of the machine or cluster (conf/resources; src/iishpo/plan/job_resources.py).
# Light jobs get fixed values; training jobs are sized from the prepared data they read.
LIGHT = SETTINGS.resources.light
TRAINING = SETTINGS.resources.training


def training_memory(wildcards, input):
    return training_mem_mb(SETTINGS, TRAINING, input.data)


def stage_runtime(wildcards, input):
    return training_runtime(SETTINGS, TRAINING, input.data, stage_plan(stage_key(wildcards)).budget)


def test_runtime(wildcards, input):
    return evaluation_runtime(SETTINGS, TRAINING, input.data)


# Critical path first: a job's priority is the training left in its run from it on, so
# that Snakemake starts the long chains (a `standard` run) before the short ones.
def stage_priority(wildcards):
    key = stage_key(wildcards)
    return remaining_work(STUDY, key.run, key.stage, SETTINGS.evaluation.repeats)


def handoff_priority(wildcards):
    key = stage_key(wildcards)
    return remaining_work(STUDY, key.run, key.stage + 1, SETTINGS.evaluation.repeats)


def test_priority(wildcards):
    run = run_key(wildcards)
    return remaining_work(STUDY, run, len(stages(STUDY, run)), SETTINGS.evaluation.repeats)
