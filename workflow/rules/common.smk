# Configuration (validated at load, before any job) and the helpers that turn it into paths.
import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from iishpo.config import ConfigError, load_settings, overrides_from_mapping

OVERRIDES = overrides_from_mapping(config)
# conf/ sits at the repository root, whether Snakemake was started with ./Snakefile or
# with workflow/Snakefile.
CONF = next(
    d for d in (Path(workflow.basedir) / "conf", Path(workflow.basedir).parent / "conf")
    if (d / "config.yaml").is_file()
)
try:
    SETTINGS = load_settings(OVERRIDES, config_dir=CONF)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}")

STUDY = SETTINGS.study
RESULTS = f"{SETTINGS.paths['results']}/{STUDY.name}"
RAW = SETTINGS.paths["raw"]
PREPARED = SETTINGS.paths["prepared"]
RUN = RESULTS + "/{dataset}/{optimizer}/{strategy}/seed{seed}"
STAGE = RUN + "/stage{stage}"

# Each job composes the same configuration: same overrides, same conf/ directory.
# PYTHONHASHSEED is fixed because SMAC is not reproducible across processes without it.
IISHPO = "PYTHONHASHSEED=0 IISHPO_CONF={} {} -m iishpo".format(
    shlex.quote(str(CONF)), shlex.quote(sys.executable)
)
OVERRIDE_ARGS = " ".join(shlex.quote(o) for o in OVERRIDES)


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    optimizer="[A-Za-z0-9_.-]+",
    strategy="|".join(STUDY.strategies),
    seed=r"\d+",
    stage=r"\d+",
    resolution=r"\d+",


def prepared_file(dataset, resolution):
    color = SETTINGS.datasets[dataset]["color"]
    return f"{PREPARED}/{dataset}/{color}/{resolution}px.npz"


def stage_resolution(wildcards):
    return STUDY.stages(wildcards.strategy)[int(wildcards.stage)][0]


def last_stage(strategy):
    return len(STUDY.stages(strategy)) - 1


def dataset_config(wildcards):
    return json.dumps(SETTINGS.datasets[wildcards.dataset], sort_keys=True)
