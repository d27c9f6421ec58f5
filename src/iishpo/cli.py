"""Command line of the workflow's jobs: ``python -m iishpo <command> [options] [overrides]``.

Every command composes the same configuration from ``conf/`` with the Hydra overrides
given after the options (exactly those the Snakefile was started with), so a job and
the DAG that scheduled it always agree.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from iishpo.settings.config import ConfigError, Settings, load_settings
from iishpo.training.runtime import TRAINING_COMMANDS, configure_training

log = logging.getLogger("iishpo")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iishpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. study=paper")
        return p

    command("check", help="validate the configuration, try every optimizer on the space; print the study plan")

    p = command("fetch", help="download, generate or check a data set's original files")
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw-dir", type=Path, required=True)

    p = command("prepare", help="resize a data set to every resolution of the ladder")
    p.add_argument("--dataset", required=True)
    p.add_argument("--raw-dir", type=Path, required=True)
    p.add_argument("--output", action="append", required=True, help="<resolution>=<path.npz>, once per resolution")

    p = command("run-stage", help="run one optimization stage")
    for name in ("dataset", "optimizer", "strategy"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--stage", type=int, required=True)
    p.add_argument("--data", type=Path, required=True)
    # what the stage before handed on (its strategy's handoff: ranges or promotions)
    p.add_argument("--ranges", "--promotions", dest="handoff", type=Path, default=None)
    p.add_argument("--out-dir", type=Path, required=True)

    p = command("extract-ranges", help="narrow the space for the next IIS stage")
    p.add_argument("--trials", type=Path, required=True)
    p.add_argument("--resolution", type=int, required=True, help="resolution of the next stage")
    p.add_argument("--output", type=Path, required=True)

    p = command("promote-configs", help="the best of a rung of successive halving or Hyperband, for the next rung")
    p.add_argument("--trials", type=Path, required=True)
    p.add_argument("--resolution", type=int, required=True, help="resolution of the next stage")
    p.add_argument("--promote", type=int, required=True, help="how many; 0: the next stage starts a bracket")
    p.add_argument("--output", type=Path, required=True)

    p = command("evaluate-test", help="retrain a run's best configuration and score the test set")
    p.add_argument("--dataset", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--trials", type=Path, nargs="+", required=True, help="the trials of the run's result stages")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)

    p = command("summarize", help="tables, metrics and plots of a finished study")
    p.add_argument("--results", type=Path, required=True)

    p = command("analyze-importance", help="Experiment 1: fANOVA importance and Figs. 2-4 of the independent runs")
    p.add_argument("--dataset", required=True)
    p.add_argument("--results", type=Path, required=True)

    p = command("analyze-transfer", help="rank correlation of validation errors across resolutions (the transfer target)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--results", type=Path, required=True)

    p = command("export-optuna", help="write every run of a study into an Optuna storage (for optuna-dashboard)")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--storage", required=True, help="sqlite:///PATH (an SQLite file) or PATH.log (an Optuna journal file)")

    p = command("record-configuration", help="write the resolved configuration and its provenance")
    p.add_argument("--output", type=Path, required=True)
    return parser


@contextmanager
def gpu_slot(settings: Settings) -> Iterator[None]:
    """Hold a GPU of this machine that no other training job holds (``iishpo.jobs.gpus``), unless
    the trainer is forced onto the CPU; without a GPU the job trains on the CPU."""
    if settings.trainer.accelerator == "cpu":
        yield
        return
    from iishpo.jobs.gpus import gpu_for_job

    gpus = settings.resources.gpus
    with gpu_for_job(Path(gpus.lock_dir), gpus.devices, gpus.share):
        yield


def check_optimizers(settings: Settings) -> None:
    """Build every optimizer of the study on its space at the largest resolution and ask it
    for a configuration, so that one that cannot search the space fails here, not in a job.

    Raises :class:`ConfigError` naming the optimizer and what it raised.
    """
    from iishpo.optimizers import create_optimizer
    from iishpo.search.space import build_space

    study = settings.study
    space = build_space(settings.space, study.ladder[-1])
    for name in study.optimizers:
        try:
            create_optimizer(name, space, budget=study.budget, seed=0, settings=settings.optimizers[name]).ask()
        except Exception as err:  # whatever the library raises: it cannot search this space
            raise ConfigError(
                f"optimizer {name!r} cannot search the space at {study.ladder[-1]} px: {type(err).__name__}: {err}"
            ) from err


#: what to do about a failed data job, after its one-line message
DATA_HINT = ("fix or remove that file (or the data set's settings, datasets.{name} in conf/dataset/), "
             "then run again; finished downloads are kept, the traceback is above")


def _data_job(args: argparse.Namespace, settings: Settings) -> None:
    """``fetch`` or ``prepare`` one data set."""
    if args.command == "fetch":
        from iishpo.data.sources import fetch

        fetch(settings.datasets[args.dataset], args.raw_dir)
        return
    from iishpo.data.prepare import prepare_dataset

    outputs = {}
    for item in args.output:
        resolution, _, path = item.partition("=")
        outputs[int(resolution)] = Path(path)
    prepare_dataset(args.dataset, settings.datasets[args.dataset], args.raw_dir, outputs)


def _analysis(args: argparse.Namespace, settings: Settings) -> None:
    """summarize, analyze-importance or analyze-transfer; each refuses stale files with
    :class:`~iishpo.results.artifacts.StaleFiles`."""
    if args.command == "summarize":
        from iishpo.plan.layout import Layout
        from iishpo.results.summary import summarize

        summarize(settings, args.results)
        print(Layout(args.results).summary_markdown.read_text())
        return
    if args.command == "analyze-importance":
        from iishpo.results.analysis import analyze_importance

        written = analyze_importance(settings, args.results, args.dataset)
    else:
        from iishpo.results.transfer import analyze_transfer

        written = analyze_transfer(settings, args.results, args.dataset)
    log.info("wrote %s", ", ".join(str(p) for p in written))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        settings = load_settings(args.overrides)
        if args.command == "check":
            check_optimizers(settings)
    except ConfigError as err:
        print(f"iishpo: configuration error: {err}", file=sys.stderr)
        return 2
    if args.command in TRAINING_COMMANDS:
        configure_training()
    if args.command == "check":
        from iishpo.plan.layout import runs, stages

        study = settings.study
        print(json.dumps({"study": study.name, "runs": [
            {**asdict(run), "stages": [[plan.resolution, plan.budget] for plan in stages(study, run)]}
            for run in runs(study)
        ]}, indent=1))
    elif args.command in ("fetch", "prepare"):
        try:
            _data_job(args, settings)
        except (ValueError, OSError) as err:  # the data modules' errors name the file at fault
            log.exception("%s of data set %r failed", args.command, args.dataset)  # into the job's log
            print(f"iishpo: {args.command} {args.dataset}: {err} -- {DATA_HINT.format(name=args.dataset)}",
                  file=sys.stderr)
            return 1
    elif args.command == "run-stage":
        from iishpo.jobs.stage import StageKey, run_stage

        key = StageKey(args.dataset, args.optimizer, args.strategy, args.seed, args.stage)
        with gpu_slot(settings):
            run_stage(settings, key, args.data, args.handoff, args.out_dir)
    elif args.command == "extract-ranges":
        from iishpo.narrowing.ranges import describe, extract
        from iishpo.plan.layout import digest, ranges_config
        from iishpo.results.artifacts import RangesRecord, write_record
        from iishpo.store import read_trials

        space, initial = extract(read_trials(args.trials), settings.study.ranges, settings.space, args.resolution)
        write_record(args.output, RangesRecord(
            space=space, initial_points=initial, ranges=describe(space),
            config_digest=digest(ranges_config(settings, args.resolution)),
        ))
        log.info("ranges for %d px: %s", args.resolution, json.dumps(describe(space)))
    elif args.command == "promote-configs":
        from iishpo.plan.layout import digest, promotions_config
        from iishpo.results.artifacts import PromotionsRecord, write_record
        from iishpo.settings.halving import promote
        from iishpo.store import read_trials

        promoted = promote(read_trials(args.trials), args.promote)
        write_record(args.output, PromotionsRecord(
            resolution=args.resolution, configs=[t.config for t in promoted],
            trials=[t.number for t in promoted], val_errors=[t.val_error for t in promoted],
            config_digest=digest(promotions_config(args.resolution, args.promote)),
        ))
        log.info("promoted to %d px: trials %s", args.resolution, [t.number for t in promoted])
    elif args.command == "evaluate-test":
        from iishpo.jobs.evaluation import evaluate_test

        with gpu_slot(settings):
            evaluate_test(settings, args.dataset, args.seed, args.trials, args.data, args.output)
    elif args.command in ("summarize", "analyze-importance", "analyze-transfer"):
        from iishpo.results.artifacts import StaleFiles

        try:
            _analysis(args, settings)
        except StaleFiles as err:
            print(f"iishpo: {err}", file=sys.stderr)
            return 1
    elif args.command == "export-optuna":
        import optuna

        from iishpo.results.export import ExportRefused, export_study

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the export logs what it writes
        try:
            export_study(settings, args.results, args.storage)
        except ExportRefused as err:
            print(f"iishpo: {err}", file=sys.stderr)
            return 1
    elif args.command == "record-configuration":
        from iishpo.results.provenance import provenance
        from iishpo.store import write_json_atomic

        # the study as a whole: no device and no single seed (each job's files record theirs)
        record = asdict(provenance(settings.resolved, settings.overrides, device="", seed=0))
        write_json_atomic(args.output, {k: v for k, v in record.items() if k not in ("device", "seed")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
