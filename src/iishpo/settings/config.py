"""Compose the configuration from ``conf/`` with Hydra and validate it before any work.

``load_settings(overrides)`` is the one entry point: the Snakefile calls it to derive the
DAG, and every job calls it with the same overrides to get the same settings. Everything
that can be checked without data is checked here, so a typo or an impossible ladder fails
at load time with a message that says what was wrong and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from iishpo.conf import CONF_ENV, conf_dir
from iishpo.data import sources
from iishpo.data.paths import resolve_paths
from iishpo.optimizers import GROUP, OptimizerSettings, build_settings, optimizer_names
from iishpo.search.hyperparameters import check_reads
from iishpo.search.space import parse_space
from iishpo.settings.resources import Resources
from iishpo.settings.resources import from_config as resources_from_config
from iishpo.settings.strategies import STRATEGIES
from iishpo.typed import SettingsError, build

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: "auto" (iishpo.training.device.precision_for) and the precisions Lightning's Trainer takes as
#: strings, aliases included: checked here so that a typo fails at load, not at the first
#: training (tests/test_config.py holds the list against Lightning's own)
PRECISIONS = (
    "auto", "64-true", "32-true", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
    "transformer-engine", "transformer-engine-float16", "64", "32", "16", "bf16",
)
TEST_METRICS = ("accuracy", "mean_class_accuracy")
T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is allowed."""


#: range-extraction rules: "evidence" narrows a parameter only as far as the trials show it
#: matters (iishpo.narrowing.evidence); "hull" keeps the best trials' [min, max] plus a margin
RANGE_RULES = ("evidence", "hull")


@dataclass(frozen=True)
class RangeExtraction:
    """How IIS narrows the space between stages (``conf/ranges/*.yaml``)."""

    rule: str
    top_fraction: float
    min_trials: int
    n_initial: int
    #: hull: widen each numeric range by this fraction of its (log) width
    margin: float
    #: evidence: significance level of the per-parameter tests
    alpha: float
    #: evidence: confidence of the bound on the good region's extent
    confidence: float
    #: evidence: never keep less than this fraction of a parameter's full (log) width
    min_width: float


@dataclass(frozen=True)
class Transfer:
    """The ``transfer`` runs and their rank-correlation analysis (``conf/transfer/default.yaml``)."""

    #: random configurations, each trained at every ladder resolution
    configurations: int
    #: the transfer run's seed: its draws and its trainings
    seed: int
    #: the best fraction of configurations whose overlap is reported (at least one)
    top_fraction: float
    #: bootstrap resamples of each 95% interval
    resamples: int


@dataclass(frozen=True)
class Study:
    name: str
    datasets: tuple[str, ...]
    optimizers: tuple[str, ...]
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    ladder: tuple[int, ...]
    budget: int
    iis_budgets: tuple[int, ...]
    ranges: RangeExtraction
    max_failure_fraction: float
    #: successive halving and Hyperband: each rung trains the best 1/eta of the one before
    #: again (``conf/halving/default.yaml``)
    eta: int
    #: the ``transfer`` target's runs and analysis (``conf/transfer/default.yaml``)
    transfer: Transfer

    def stages(self, strategy: str) -> list[tuple[int, int]]:
        """``(resolution, budget)`` of each stage of a run with this strategy."""
        return STRATEGIES[strategy].stages(self)


@dataclass(frozen=True)
class Trainer:
    max_epochs: int
    patience: int
    momentum: float
    accelerator: str
    precision: str
    threads: int
    eval_batch_size: int
    #: most memory (MB) one evaluation may need beyond the data set, estimated from the
    #: configuration before training (see ``iishpo.plan.memory_estimate.estimate_memory_mb``); a
    #: configuration over it fails as a trial. ``None``: no limit.
    memory_limit_mb: float | None


@dataclass(frozen=True)
class Evaluation:
    """How a run's test score is measured (``conf/evaluation/default.yaml``)."""

    repeats: int


@dataclass(frozen=True)
class Settings:
    """The validated configuration; ``resolved`` is the plain dict saved with results.

    ``optimizers`` maps every composed optimizer to its typed settings.
    """

    study: Study
    trainer: Trainer
    evaluation: Evaluation
    resources: Resources
    space: dict[str, Any]
    optimizers: dict[str, OptimizerSettings]
    datasets: dict[str, dict[str, Any]]
    paths: dict[str, str]
    overrides: tuple[str, ...]
    resolved: dict[str, Any]


