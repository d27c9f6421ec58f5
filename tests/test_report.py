"""The Snakemake HTML report opens in a browser with every figure rendered.

Headless Chromium (Debian package ``chromium``) decodes every image and reports its
natural size; a test without Chromium, or before the workflow's rules flag outputs with
``report()``, skips and says why.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from browser import dump_dom, needs_chromium
from helpers import REPO, TINY
from iishpo.plan.layout import FIGURE_FORMATS, IMPORTANCE_FIGURES
from iishpo.results import figures
from iishpo.store import Trial

CAPTIONS = REPO / "workflow" / "report"


def report_is_wired() -> bool:
    return any("report(" in path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk"))


def rendered_sizes(image_uris: list[str], workdir: Path) -> list[tuple[int, int]]:
    """The natural (width, height) Chromium decodes every image to; (0, 0) if it cannot."""
    probe = workdir / "probe.html"
    probe.write_text(
        "<html><body><script>\n"
        f"const sources = {json.dumps(image_uris)};\n"
        "Promise.all(sources.map(s => new Promise(done => { const img = new Image();"
        " img.onload = () => done([img.naturalWidth, img.naturalHeight]);"
        " img.onerror = () => done([0, 0]); img.src = s; })))"
        ".then(sizes => { const out = document.createElement('pre'); out.id = 'sizes';"
        " out.textContent = JSON.stringify(sizes); document.body.appendChild(out); });\n"
        "</script></body></html>\n"
    )
    match = re.search(r'<pre id="sizes">(.*?)</pre>', dump_dom(probe.as_uri()), re.DOTALL)
    assert match, "the probe page did not finish decoding the images"
    return [tuple(size) for size in json.loads(match.group(1))]


def data_uri(path: Path) -> str:
    from snakemake.report.common import data_uri_from_file

    return data_uri_from_file(path)


@needs_chromium
def test_chromium_renders_every_figure_format(tmp_path: Path) -> None:
    trials = tuple(
        Trial(i, {}, "ok", 0.9 - 0.05 * i, 0.9 - 0.05 * i, 1, 0, 1.0, 3.0 * (i + 1), None, 0, "t")
        for i in range(6)
    )
    paths = figures.progress_figure([figures.RunTrials("tpe", "standard", 0, (trials,))], "probe", tmp_path / "fig5")
    sizes = rendered_sizes([data_uri(p) for p in paths] + ["data:image/png;base64,AAAA"], tmp_path)
    assert all(w > 200 and h > 200 for w, h in sizes[:-1]), sizes
    assert sizes[-1] == (0, 0)  # a broken image is reported as such


@needs_chromium
@pytest.mark.slow
@pytest.mark.skipif(
    not report_is_wired(),
    reason="no rule in workflow/rules/*.smk flags outputs with report() yet: the figures, "
    "tables and captions in workflow/report/ are not wired into the DAG",
)
def test_report_of_a_tiny_study_shows_every_figure(tmp_path: Path) -> None:
    # every strategy, so that the summary (Fig. 5) and Experiment 1 (Figs. 2-4) are both built
    overrides = " ".join([*TINY, "study.strategies=[standard,iis,independent]", "study.optimizers=[random,tpe]"])
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
        str(tmp_path), "--cores", "2", "--config", f"overrides={overrides}",
    ]
    env = {**os.environ, "IISHPO_ROOT": str(tmp_path)}  # data and results land in tmp_path
    subprocess.run(command, check=True, capture_output=True, timeout=900, env=env)
    subprocess.run([*command, "--report", str(tmp_path / "report.html")], check=True, capture_output=True, timeout=300, env=env)
    html = (tmp_path / "report.html").read_text()
    dom = dump_dom((tmp_path / "report.html").as_uri())
    assert "Snakemake" in dom and len(dom) > len(html) // 2  # the report's app ran
    # the embedded files (the report's own code holds other "data:image" strings)
    embedded = {
        name: uri for uri, name in re.findall(r'"(data:image/(?:png|svg\+xml);charset=utf8;filename=([^;"]+);base64,[^"]+)"', html)
    }
    expected_files = {f"{stem}.{fmt}" for stem in ("fig5_progress_synthetic", "mean_rank_synthetic", *IMPORTANCE_FIGURES) for fmt in FIGURE_FORMATS}
    assert expected_files <= embedded.keys(), sorted(embedded)
    images = [embedded[name] for name in sorted(expected_files)]
    figure_captions = sorted(CAPTIONS.glob("fig*.rst"))
    flagged = {name for name in re.findall(r'caption="[^"]*?/(fig[^"/]+\.rst)"', "".join(
        p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")))}
    assert flagged == {p.name for p in figure_captions}, "every figure caption is used by a rule"
    assert len(images) >= len(figure_captions)
    assert "configuration.json" in html and "Configuration and provenance" in html
    sizes = rendered_sizes(images, tmp_path)
    assert all(w > 0 and h > 0 for w, h in sizes), sizes


@pytest.mark.slow
def test_importance_study_writes_tables_equal_to_fanova_of_its_stores(tmp_path: Path) -> None:
    """Experiment 1 through the DAG: the runs and the importance outputs, no summary and no
    test evaluation, and importance.csv equals fANOVA recomputed from the pooled trial stores."""
    from helpers import compose
    from iishpo.plan.layout import Layout, figure_files, independent_runs, stages
    from iishpo.results.importance import importance_by_resolution, importance_rows
    from iishpo.store import read_trials

    overrides = [*TINY, "study.strategies=[independent]", "study.optimizers=[random,tpe]", "study.budget=5"]
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
        str(tmp_path), "--cores", "2", "--config", f"overrides={' '.join(overrides)}",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=900, env={**os.environ, "IISHPO_ROOT": str(tmp_path)})
    settings = compose(*overrides)
    layout = Layout(tmp_path / "results" / settings.study.name)
    assert not layout.summary_markdown.exists() and not list(layout.root.rglob("test.json"))
    pooled: dict[int, list] = {}
    for run in independent_runs(settings.study):
        for plan in stages(settings.study, run):
            pooled.setdefault(plan.resolution, []).extend(read_trials(layout.trials(plan.key)))
    assert sorted(pooled) == list(settings.study.ladder) and all(len(t) == 10 for t in pooled.values())
    expected = importance_rows(importance_by_resolution(pooled, settings.space))
    with open(layout.importance_table("synthetic"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["resolution"]), r["subset"]) for r in rows] == [(e["resolution"], e["subset"]) for e in expected]
    for row, e in zip(rows, expected, strict=True):
        assert float(row["explained_variance"]) == pytest.approx(e["explained_variance"], rel=1e-9, abs=1e-12)
    assert "## Hyperparameter importance" in layout.importance_markdown("synthetic").read_text()
    for stem in layout.importance_figures("synthetic").values():
        assert all(p.stat().st_size > 5000 for p in figure_files(stem))
    written = {p for p in layout.importance_dir("synthetic").iterdir() if p.suffix != ".log"}
    assert written == set(layout.importance_files("synthetic"))  # what `rule all` asks for
