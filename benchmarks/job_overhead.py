"""Fixed cost of a training job: from process start to the first evaluation, and from the
end of the last evaluation to the process's exit, in-process and through the warm worker.

Runs ``python -m iishpo run-stage`` (one evaluation of one epoch) as the workflow does,
alternately without a worker and through one (:mod:`iishpo.worker`), so that both see the
same machine load; the phases are read from the job's log timestamps.

    python benchmarks/job_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from iishpo.data.prepare import prepare_dataset
from iishpo.data.sources import fetch
from iishpo.settings.config import load_settings
from iishpo.worker import SOCKET_VARIABLE

OVERRIDES = [
    "study=smoke", "study.strategies=[standard]", "study.optimizers=[random]", "study.budget=1",
    "trainer.max_epochs=1", "datasets.synthetic.per_class.train=6",
    "datasets.synthetic.per_class.val=4", "datasets.synthetic.per_class.test=4",
]
CONF = Path(__file__).resolve().parents[1] / "conf"
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


def job(work: Path, socket: Path | None) -> tuple[float, float]:
    """One run-stage job; seconds from its start to the first evaluation and from the
    end of the last evaluation to its exit."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "IISHPO_CONF": str(CONF), "IISHPO_ROOT": str(work)}
    env.pop(SOCKET_VARIABLE, None)
    if socket is not None:
        env[SOCKET_VARIABLE] = str(socket)
    out = work / f"out-{time.monotonic_ns()}"
    command = [
        sys.executable, "-m", "iishpo", "run-stage", "--dataset", "synthetic", "--optimizer", "random",
        "--strategy", "standard", "--seed", "0", "--stage", "0", "--data", "32px.npz",
        "--out-dir", str(out), *OVERRIDES,
    ]
    started = time.time()
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    ended = time.time()
    if result.returncode != 0:
        raise RuntimeError(f"run-stage failed ({result.returncode}):\n{result.stderr[-3000:]}")
    first = _logged_at(result.stderr, " evaluations at ")
    last = _logged_at(result.stderr, ": evaluation 1/1 ")
    return first - started, ended - last


def _logged_at(log: str, marker: str) -> float:
    line = next(line for line in log.splitlines() if marker in line)
    return datetime.strptime(line[:23], LOG_TIME).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    settings = load_settings(OVERRIDES)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = settings.datasets["synthetic"]
        fetch(cfg, work / "raw")
        prepare_dataset("synthetic", cfg, work / "raw", {32: work / "32px.npz"})
        socket, notes = work / "worker.sock", work / "worker.log"
        began = time.perf_counter()
        worker = subprocess.Popen(  # as the workflow starts it: the run's environment and overrides
            [sys.executable, "-m", "iishpo.worker", "--socket", str(socket), "--overrides", json.dumps(OVERRIDES)],
            env={**os.environ, "PYTHONHASHSEED": "0", "IISHPO_CONF": str(CONF), "IISHPO_ROOT": str(work)},
            stderr=notes.open("wb"), start_new_session=True,
        )
        try:
            while "serving on" not in notes.read_text():  # its socket listens earlier, its imports done now
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}:\n{notes.read_text()}")
                time.sleep(0.05)
            warm_up = time.perf_counter() - began
            alone, served = [], []
            for _ in range(args.repeats):
                alone.append(job(work, None))
                served.append(job(work, socket))
        finally:
            worker.terminate()
            worker.wait()
    print(f"load average {os.getloadavg()[0]:.1f}; median of {args.repeats} jobs each; "
          f"worker ready after {warm_up:.2f} s (once per study)")
    for phase, index in (("start -> first evaluation", 0), ("last evaluation -> exit", 1)):
        a = statistics.median(t[index] for t in alone)
        s = statistics.median(t[index] for t in served)
        print(f"  {phase:26s} in-process {a:6.2f} s   worker {s:6.2f} s   ratio {s / a:.3f}")
    total_a = statistics.median(sum(t) for t in alone)
    total_s = statistics.median(sum(t) for t in served)
    print(f"  {'fixed cost per job':26s} in-process {total_a:6.2f} s   worker {total_s:6.2f} s   ratio {total_s / total_a:.3f}")


if __name__ == "__main__":
    main()
