"""DVC end to end, as the README documents it: `dvc repro` a study, commit, change one
setting, `dvc repro` again, then compare the two commits with `dvc metrics diff` and
`dvc plots diff`. Runs in a temporary git repository holding a copy of the workflow, with
the default study shrunk (two optimizers, two stages, tiny data) in its copy of conf/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO

pytestmark = pytest.mark.slow

COPIED = ("Snakefile", "workflow", "conf", "src/iishpo", "dvc.yaml", ".dvcignore", ".gitignore")
RESULTS = Path("results/default")


def edit_yaml(path: Path, **values: object) -> None:
    """Set top-level keys of a conf/ file, keeping its Hydra ``# @package`` header."""
    text = path.read_text()
    header = "# @package _global_\n" if text.startswith("# @package _global_") else ""
    data = yaml.safe_load(text)
    target = data.get("study", data)
    target.update(values)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))


def tool(repo: Path, *command: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "XDG_CACHE_HOME": str(repo.parent / "cache"),
        "DVC_SITE_CACHE_DIR": str(repo.parent / "cache" / "dvc"),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=1200, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def flatten(metrics: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``: the numbers as ``dvc metrics diff`` names them."""
    out: dict[str, object] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def stage_files(repo: Path, optimizer: str) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((repo / RESULTS / "synthetic" / optimizer).rglob("stage.json"))}


def test_repro_after_a_change_reruns_the_affected_jobs_and_diffs_compare_commits(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            repo.mkdir(exist_ok=True)
            shutil.copy(source, repo / name)
    edit_yaml(
        repo / "conf/study/default.yaml", optimizers=["random", "tpe"], seeds=[0], ladder=[16, 32], budget=4,
        iis_budgets=[2, 2], ranges={"top_fraction": 0.5, "min_trials": 1, "margin": 0.1, "n_initial": 1},
    )
    edit_yaml(repo / "conf/trainer/cpu_fast.yaml", max_epochs=2, patience=1)
    edit_yaml(repo / "conf/evaluation/default.yaml", repeats=1)
    edit_yaml(repo / "conf/dataset/synthetic.yaml", per_class={"train": 6, "val": 4, "test": 4})
    tool(repo, "git", "init", "-q")
    tool(repo, "dvc", "init", "-q")
    tool(repo, "git", "add", "-A")
    tool(repo, "git", "commit", "-qm", "workflow")

    tool(repo, "dvc", "repro")
    tool(repo, "git", "add", "-A")
    tracked = tool(repo, "git", "diff", "--cached", "--name-only").split()
    assert str(RESULTS / "metrics.json") in tracked and str(RESULTS / "progress/synthetic.csv") in tracked
    tool(repo, "git", "commit", "-qm", "first run")
    first_metrics = json.loads((repo / RESULTS / "metrics.json").read_text())
    random_before, tpe_before = stage_files(repo, "random"), stage_files(repo, "tpe")

    # One optimizer's setting: DVC reruns its stage, Snakemake only that optimizer's jobs.
    edit_yaml(repo / "conf/optimizer/tpe.yaml", min_startup=1)
    tool(repo, "dvc", "repro")
    assert stage_files(repo, "random") == random_before
    tpe_after = stage_files(repo, "tpe")
    assert tpe_after.keys() == tpe_before.keys() and all(tpe_after[p] != tpe_before[p] for p in tpe_after)
    for out in ("metrics.json", "progress/synthetic.csv", "synthetic"):
        assert (repo / RESULTS / out).exists()
    assert json.loads(tool(repo, "dvc", "status", "--json")) == {}
    tool(repo, "git", "add", "-A")
    tool(repo, "git", "commit", "-qm", "tpe: one start-up trial")

    second_metrics = json.loads((repo / RESULTS / "metrics.json").read_text())
    diff = json.loads(tool(repo, "dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"))
    changed = diff[str(RESULTS / "metrics.json")]
    assert changed, "dvc metrics diff found no change"
    # exactly the numbers that differ between the two files (which of TPE's wall times do
    # is the clock's to say: two runs of a fast machine may agree to the millisecond)
    old, new = flatten(first_metrics), flatten(second_metrics)
    assert set(changed) == {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    assert all(key.startswith("synthetic.tpe.") for key in changed)  # random was not rerun
    for key, values in changed.items():  # e.g. synthetic.tpe.iis.wall_time or ...iis_vs_standard.wall_time.mean
        assert (values["old"], values["new"]) == (old[key], new[key])

    plots = json.loads(tool(repo, "dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"))
    [plot] = plots["data"][str(RESULTS / "progress/synthetic.csv")]
    assert sorted(plot["revisions"]) == ["HEAD", "HEAD~1"]
    points = plot["content"]["data"]["values"]
    for rev in ("HEAD", "HEAD~1"):
        assert {p["series"] for p in points if p["rev"] == rev} == {
            "random-standard", "random-iis", "tpe-standard", "tpe-iis"
        }
