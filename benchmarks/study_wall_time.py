"""Wall time of a whole study through Snakemake, each job a process of its own against
jobs forked from the warm worker, and whether both made the same trials.

Runs ``snakemake --cores all`` on the repository's workflow twice in fresh directories
(``resources.warm_worker=false``, then ``true``; ``--order warm-first`` swaps them), one
after the other so that neither competes with the other for the cores, and prints both
wall times, their ratio and the machine's load average before each.

    python benchmarks/study_wall_time.py [--study default] [--overrides "study.seeds=[0]"]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iishpo.store import read_trials

REPO = Path(__file__).resolve().parents[1]


def run_study(workdir: Path, study: str, overrides: str, warm_worker: bool) -> float:
    """Seconds ``snakemake --cores all`` takes for ``study`` in ``workdir``."""
    flags = f"{overrides} resources.warm_worker={str(warm_worker).lower()}".strip()
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--cores", "all", "--config", f"study={study}", f"overrides={flags}",
    ]
    env = {**os.environ, "IISHPO_ROOT": str(workdir), "DVC_NO_ANALYTICS": "1"}
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"the {study} study failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed


def trials_of(workdir: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every stage's trials (configuration, outcome, validation error), by stage path."""
    return {
        path.relative_to(workdir).as_posix(): [(t.number, t.config, t.status, t.val_error) for t in read_trials(path)]
        for path in sorted((workdir / "results").rglob("trials.jsonl"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="default")
    parser.add_argument("--overrides", default="", help='Hydra overrides, space-separated, e.g. "study.seeds=[0]"')
    parser.add_argument("--order", choices=("cold-first", "warm-first"), default="cold-first")
    args = parser.parse_args()
    order = [False, True] if args.order == "cold-first" else [True, False]
    with tempfile.TemporaryDirectory(prefix="iishpo-study-") as scratch:
        seconds, trials = {}, {}
        for warm in order:
            workdir = Path(scratch) / ("warm" if warm else "cold")
            workdir.mkdir()
            load = Path("/proc/loadavg").read_text().split()[0]
            seconds[warm] = run_study(workdir, args.study, args.overrides, warm)
            trials[warm] = trials_of(workdir)
            label = "warm worker" if warm else "a process per job"
            print(f"{label:>18}: {seconds[warm]:7.1f} s  ({len(trials[warm])} stages; load before {load})", flush=True)
    print(f"{'ratio':>18}: {seconds[True] / seconds[False]:.3f} (warm worker / a process per job)")
    print(f"{'same trials':>18}: {trials[True] == trials[False]}")


if __name__ == "__main__":
    main()
