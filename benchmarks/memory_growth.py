"""Does a long stage grow in memory? 200 evaluations in one process, RSS after each.

Runs one real stage (``iishpo.jobs.stage.run_stage``: ask, train with Lightning, journal,
tell) of small configurations on the built-in synthetic data set at 16 px in a temporary
directory, and records the process's peak RSS (``ru_maxrss``) and current RSS after every
evaluation. The stage passes when the peak after the last evaluation is within 10% of
the peak after the tenth (the first evaluations load the frameworks; growth after that
would be a leak: trials, modules, trainers or tensors kept alive).

    .venv/bin/python benchmarks/memory_growth.py            # 200 evaluations, a few minutes
    .venv/bin/python benchmarks/memory_growth.py -n 50 --fail-every 5 --csv rss.csv

``--fail-every K`` makes every K-th evaluation raise inside training (after the model
and trainer exist), to check that failed trials do not leak either. Exit status 1 when
the ratio exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: small and fast: tiny data, two epochs, the CPU-sized search space at 16 px
OVERRIDES = [
    "study=smoke",
    "study.strategies=[standard]",
    "study.optimizers=[random]",
    "study.ladder=[16]",
    "study.max_failure_fraction=1.0",
    "trainer.max_epochs=2",
    "trainer.patience=1",
    "trainer.threads=1",
    "datasets.synthetic.per_class.train=6",
    "datasets.synthetic.per_class.val=4",
    "datasets.synthetic.per_class.test=4",
]


def rss_mb() -> float:
    """Current resident set size (MB), from /proc (Linux)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return float("nan")
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB; ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--evaluations", type=int, default=200)
    parser.add_argument("--early", type=int, default=10, help="evaluation to compare against (default 10)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed relative growth of the peak")
    parser.add_argument("--fail-every", type=int, default=0, help="make every K-th evaluation raise")
    parser.add_argument("--csv", type=Path, help="write evaluation,peak_rss_mb,rss_mb per evaluation")
    args = parser.parse_args(argv)
    if not 1 <= args.early < args.evaluations:
        parser.error("need 1 <= --early < --evaluations")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")

    import iishpo.jobs.stage as stage_module
    from iishpo.data.prepare import prepare_dataset
    from iishpo.data.sources import fetch
    from iishpo.jobs.stage import StageKey, run_stage
    from iishpo.settings.config import load_settings
    from iishpo.training.classifier import Classifier
    from iishpo.training.runtime import configure_training

    configure_training()

    overrides = [*OVERRIDES, f"study.budget={args.evaluations}"]
    settings = load_settings(overrides, config_dir=REPO / "conf")
    rows: list[tuple[int, float, float]] = []
    evaluate_trial = stage_module.evaluate_trial
    real_step = Classifier.training_step

    def failing_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if batch_idx == 0 and self.current_epoch == 0:
            raise RuntimeError("benchmark: injected failure inside training")
        return real_step(self, batch, batch_idx)

    def measured(config, data, trainer_settings, seed):  # type: ignore[no-untyped-def]
        number = len(rows) + 1
        fail = args.fail_every and number % args.fail_every == 0
        Classifier.training_step = failing_step if fail else real_step  # type: ignore[method-assign]
        try:
            return evaluate_trial(config, data, trainer_settings, seed)
        finally:
            Classifier.training_step = real_step  # type: ignore[method-assign]
            rows.append((number, peak_rss_mb(), rss_mb()))
            if number in (1, args.early) or number % 25 == 0:
                print(f"evaluation {number:4d}: peak RSS {rows[-1][1]:7.1f} MB, RSS {rows[-1][2]:7.1f} MB", flush=True)

    stage_module.evaluate_trial = measured  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="iishpo-memory-") as tmp:
        work = Path(tmp)
        cfg = settings.datasets["synthetic"]
        fetch(cfg, work / "raw")
        data_file = work / "16px.npz"
        prepare_dataset("synthetic", cfg, work / "raw", {16: data_file})
        start = time.perf_counter()
        summary = run_stage(settings, StageKey("synthetic", "random", "standard", 0, 0), data_file, None, work / "stage")
        wall = time.perf_counter() - start
    early, last = rows[args.early - 1], rows[-1]
    ratio = last[1] / early[1]
    result = {
        "evaluations": len(rows), "failed": summary.n_failed, "wall_time_s": round(wall, 1),
        f"peak_rss_mb_after_{args.early}": round(early[1], 1), f"peak_rss_mb_after_{len(rows)}": round(last[1], 1),
        "peak_ratio": round(ratio, 4),
        f"rss_mb_after_{args.early}": round(early[2], 1), f"rss_mb_after_{len(rows)}": round(last[2], 1),
        "rss_ratio": round(last[2] / early[2], 4),
    }
    print(json.dumps(result, indent=1))
    if args.csv:
        args.csv.write_text("evaluation,peak_rss_mb,rss_mb\n" + "".join(f"{n},{p:.1f},{r:.1f}\n" for n, p, r in rows))
    grew = ratio > 1 + args.tolerance
    print(f"{'FAIL' if grew else 'OK'}: peak RSS after evaluation {len(rows)} is {ratio:.3f}x that after evaluation {args.early}")
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