#: Hydra's compositions made in this process, by everything that determines them (see
#: :func:`_composition_key`). A composition takes Hydra 0.3-0.5 s; every job of a study
#: composes the same one, and the warm worker composes it once for the jobs it forks.
_COMPOSED: dict[tuple[Any, ...], dict[str, Any]] = {}
#: the environment variables a configuration file reads (``${oc.env:NAME,...}``)
_ENV_REFERENCE = re.compile(rb"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")


def _composition_key(directory: Path, overrides: Sequence[str]) -> tuple[Any, ...]:
    """The directory, the overrides, the contents of every configuration file under it and
    the values of the environment variables those files read."""
    contents = hashlib.sha256()
    variables: set[str] = set()
    for file in sorted(directory.rglob("*.yaml")):
        text = file.read_bytes()
        contents.update(b"%s\0%d\0%s" % (file.relative_to(directory).as_posix().encode(), len(text), text))
        variables.update(name.decode() for name in _ENV_REFERENCE.findall(text))
    environment = tuple((name, os.environ.get(name)) for name in sorted(variables))
    return str(directory), tuple(overrides), contents.hexdigest(), environment


def compose_config(overrides: Sequence[str] = (), config_dir: Path | None = None) -> dict[str, Any]:
    """The Hydra-composed configuration as a plain, fully resolved dict."""
    directory = (config_dir or conf_dir()).resolve()
    if not (directory / "config.yaml").is_file():
        raise ConfigError(
            f"no config.yaml in {directory}: run from the repository root or set {CONF_ENV}"
        )
    key = _composition_key(directory, overrides)
    if key not in _COMPOSED:
        _store_every_optimizer(directory)
        try:
            with initialize_config_dir(config_dir=str(directory), version_base=None):
                cfg = compose(config_name="config", overrides=list(overrides))
            _COMPOSED[key] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(f"cannot compose the configuration with overrides {list(overrides)}: {err}") from err
    try:
        return resolve_paths(_COMPOSED[key], directory)  # a copy: callers may change it
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _store_every_optimizer(directory: Path) -> None:
    """Give Hydra the option ``optimizers: every`` (conf/config.yaml): each
    ``optimizer/<name>.yaml`` of ``directory`` as ``optimizers.<name>``, at that place in the
    defaults list (so that a study may still override them). A defaults list names its
    entries one by one; no glob or folder entry composes a whole group under its names."""
    defaults = [{f"/{GROUP}@{name}": name} for name in optimizer_names(directory)]
    ConfigStore.instance().store(group="optimizers", name="every", node={"defaults": defaults})


def _build(cls: type[T], data: Any, where: str) -> T:
    try:
        return build(cls, data, where)
    except SettingsError as err:
        raise ConfigError(str(err)) from err


def _nonempty(values: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    if not values:
        raise ConfigError(f"{where} must be a non-empty list")
    return values


def _names(values: tuple[str, ...], where: str, allowed: Collection[str]) -> tuple[str, ...]:
    _nonempty(values, where)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"{where}: {bad} not available; allowed: {sorted(allowed)}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where} has duplicates: {list(values)}")
    return tuple(values)


