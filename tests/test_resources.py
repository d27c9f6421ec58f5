"""Job requests (memory, runtime) sized from the configuration and the prepared data."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import CONF, TINY, compose
from iishpo.data.splits import ImageSplits, save_splits
from iishpo.plan.job_resources import (
    evaluation_runtime,
    largest_training_mb,
    read_prepared,
    training_mem_mb,
    training_runtime,
)
from iishpo.plan.memory_estimate import estimate_memory_mb
from iishpo.search.space import build_space
from iishpo.settings.resources import Training, from_config
from iishpo.typed import SettingsError


def resources_config(**changes: Any) -> dict[str, Any]:
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "resources" / "default.yaml"))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = raw
        for parent in parents:
            node = node[parent]
        node[key] = value
    return raw  # type: ignore[return-value]


def prepared(path: Path, resolution: int, per_split: int, channels: int = 3, folds: int = 0) -> Path:
    """A prepared file of ``per_split`` images per split (and ``folds`` test folds)."""
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 255, (per_split, resolution, resolution, channels), dtype=np.uint8)
              for s in ("train", "val", "test")}
    labels = {s: np.arange(per_split) % 5 for s in images}
    pool: dict[str, Any] = {}
    if folds:
        pool = {"pool_x": images["train"].repeat(folds, axis=0), "pool_y": np.tile(labels["train"], folds),
                "test_folds": [np.arange(per_split) + i * per_split for i in range(folds)]}
    save_splits(ImageSplits(images, labels, [f"c{i}" for i in range(5)], **pool), path)
    return path


@pytest.fixture(scope="module")
def settings():  # type: ignore[no-untyped-def]
    return compose(*TINY)


def test_the_shipped_resources_config_is_valid() -> None:
    resources = from_config(resources_config())
    assert resources.training.gpus == 0 and resources.gpus.share == 1
    assert resources.gpus.devices is None
    assert resources.light.runtime >= 1


@pytest.mark.parametrize(("key", "value", "message"), [
    ("training__margin", 0.5, "resources.training: margin must be >= 1"),
    ("training__gpus", 2, r"resources.training: gpus must be 0 \(CPU\) or 1 .*got 2"),
    ("training__max_runtime", 1, "max_runtime=1 must be >= startup_minutes=5"),
    ("training__base_mb", "lots", "resources.training.base_mb must be an integer, got 'lots'"),
    ("light__mem_mb", 0, "resources.light: threads, mem_mb and runtime must be >= 1"),
    ("gpus__share", 0, "resources.gpus: share must be >= 1"),
    ("gpus__devices", [0, 0], r"devices must be distinct ids >= 0 or null, got \[0, 0\]"),
    ("gpus__device", [0], r"resources.gpus: unknown keys \['device'\]"),
])
def test_bad_resources_name_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_config(resources_config(**{key: value}))


def test_read_prepared_gives_shapes_without_loading_images(tmp_path: Path) -> None:
    data = read_prepared(prepared(tmp_path / "a.npz", 16, 7, channels=1, folds=3))
    assert data.images["x_train"] == (7, 16, 16, 1)
    assert data.images["pool_x"] == (21, 16, 16, 1)
    assert data.n_classes == 5 and data.test_trainings == 3
    assert data.float_mb(("x_train", "x_val")) == pytest.approx(2 * 7 * 16 * 16 * 4 / 2**20)
    assert read_prepared(prepared(tmp_path / "b.npz", 16, 7)).test_trainings == 1


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_no_configuration_of_the_space_needs_more_than_the_largest(settings: Any, resolution: int) -> None:
    largest = largest_training_mb(settings.space, resolution, 3, 10, n_train=500, n_eval=500,
                                  eval_batch_size=512)
    space = build_space(settings.space, resolution)
    rng = random.Random(resolution)
    estimates = [
        estimate_memory_mb(config, 3, resolution, 10, min(config["batch_size"], 500), 500)
        for config in (space.sample(rng) for _ in range(300))
    ]
    assert max(estimates) <= largest
    assert max(estimates) > largest / 20, "the bound should be near what the space can reach"


def test_memory_grows_with_resolution_and_data_and_stops_at_the_trial_limit(
    settings: Any, tmp_path: Path,
) -> None:
    training = from_config(resources_config()).training
    small = training_mem_mb(settings, training, prepared(tmp_path / "16.npz", 16, 50))
    high = training_mem_mb(settings, training, prepared(tmp_path / "32.npz", 32, 50))
    more = training_mem_mb(settings, training, prepared(tmp_path / "32x.npz", 32, 400))
    assert training.base_mb < small < high < more
    limited = compose(*TINY, "trainer.memory_limit_mb=10")
    data = tmp_path / "32x.npz"
    info = read_prepared(data)
    data_mb = info.file_mb + info.float_mb(tuple(info.images))
    assert training_mem_mb(limited, training, data) == math.ceil(
        training.base_mb + training.margin * (data_mb + 10)
    )


def test_runtime_grows_with_trainings_and_pixels_and_is_capped(settings: Any, tmp_path: Path) -> None:
    training = Training(base_mb=0, margin=1.0, startup_minutes=2, minutes_per_epoch_gb=1000.0,
                        max_runtime=500, gpus=0)
    low, high = prepared(tmp_path / "16.npz", 16, 200), prepared(tmp_path / "32.npz", 32, 200)
    epochs = settings.trainer.max_epochs
    gb = 2 * 200 * 16 * 16 * 3 * 4 / 2**30
    assert training_runtime(settings, training, low, 4) == math.ceil(2 + 4 * epochs * gb * 1000)
    assert training_runtime(settings, training, high, 4) > training_runtime(settings, training, low, 4)
    assert training_runtime(settings, training, low, 8) > training_runtime(settings, training, low, 4)
    assert training_runtime(settings, training, high, 10_000) == 500
    with pytest.raises(ValueError, match="trainings=0"):
        training_runtime(settings, training, low, 0)


def test_the_test_protocol_runtime_counts_its_folds(settings: Any, tmp_path: Path) -> None:
    training = Training(base_mb=0, margin=1.0, startup_minutes=1, minutes_per_epoch_gb=1000.0,
                        max_runtime=10_000, gpus=0)
    folds = prepared(tmp_path / "folds.npz", 16, 30, folds=10)
    assert evaluation_runtime(settings, training, folds) == training_runtime(settings, training, folds, 10)
    single = prepared(tmp_path / "single.npz", 16, 30)  # one split: evaluation.repeats trainings
    assert settings.evaluation.repeats == 3
    assert evaluation_runtime(settings, training, single) == training_runtime(settings, training, single, 3)


def test_a_rule_sizes_its_job_from_its_input_when_the_input_exists(tmp_path: Path) -> None:
    """The declaration the training rules use: Snakemake defers an input-dependent
    resource until the input exists (``<TBD>`` before), then calls it."""
    (tmp_path / "Snakefile").write_text(f'''
from pathlib import Path
from iishpo.settings.config import load_settings
from iishpo.plan.job_resources import training_mem_mb, training_runtime
from iishpo.settings.resources import from_config
from omegaconf import OmegaConf
SETTINGS = load_settings({list(TINY)!r}, config_dir=Path({str(CONF)!r}))
TRAINING = from_config(OmegaConf.to_container(OmegaConf.load({str(CONF / "resources" / "default.yaml")!r}))).training

rule prepare:
    output: "data.npz"
    run:
        import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_resources import prepared
        prepared(Path(output[0]), 32, 40)

rule run_stage:
    input: data="data.npz"
    output: "sized.txt"
    resources:
        mem_mb=lambda wc, input: training_mem_mb(SETTINGS, TRAINING, input.data),
        runtime=lambda wc, input: training_runtime(SETTINGS, TRAINING, input.data, 4),
    shell: "echo {{resources.mem_mb}} {{resources.runtime}} > {{output}}"
''')
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(tmp_path),
               "--snakefile", str(tmp_path / "Snakefile"), "sized.txt"]
    dry = subprocess.run([*command, "--dry-run"], check=False, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "mem_mb=<TBD>" in dry.stdout + dry.stderr
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    settings, training = compose(*TINY), from_config(resources_config()).training
    data = tmp_path / "data.npz"
    assert (tmp_path / "sized.txt").read_text().split() == [
        str(training_mem_mb(settings, training, data)), str(training_runtime(settings, training, data, 4)),
    ]
