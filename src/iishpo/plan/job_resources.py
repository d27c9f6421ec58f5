"""What each Snakemake job asks of the machine or the cluster.

Light rules get fixed values (``resources.light``). A training job (one stage of an
optimizer, or the test evaluation) is sized from what it will hold: the prepared images of
its resolution (as uint8 and as float32 tensors) and the training memory of the largest
configuration the search space allows at that resolution
(:func:`iishpo.plan.memory_estimate.estimate_memory_mb`), capped by
``trainer.memory_limit_mb`` because a configuration above that limit fails as a trial
instead of growing the process. The data file exists when Snakemake sizes the job (its
rule's input), so the sizes are exact, not guessed per data set.
"""

from __future__ import annotations

import itertools
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from iishpo.plan.memory_estimate import estimate_memory_mb
from iishpo.search.space import CATEGORICAL, build_space
from iishpo.settings.config import Settings
from iishpo.settings.resources import Training


@dataclass(frozen=True)
class PreparedData:
    """Shapes of one prepared ``.npz``, read from its headers without loading images."""

    images: dict[str, tuple[int, ...]]  # array name -> shape of every image array
    n_classes: int
    file_mb: float
    #: trainings of the test protocol: one per fold (STL-10), else one
    test_folds: int

    @property
    def test_trainings(self) -> int:
        return max(self.test_folds, 1)

    def float_mb(self, names: tuple[str, ...]) -> float:
        """MB of the named image arrays as float32."""
        return sum(math.prod(self.images[n]) for n in names if n in self.images) * 4 / 2**20


def read_prepared(path: str | os.PathLike[str]) -> PreparedData:
    path = Path(path)
    images: dict[str, tuple[int, ...]] = {}
    test_folds = 0
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            name = member.removesuffix(".npy")
            if name == "test_folds":
                with archive.open(member) as fh:
                    test_folds = _npy_shape(fh, f"{path}:{member}")[0]
            if not (name.startswith("x_") or name == "pool_x"):
                continue
            with archive.open(member) as fh:
                images[name] = _npy_shape(fh, f"{path}:{member}")
    with np.load(path, allow_pickle=False) as data:
        n_classes = len(data["class_names"])
    return PreparedData(
        images=images, n_classes=n_classes, file_mb=path.stat().st_size / 2**20, test_folds=test_folds
    )


def _npy_shape(fh: IO[bytes], where: str) -> tuple[int, ...]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, _ = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, _ = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"{where}: .npy format version {version} not supported; expected 1.0 or 2.0")
    return tuple(int(n) for n in shape)


def largest_training_mb(space_spec: Mapping[str, Any], resolution: int, in_channels: int,
                        n_classes: int, n_train: int, n_eval: int, eval_batch_size: int) -> float:
    """The most training memory (MB) of any configuration of the space at ``resolution``.

    The estimate grows with every layer width, the filter size and the batch size, so
    those sit at their maximum; fewer conv layers leave a larger feature map for the
    first fully connected layer, so every layer count is tried.
    """
    space = build_space(space_spec, resolution)

    def top(name: str) -> Any:
        param = space[name]
        return max(param.choices) if param.kind == CATEGORICAL else param.high  # type: ignore[arg-type]

    widest = {p.name: top(p.name) for p in space.params}
    counts = [
        range(int(space[name].low), int(space[name].high) + 1)  # type: ignore[arg-type]
        for name in space.layer_counts
    ]
    return max(
        estimate_memory_mb(
            {**widest, **dict(zip(space.layer_counts, layers, strict=True))}, in_channels,
            resolution, n_classes, train_batch=min(int(widest["batch_size"]), n_train),
            eval_batch=min(eval_batch_size, n_eval),
        )
        for layers in itertools.product(*counts)
    )


def training_mem_mb(settings: Settings, training: Training, data: str | os.PathLike[str]) -> int:
    """``mem_mb`` of a job training on the prepared file ``data`` (its resolution's).

    ``settings`` is the validated :class:`iishpo.settings.config.Settings`: its space, its
    ``trainer.eval_batch_size`` and ``trainer.memory_limit_mb`` enter the estimate.
    """
    prepared = read_prepared(data)
    n, resolution, _, channels = prepared.images["x_train"]
    n_eval = max(shape[0] for name, shape in prepared.images.items() if name != "x_train")
    model_mb = largest_training_mb(
        settings.space, resolution, channels, prepared.n_classes, n, n_eval,
        settings.trainer.eval_batch_size,
    )
    limit = settings.trainer.memory_limit_mb
    if limit is not None:
        model_mb = min(model_mb, limit)
    data_mb = prepared.file_mb + prepared.float_mb(tuple(prepared.images))
    return math.ceil(training.base_mb + training.margin * (data_mb + model_mb))


def training_runtime(settings: Settings, training: Training, data: str | os.PathLike[str], trainings: int) -> int:
    """``runtime`` (minutes) of a job running ``trainings`` trainings on ``data``.

    One epoch passes over the train and validation images once; its cost is taken as
    proportional to their float32 size (pixels x channels), which is what makes the
    runtime grow with the data set and the resolution.
    """
    if trainings < 1:
        raise ValueError(f"a training job runs >= 1 training, got trainings={trainings}")
    epoch_gb = read_prepared(data).float_mb(("x_train", "x_val")) / 1024
    minutes = training.startup_minutes + (
        trainings * settings.trainer.max_epochs * epoch_gb * training.minutes_per_epoch_gb
    )
    return min(math.ceil(minutes), training.max_runtime)


def evaluation_runtime(settings: Settings, training: Training, data: str | os.PathLike[str]) -> int:
    """``runtime`` of evaluate_test: one training per test fold of ``data``, or
    ``evaluation.repeats`` trainings on a single split."""
    folds = read_prepared(data).test_folds
    return training_runtime(settings, training, data, folds or settings.evaluation.repeats)
