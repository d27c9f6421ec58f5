"""Every benchmark script still runs and prints its figures, at a tiny size (their
figures at full size are in the README; these runs only keep the scripts from rotting)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import REPO

#: script, tiny arguments, a pattern its output must contain
TINY_RUNS = [
    ("trainer_overhead.py", ["--resolution", "8", "--epochs", "2", "--repeats", "1", "--train-per-class", "4"],
     r"bookkeeping: +\d+\.\d{3} s, ratio Lightning / it \d+\.\d{3}"),
    ("evaluation_overhead.py", ["--resolution", "8", "--repeats", "2"], r"\d+\.\d ms"),
    ("throughput.py", ["--resolution", "8", "--epochs", "1", "--repeats", "1"],
     r"fraction of the matmul rate: +\d+\.\d%"),
    ("optimizer_overhead.py", ["--sizes", "12", "--asks", "2"], r"smac"),
    ("memory_growth.py", ["-n", "3", "--early", "1", "--tolerance", "10"], r"ratio"),
    ("resolution_curve.py", ["--tiny", "--flowers", "--synthetic", "8", "16"], r"\n +16 +\d\.\d{3} ± \d\.\d{3}"),
    ("learning_curves.py", ["--tiny"],
     r"test mean_class_accuracy \d\.\d{3}(?s:.*)flowers102: largest best epoch \d+ \(\w+, 16 px\); (max_epochs >= \d+|cut off)"),
    ("gpu_check.py", ["--accelerator", "cpu", "--tiny", "--precisions", "32-true"],
     r"trials of the two runs identical: True(?s:.*)\n +16 +\d+\.\d\d\n(?s:.*)checks: all passed"),
    ("download_resume.py", ["--size-mb", "2", "--cut-mb", "0.6"],
     r"iishpo: verified file +4 requests, +2\.0 MB sent \(1\.00 x the file\)\n +pooch: failed"),
    ("job_overhead.py", ["--repeats", "1"], r"fixed cost per job +in-process +\d+\.\d+ s +worker +\d+\.\d+ s"),
]


@pytest.mark.parametrize(("script", "args", "pattern"), TINY_RUNS, ids=[run[0] for run in TINY_RUNS])
def test_a_benchmark_runs_at_a_tiny_size(script: str, args: list[str], pattern: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "benchmarks")])}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(pattern, result.stdout), result.stdout