def _study(raw: dict[str, Any], cfg: dict[str, Any]) -> Study:
    study = _build(Study, raw, "study")
    _names(study.datasets, "study.datasets", list(cfg.get("datasets", {})))
    _names(study.optimizers, "study.optimizers", list(cfg.get("optimizers", {})))
    for name in study.strategies:
        target = STRATEGIES[name].target if name in STRATEGIES else None
        if target is not None:
            raise ConfigError(
                f"study.strategies: {name!r} is not listed in a study; its runs come from their own "
                f"target: snakemake --cores all {target}"
            )
    _names(study.strategies, "study.strategies", STRATEGIES)
    for where, values in (("seeds", study.seeds), ("ladder", study.ladder), ("iis_budgets", study.iis_budgets)):
        _nonempty(values, f"study.{where}")
    if min(study.seeds) < 0:
        raise ConfigError(f"study.seeds must be >= 0, got {list(study.seeds)}")
    if not study.name or "/" in study.name:
        raise ConfigError(f"study.name must be a non-empty name without '/', got {study.name!r}")
    if len(set(study.seeds)) != len(study.seeds):
        raise ConfigError(f"study.seeds has duplicates: {list(study.seeds)}")
    if any(b <= a for a, b in zip(study.ladder, study.ladder[1:])):
        raise ConfigError(f"study.ladder must be strictly increasing, got {list(study.ladder)}")
    if study.ladder[0] < 4:
        raise ConfigError(f"study.ladder resolutions must be >= 4 px, got {list(study.ladder)}")
    if study.budget < 1:
        raise ConfigError(f"study.budget must be a positive integer, got {study.budget!r}")
    _halving(study)
    _transfer(study.transfer)
    handing_on = [s for s in study.strategies if STRATEGIES[s].handoff is not None]
    if handing_on and len(study.ladder) < 2:
        raise ConfigError(
            f"the {' and '.join(handing_on)} strateg{'ies need' if len(handing_on) > 1 else 'y needs'} "
            f"a ladder of >= 2 resolutions, got {list(study.ladder)}"
        )
    if any(STRATEGIES[s].uses_iis_budgets for s in study.strategies):
        if len(study.iis_budgets) != len(study.ladder):
            raise ConfigError(
                f"study.iis_budgets needs one budget per ladder resolution: ladder "
                f"{list(study.ladder)} has {len(study.ladder)}, iis_budgets {list(study.iis_budgets)}"
            )
        if min(study.iis_budgets) < 1 or sum(study.iis_budgets) != study.budget:
            raise ConfigError(
                f"study.iis_budgets {list(study.iis_budgets)} must be positive and sum to "
                f"study.budget={study.budget} (sum is {sum(study.iis_budgets)}), so that both "
                "strategies get the same number of evaluations"
            )
    r = study.ranges
    if r.rule not in RANGE_RULES:
        raise ConfigError(f"study.ranges.rule {r.rule!r} is not a range-extraction rule; allowed: {RANGE_RULES}")
    if not 0 < r.top_fraction <= 1:
        raise ConfigError(f"study.ranges.top_fraction must be in (0, 1], got {r.top_fraction}")
    if r.min_trials < 1 or r.n_initial < 0 or r.margin < 0:
        raise ConfigError(
            f"study.ranges needs min_trials >= 1, n_initial >= 0, margin >= 0; got {r}"
        )
    for name in ("alpha", "confidence"):
        if not 0 < getattr(r, name) < 1:
            raise ConfigError(f"study.ranges.{name} must be in (0, 1), got {getattr(r, name)}")
    if not 0 < r.min_width <= 1:
        raise ConfigError(f"study.ranges.min_width must be in (0, 1], got {r.min_width}")
    if not 0 <= study.max_failure_fraction <= 1:
        raise ConfigError(
            f"study.max_failure_fraction must be in [0, 1], got {study.max_failure_fraction}"
        )
    return study


def _halving(study: Study) -> None:
    """Successive halving and Hyperband need eta >= 2, two rungs, and a budget that leaves
    one configuration in every last rung."""
    halving = [s for s in study.strategies if STRATEGIES[s].smallest_budget is not None]
    if not halving:
        return
    if study.eta < 2:
        raise ConfigError(f"study.eta must be an integer >= 2 for {' and '.join(halving)}, got {study.eta}")
    if len(study.ladder) < 2:
        raise ConfigError(
            f"the {' and '.join(halving)} strateg{'ies need' if len(halving) > 1 else 'y needs'} the rungs "
            f"of a study.ladder of >= 2 resolutions, got {list(study.ladder)}: with one resolution "
            "there is nothing to promote to"
        )
    for strategy in halving:
        smallest = STRATEGIES[strategy].smallest_budget(study.eta, len(study.ladder))  # type: ignore[misc]
        if study.budget < smallest:
            raise ConfigError(
                f"study.budget={study.budget} is too small for {strategy} with study.eta={study.eta} "
                f"over a ladder of {len(study.ladder)} resolutions: the smallest budget that "
                f"leaves one configuration in every last rung is {smallest}"
            )


#: the fewest configurations of a transfer run: a rank correlation of fewer says nothing
MIN_TRANSFER_CONFIGURATIONS = 3
#: the fewest bootstrap resamples: a 95% percentile interval of fewer rests on a handful
MIN_RESAMPLES = 100


def _transfer(transfer: Transfer) -> None:
    if transfer.configurations < MIN_TRANSFER_CONFIGURATIONS:
        raise ConfigError(
            f"study.transfer.configurations must be >= {MIN_TRANSFER_CONFIGURATIONS} (a rank "
            f"correlation needs at least {MIN_TRANSFER_CONFIGURATIONS} pairs), got {transfer.configurations}"
        )
    if transfer.seed < 0:
        raise ConfigError(f"study.transfer.seed must be >= 0, got {transfer.seed}")
    if not 0 < transfer.top_fraction <= 1:
        raise ConfigError(f"study.transfer.top_fraction must be in (0, 1], got {transfer.top_fraction}")
    if transfer.resamples < MIN_RESAMPLES:
        raise ConfigError(f"study.transfer.resamples must be >= {MIN_RESAMPLES}, got {transfer.resamples}")


