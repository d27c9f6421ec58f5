"""Planning the paper study (``snakemake -n``) reads the configuration and touches nothing:
no data, no results, no network."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import REPO

#: installed as ``sitecustomize`` in every Python process started with it on PYTHONPATH:
#: each name lookup or internet connection is written to $NETWORK_LOG and refused
NETWORK_GUARD = '''
import os
import socket

_LOG = os.environ["NETWORK_LOG"]
_connect = socket.socket.connect


def _refuse(*args):
    with open(_LOG, "a") as fh:
        fh.write(f"{os.getpid()} {args[:2]!r}\\n")
    raise OSError("network access refused by tests/test_plan.py")


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(address)
    return _connect(self, address)


socket.getaddrinfo = _refuse
socket.socket.connect = _guarded_connect
'''


def _guarded_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = tmp_path / "network.log"
    path = os.pathsep.join(p for p in (str(guard), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "NETWORK_LOG": str(log), "PYTHONHASHSEED": "0"}, log


def test_the_guard_sees_a_download(tmp_path):
    """The guard below is live: a process that downloads is caught by it."""
    env, log = _guarded_env(tmp_path)
    code = "import urllib.request; urllib.request.urlopen('http://www.robots.ox.ac.uk/', timeout=5)"
    result = subprocess.run([sys.executable, "-c", code], check=False, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "refused by tests/test_plan.py" in result.stderr
    assert "www.robots.ox.ac.uk" in log.read_text()


def test_planning_the_paper_study_downloads_nothing(tmp_path):
    env, log = _guarded_env(tmp_path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--cores", "1", "-n",
        "--config", "study=paper", f"overrides=paths.root={workdir}",
    ]
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    plan = result.stdout + result.stderr
    assert "This was a dry-run" in plan
    # the download and the resizing are planned, once, and not done
    assert re.search(r"^fetch_dataset\s+1$", plan, re.MULTILINE), plan[-3000:]
    assert re.search(r"^prepare_dataset\s+1$", plan, re.MULTILINE), plan[-3000:]
    assert sorted(p.name for p in workdir.iterdir()) == [".snakemake"]  # no data/, no results/
    assert not log.exists(), f"network access while planning: {log.read_text()}"


def test_planning_imports_no_deep_learning_framework():
    """What the workflow imports to build its DAG leaves torch and Lightning out: torch
    alone took 2 s of every `snakemake` run, dry runs and cluster job steps included."""
    code = (
        "import sys, iishpo.settings.config, iishpo.plan.layout, iishpo.plan.job_resources, iishpo.worker; "
        "print(' '.join(sorted(sys.modules)))"
    )
    modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert not {"torch", "lightning"} & {m.split(".")[0] for m in modules}
