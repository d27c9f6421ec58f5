"""Does the GPU path work? A small study on the GPU, checked and timed, in a few minutes.

Runs the repository's workflow (``snakemake --cores all``, as a user would) on the built-in
data set up to 128 px, once per precision and twice for each (same seed, fresh
directories), with ``trainer.accelerator=gpu`` so that nothing falls back to the CPU
silently, and checks from the results themselves:

- every stage and test record says it trained on ``cuda:<GPU name>``;
- with the precision the run asked for (``auto`` is bf16 mixed precision where the GPU
  supports it; ``32-true`` is plain float32);
- the two runs of a precision made the same trials (configurations, outcomes, validation
  errors): reproducible on this GPU for the same seed.

It prints seconds per evaluation at each resolution, per precision, and the GPU's
utilisation (sampled with ``nvidia-smi`` while the studies run). Exit status 1 when a
check fails. On one H100 or H200 it is sized to take well under 8 minutes.

    .venv/bin/python benchmarks/gpu_check.py                      # on a machine with a GPU
    .venv/bin/python benchmarks/gpu_check.py --accelerator cpu --tiny   # the same checks on a CPU
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from study_wall_time import run_study, trials_of

from iishpo.results.artifacts import read_evaluation, read_stage
from iishpo.store import read_trials

#: what the records must say for each precision asked for, by whether the GPU has bf16
EXPECTED = {"auto": {True: "bf16-mixed", False: "32-true"}, "32-true": {True: "32-true", False: "32-true"}}


def utilisation_sampler(samples: list[int], stop: threading.Event) -> threading.Thread:
    """A thread that appends the GPU's utilisation (%) every half second until ``stop``."""

    def sample() -> None:
        while not stop.wait(0.5):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--id=0"],
                capture_output=True, text=True, check=False,
            )
            if out.returncode == 0 and out.stdout.strip().isdigit():
                samples.append(int(out.stdout.strip()))

    return threading.Thread(target=sample, daemon=True)


def overrides(args: argparse.Namespace, precision: str) -> str:
    """The check's study: random search, standard and IIS, one seed, up to ``args.ladder[-1]`` px."""
    ladder = ",".join(map(str, args.ladder))
    per_stage = ",".join([str(args.budget // len(args.ladder))] * len(args.ladder))
    gpus = 1 if args.accelerator == "gpu" else 0
    return " ".join([
        "study.name=gpu-check", "study.datasets=[synthetic]", "study.optimizers=[random]",
        "study.strategies=[standard,iis]", "study.seeds=[0]", f"study.ladder=[{ladder}]",
        f"study.budget={args.budget}", f"study.iis_budgets=[{per_stage}]",
        f"datasets.synthetic.per_class.train={args.train_per_class}",
        f"datasets.synthetic.per_class.val={args.train_per_class // 2}",
        f"datasets.synthetic.per_class.test={args.train_per_class // 2}",
        f"trainer.accelerator={args.accelerator}", f"trainer.precision={precision}",
        f"trainer.max_epochs={args.max_epochs}", f"resources.training.gpus={gpus}",
    ])


def check_records(workdir: Path, want_device: str, want_precision: str) -> list[str]:
    """What is wrong with the device and precision of every stage and test record."""
    problems = []
    results = workdir / "results"
    records = [(p, read_stage(p).provenance) for p in sorted(results.rglob("stage.json"))]
    records += [(p, read_evaluation(p).provenance) for p in sorted(results.rglob("test.json"))]
    if not records:
        problems.append(f"no stage or test records under {results}")
    for path, prov in records:
        where = path.relative_to(results)
        if not prov.device.startswith(want_device):
            problems.append(f"{where}: trained on {prov.device!r}, expected {want_device}...")
        if prov.precision != want_precision:
            problems.append(f"{where}: precision {prov.precision!r}, expected {want_precision!r}")
    return problems


def seconds_per_evaluation(workdir: Path) -> dict[int, list[float]]:
    """Every evaluation's seconds, by the resolution of its stage."""
    by_resolution: dict[int, list[float]] = defaultdict(list)
    for path in (workdir / "results").rglob("stage.json"):
        resolution = read_stage(path).resolution
        by_resolution[resolution] += [t.wall_time for t in read_trials(path.parent / "trials.jsonl")]
    return by_resolution


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu",
                        help="cpu: run the same checks without a GPU (the test suite does)")
    parser.add_argument("--precisions", nargs="+", default=["auto", "32-true"], choices=sorted(EXPECTED))
    parser.add_argument("--ladder", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--budget", type=int, default=12, help="evaluations per run; IIS splits them evenly")
    parser.add_argument("--train-per-class", type=int, default=100, help="training images per class (10 classes)")
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="8 and 16 px, 4 evaluations, 2 epochs: a smoke run")
    args = parser.parse_args()
    if args.tiny:
        args.ladder, args.budget, args.train_per_class, args.max_epochs = [8, 16], 4, 6, 2
    if args.budget % len(args.ladder):
        parser.error(f"--budget {args.budget} must split evenly over the ladder {args.ladder}")

    import torch

    if args.accelerator == "gpu":
        if not torch.cuda.is_available():
            print("no CUDA GPU is visible to torch: nothing to check (use --accelerator cpu to run the checks on a CPU)")
            return 1
        want_device, bf16 = "cuda:", torch.cuda.is_bf16_supported()
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        want_device, bf16 = "cpu", False
    sampling = args.accelerator == "gpu" and shutil.which("nvidia-smi") is not None
    problems: list[str] = []
    timing: dict[str, dict[int, list[float]]] = {}
    utilisation: list[int] = []
    with tempfile.TemporaryDirectory(prefix="iishpo-gpu-check-") as scratch:
        for precision in args.precisions:
            want = EXPECTED[precision][bf16]
            trials = []
            for repeat in ("a", "b"):
                workdir = Path(scratch) / f"{precision}-{repeat}"
                workdir.mkdir()
                stop = threading.Event()
                sampler = utilisation_sampler(utilisation, stop)
                if sampling:
                    sampler.start()
                started = time.perf_counter()
                try:
                    run_study(workdir, "smoke", overrides(args, precision), warm_worker=True)
                finally:
                    stop.set()
                print(f"precision {precision} run {repeat}: {time.perf_counter() - started:.1f} s", flush=True)
                problems += [f"precision {precision} run {repeat}: {p}" for p in check_records(workdir, want_device, want)]
                trials.append(trials_of(workdir))
                timing[precision] = seconds_per_evaluation(workdir)
            same = trials[0] == trials[1]
            print(f"precision {precision} ({want}): trials of the two runs identical: {same}")
            if not same:
                problems.append(f"precision {precision}: two runs with the same seed made different trials")

    print("\nseconds per evaluation (median, of the second run), by resolution")
    print(f"{'px':>5}  " + "  ".join(f"{p:>10}" for p in args.precisions))
    for resolution in args.ladder:
        row = [statistics.median(timing[p][resolution]) for p in args.precisions]
        print(f"{resolution:>5}  " + "  ".join(f"{s:>10.2f}" for s in row))
    if sampling:
        busy = statistics.mean(utilisation) if utilisation else float("nan")
        print(f"\nGPU utilisation while the studies ran: mean {busy:.0f}%, max {max(utilisation, default=0)}% "
              f"({len(utilisation)} samples, every 0.5 s)")
    print("\nchecks: " + ("all passed" if not problems else f"{len(problems)} failed"))
    for problem in problems:
        print(f"  FAILED {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