def _trainer(raw: Any) -> Trainer:
    trainer: Trainer = _build(Trainer, raw, "trainer")
    if min(trainer.max_epochs, trainer.patience, trainer.threads, trainer.eval_batch_size) < 1:
        raise ConfigError(
            f"trainer needs max_epochs, patience, threads and eval_batch_size >= 1, got {trainer}"
        )
    if trainer.accelerator not in ACCELERATORS:
        raise ConfigError(
            f"trainer.accelerator {trainer.accelerator!r} not allowed; allowed: {ACCELERATORS}"
        )
    if trainer.precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision {trainer.precision!r} not allowed; allowed: {PRECISIONS}")
    limit = trainer.memory_limit_mb
    if limit is not None and not limit > 0:
        raise ConfigError(
            f"trainer.memory_limit_mb must be a positive number of MB or null (no limit), got {limit!r}"
        )
    return trainer


def _optimizers(raw: Any) -> dict[str, OptimizerSettings]:
    """Every composed optimizer's typed settings, of the class each names."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"optimizers must be a mapping of optimizer name to settings, got {raw!r}")
    try:
        return {name: build_settings(name, settings) for name, settings in raw.items()}
    except SettingsError as err:
        raise ConfigError(str(err)) from err


def validate(cfg: dict[str, Any], overrides: Sequence[str] = ()) -> Settings:
    expected = {"study", "space", "trainer", "optimizers", "datasets", "paths", "evaluation", "resources"}
    unknown = sorted(set(cfg) - expected)
    if unknown:
        raise ConfigError(f"unknown top-level keys {unknown}; allowed: {sorted(expected)}")
    study = _study(cfg["study"], cfg)
    trainer = _trainer(cfg["trainer"])
    optimizers = _optimizers(cfg["optimizers"])
    evaluation = _build(Evaluation, cfg["evaluation"], "evaluation")
    try:
        resources = resources_from_config(cfg["resources"])
    except SettingsError as err:
        raise ConfigError(str(err)) from err
    if evaluation.repeats < 1:
        raise ConfigError(f"evaluation.repeats must be >= 1, got {evaluation.repeats}")
    for name in study.datasets:
        dataset = cfg["datasets"][name]
        try:
            sources.check(name, dataset)
        except (KeyError, TypeError) as err:
            raise ConfigError(f"datasets.{name}: missing or malformed key {err}") from err
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if dataset.get("test_metric") not in TEST_METRICS:
            raise ConfigError(
                f"datasets.{name}.test_metric must be one of {TEST_METRICS}, "
                f"got {dataset.get('test_metric')!r}"
            )
        native = dataset.get("native_resolution")
        if native is not None and study.ladder[-1] > int(native):
            raise ConfigError(
                f"study.ladder {list(study.ladder)} goes up to {study.ladder[-1]} px, but data "
                f"set {name!r} has {native} px images; the largest resolution must be <= {native}"
            )
    try:
        space = parse_space(cfg["space"])
        check_reads(space)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    try:
        for resolution in study.ladder:
            space.at(resolution)
    except ValueError as err:
        raise ConfigError(f"impossible ladder {list(study.ladder)}: {err}") from err
    return Settings(
        study=study,
        trainer=trainer,
        evaluation=evaluation,
        resources=resources,
        space=cfg["space"],
        optimizers=optimizers,
        datasets=cfg["datasets"],
        paths=cfg["paths"],
        overrides=tuple(overrides),
        resolved=cfg,
    )


def load_settings(overrides: Sequence[str] = (), config_dir: Path | None = None) -> Settings:
    """Compose ``conf/`` with ``overrides`` and validate the result."""
    return validate(compose_config(overrides, config_dir), overrides)


def overrides_from_mapping(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Snakemake's config as Hydra overrides.

    Snakemake only accepts identifiers as ``--config`` keys, so group choices come as
    ``study=paper`` and everything else through the ``overrides`` key, a space-separated
    string (or list) of Hydra overrides: ``overrides="trainer.max_epochs=20 study.seeds=[0,1]"``.
    Nested mappings (from ``--configfile``) become dotted keys.
    """
    out = []
    for key, value in config.items():
        if key == "overrides" and not prefix:
            out += shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
        elif isinstance(value, Mapping):
            out += overrides_from_mapping(value, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)):
            out.append(f"{prefix}{key}={json.dumps(list(value))}")
        else:
            out.append(f"{prefix}{key}={value}")
    return out
