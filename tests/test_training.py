"""Training and scoring, each number checked against a value computed by hand: the
penalties in the loss, the restored best epoch, the test metrics; and that importing the
package changes nothing global until an entry point asks for it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from helpers import CONF, REPO, TINY, compose
from iishpo.training import fit as training
from iishpo.training.batches import Batches, EpochLoader, TensorSplit, TrainingData
from iishpo.training.classifier import Classifier
from iishpo.training.failures import Diverged, TrialFailed
from iishpo.training.fit import evaluate, train
from iishpo.training.model import build_cnn
from iishpo.training.runtime import EXPECTED_WARNINGS, KERNEL_CACHES, QUIET_LOGGERS
from tiny_training import CONFIG, CPU, PixelIsPrediction, brightness_splits

# -- the loss ---------------------------------------------------------------------------


@pytest.mark.parametrize(("l1", "l2"), [(0.01, 0.0), (0.0, 0.03), (0.01, 0.03)])
def test_penalties_add_l1_and_l2_of_the_weights_not_the_biases(l1: float, l2: float) -> None:
    torch.manual_seed(0)
    net = build_cnn(CONFIG, 1, 8, 3)
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == CONFIG["n_conv"] + CONFIG["n_fc"] + 1
    with torch.no_grad():  # biases far from zero: counting them would show
        for layer in layers:
            layer.bias.fill_(3.0)
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    plain = Classifier(net, 0.1, 0.9, 0.0, 0.0, patience=1).loss((x, y))
    penalised = Classifier(net, 0.1, 0.9, l1, l2, patience=1).loss((x, y))
    by_hand = sum(
        l1 * float(np.abs(w).sum()) + l2 * float((w.astype(np.float64) ** 2).sum())
        for w in (layer.weight.detach().numpy() for layer in layers)
    )
    assert by_hand > 0.1  # large enough to tell from float32 rounding of the cross-entropy
    assert float(penalised.detach() - plain.detach()) == pytest.approx(by_hand, rel=1e-5)


# -- the restored weights ---------------------------------------------------------------


def test_the_returned_weights_are_the_best_validation_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    """From epoch ``SPOILED`` on, the weights are zeroed before validation (the model then
    predicts one class: 50% error), so the best epoch is an early one; the weights
    returned must be exactly those that epoch was validated with."""
    spoiled = 3
    data = TrainingData(brightness_splits(), CPU)
    val = data.tensors["val"]
    errors: list[float] = []
    states: list[dict[str, torch.Tensor]] = []

    validation_error = Classifier.validation_error

    def spoiled_then_recorded(self: Classifier, batches: Any) -> float:
        if self.current_epoch >= spoiled:
            with torch.no_grad():
                for p in self.net.parameters():
                    p.zero_()
        with torch.no_grad():
            errors.append(float((self.net(val.x).argmax(1) != val.y).float().mean()))
        states.append({k: v.detach().clone() for k, v in self.net.state_dict().items()})
        return validation_error(self, batches)

    monkeypatch.setattr(Classifier, "validation_error", spoiled_then_recorded)
    settings = compose(*TINY, "trainer.max_epochs=6", "trainer.patience=10").trainer
    result, module = train(CONFIG, data, settings, seed=0)

    assert len(errors) == 6 and result.epochs == 6
    best = int(np.argmin(errors))  # the earliest of equal errors
    assert best < spoiled and errors[best] < min(errors[spoiled:]) == 0.5, errors
    assert result.best_epoch == best and result.val_error == pytest.approx(errors[best])
    final = module.net.state_dict()
    assert final.keys() == states[best].keys()
    for name, tensor in states[best].items():
        assert torch.equal(final[name], tensor), name


# -- divergence -------------------------------------------------------------------------


def test_a_huge_learning_rate_diverges() -> None:
    data = TrainingData(brightness_splits(), CPU)
    settings = compose(*TINY).trainer
    with pytest.raises(Diverged, match=r"^loss became (nan|inf) in epoch 0$"):
        train({**CONFIG, "learning_rate": 1e30}, data, settings, seed=0)


def test_a_training_that_never_validated_fails_as_a_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Classifier, "end_epoch", lambda self, error: None)
    data = TrainingData(brightness_splits(), CPU)
    with pytest.raises(TrialFailed, match=r"^training ended before the first validation$"):
        train(CONFIG, data, compose(*TINY, "trainer.max_epochs=1").trainer, seed=0)


# -- what a training is given -----------------------------------------------------------


def test_train_batches_only_the_splits_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training split shuffled with the trial's seed in batches of the configuration's
    size, the validation split in order in evaluation batches, the memory estimate sized
    with the batches these really are; the data's own splits unless a fold is given, and
    never the test split."""
    made: list[tuple[TensorSplit, int, bool, int]] = []
    checked: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class RecordedBatches(Batches):
        def __init__(self, split: TensorSplit, batch_size: int, shuffle: bool, seed: int = 0) -> None:
            made.append((split, batch_size, shuffle, seed))
            super().__init__(split, batch_size, shuffle, seed)

    monkeypatch.setattr(training, "Batches", RecordedBatches)
    monkeypatch.setattr(training, "check_memory_limit", lambda *args, **kwargs: checked.append((args, kwargs)))
    splits = brightness_splits()
    data = TrainingData(splits, CPU)
    settings = replace(compose(*TINY, "trainer.max_epochs=1", "trainer.eval_batch_size=20").trainer, memory_limit_mb=99.0)
    config = {**CONFIG, "batch_size": 64}  # more than the 48 training images

    _, module = train(config, data, settings, seed=7)
    assert made == [(data.tensors["train"], 64, True, 7), (data.tensors["val"], 20, False, 0)]
    assert checked == [((config, 1, 8, 2), {"train_batch": 48, "eval_batch": 20, "limit_mb": 99.0})]
    convolutions = [m for m in module.net.modules() if isinstance(m, nn.Conv2d)]
    assert convolutions and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)

    made.clear()
    checked.clear()
    fold_train = data.tensor(splits.x["train"][:40], splits.y["train"][:40])
    fold_val = data.tensor(splits.x["train"][40:], splits.y["train"][40:])
    train(config, data, settings, seed=7, train_split=fold_train, val_split=fold_val)
    assert made == [(fold_train, 64, True, 7), (fold_val, 20, False, 0)]
    assert checked == [((config, 1, 8, 2), {"train_batch": 40, "eval_batch": 8, "limit_mb": 99.0})]


def test_a_training_starts_from_the_seeds_initial_weights_with_the_configured_loss() -> None:
    """A learning rate of 0 leaves the weights where the seed put them."""
    data = TrainingData(brightness_splits(), CPU)
    settings = compose(*TINY, "trainer.max_epochs=1").trainer
    config = {**CONFIG, "learning_rate": 0.0, "l1": 0.01, "l2": 0.02}
    _, module = train(config, data, settings, seed=5)
    torch.manual_seed(5)
    initial = build_cnn(config, 1, 8, 2).state_dict()
    trained = module.net.state_dict()
    assert trained.keys() == initial.keys()
    assert all(torch.equal(trained[name], initial[name]) for name in initial)
    assert (module.lr, module.momentum, module.l1, module.l2) == (0.0, settings.momentum, 0.01, 0.02)


@pytest.mark.parametrize(("precision", "dtype", "through_lightning"), [
    ("32-true", torch.float32, False),  # autograd and the optimizer called directly
    ("64-true", torch.float64, True),  # Lightning's manual_backward and optimizer wrapper
])
def test_a_training_is_plain_sgd_over_the_seeds_batches(
    monkeypatch: pytest.MonkeyPatch, precision: str, dtype: torch.dtype, through_lightning: bool
) -> None:
    """Lightning adds no arithmetic: one epoch through ``train`` ends with exactly the
    weights of a hand-written loop over the same seeded batches (the net built after
    seeding torch, the penalised loss, SGD with momentum), in the precision's type."""
    backward = Classifier.manual_backward
    lightning_backwards: list[torch.Tensor] = []

    def counted(self: Classifier, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        lightning_backwards.append(loss)
        backward(self, loss, *args, **kwargs)

    monkeypatch.setattr(Classifier, "manual_backward", counted)
    data = TrainingData(brightness_splits(), CPU)
    settings = replace(compose(*TINY, "trainer.max_epochs=1").trainer, precision=precision)
    config = {**CONFIG, "l1": 0.001, "l2": 0.002}
    _, module = train(config, data, settings, seed=4)

    torch.manual_seed(4)
    net = build_cnn(config, 1, 8, 2).to(dtype=dtype, memory_format=torch.channels_last)
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=settings.momentum)
    steps = 0
    for x, y in Batches(data.tensors["train"], 16, shuffle=True, seed=4):
        loss = nn.functional.cross_entropy(net(x.to(dtype)), y)
        loss = loss + 0.001 * sum(w.abs().sum() for w in weights) + 0.002 * sum(w.pow(2).sum() for w in weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    assert steps == 3  # 48 images in batches of 16
    assert len(lightning_backwards) == (steps if through_lightning else 0)
    trained = module.net.state_dict()
    assert all(trained[name].dtype == dtype and torch.equal(trained[name], value) for name, value in net.state_dict().items())


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true", "64-true"])
def test_every_precision_a_cpu_has_trains_and_scores(precision: str) -> None:
    """The ``*-true`` precisions cast the weights, so the images are cast to match in
    training, validation and scoring; mixed precision casts inside autocast."""
    data = TrainingData(brightness_splits(), CPU)
    settings = replace(compose(*TINY, "trainer.max_epochs=3", "trainer.patience=5").trainer, precision=precision)
    result, module = train(CONFIG, data, settings, seed=0)
    assert result.epochs == 3 and 0.0 <= result.val_error <= 1.0
    assert evaluate(module, data.tensors["test"], 8, "accuracy", 2) > 0.5  # brightness is learnt in an epoch or two


def test_the_training_loader_hands_lightning_one_item_per_epoch_its_batches() -> None:
    tensors = TrainingData(brightness_splits(), CPU).tensors
    batches = Batches(tensors["train"], 16, shuffle=True, seed=1)
    val = Batches(tensors["val"], 512, shuffle=False)
    loader = EpochLoader(batches, val)
    assert len(loader) == 1
    assert [(item.train is batches, item.val is val) for item in loader] == [(True, True)]
    assert [(item.train is batches, item.val is val) for item in loader] == [(True, True)]  # again next epoch


def test_a_seed_fixes_the_trained_weights() -> None:
    data = TrainingData(brightness_splits(), CPU)
    settings = compose(*TINY, "trainer.max_epochs=1").trainer
    first, again, other = (train(CONFIG, data, settings, seed=seed)[1].net.state_dict() for seed in (0, 0, 1))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_the_trainer_uses_one_device_of_its_kind_deterministic_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning calls a CUDA device ``gpu``; a GPU trains with its fast non-deterministic
    kernels; the configured precision and epochs pass through, ``auto`` is float32 on a CPU."""
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(training, "L", SimpleNamespace(Trainer=lambda **kwargs: made.append(kwargs)))
    settings = compose(*TINY, "trainer.max_epochs=7").trainer
    assert settings.precision == "auto"
    double = replace(settings, precision="64-true")
    training._trainer(settings, torch.device("cpu"))
    training._trainer(double, torch.device("cuda"))
    training._trainer(double, torch.device("mps"))
    common = {"devices": 1, "max_epochs": 7, "barebones": True}
    assert made == [
        {"accelerator": "cpu", "precision": "32-true", "deterministic": True, **common},
        {"accelerator": "gpu", "precision": "64-true", "deterministic": False, **common},
        {"accelerator": "mps", "precision": "64-true", "deterministic": False, **common},
    ]


# -- test metrics -----------------------------------------------------------------------


@pytest.mark.parametrize(("metric", "by_hand"), [("accuracy", 7 / 10), ("mean_class_accuracy", (1 + 1 / 3 + 0) / 3)])
def test_metrics_on_an_imbalanced_test_set(metric: str, by_hand: float) -> None:
    """Class 0: 6 images, all right; class 1: 3 images, 1 right; class 2: 1 image, wrong;
    class 3: no image (not averaged). Plain accuracy 7/10, mean per-class accuracy 4/9."""
    truth = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 0, 0, 0, 0, 0, 1, 0, 2, 1])
    images = predicted.astype(np.uint8).reshape(-1, 1, 1, 1)
    split = TensorSplit(images, truth, CPU, mean=0.0, std=1 / 255)  # normalised pixel = prediction
    module = Classifier(PixelIsPrediction(4), 0.1, 0.9, 0.0, 0.0, patience=1)
    assert evaluate(module, split, batch_size=4, metric=metric, n_classes=4) == pytest.approx(by_hand)


# -- nothing global at import -----------------------------------------------------------

GLOBAL_STATE = """
import ast, importlib, importlib.util, json, logging, os, pkgutil, sys, warnings
from pathlib import Path

PACKAGE = importlib.util.find_spec("iishpo").submodule_search_locations  # not imported yet

# Third-party state settles first, so that only iishpo's own effects count (scikit-learn,
# under SMAC, sets KMP_* variables when imported).
for source in Path(PACKAGE[0]).rglob("*.py"):
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in ("iishpo", "__future__"):
                try:
                    importlib.import_module(name)
                except ImportError:  # an optional package, imported where it is used
                    pass

QUIET = {quiet!r}
CACHES = {caches!r}

def snapshot():
    import torch

    return {{
        "env": dict(os.environ),
        "fill": torch.utils.deterministic.fill_uninitialized_memory,
        "levels": {{name: logging.getLogger(name).level for name in QUIET}},
        "filters": [repr(f) for f in warnings.filters],
    }}

before = snapshot()
import iishpo
modules = sorted(
    m.name for m in pkgutil.walk_packages(PACKAGE, "iishpo.") if m.name != "iishpo.__main__"
)
for name in modules:
    importlib.import_module(name)
after_import = snapshot()

# the training commands configure the process before they train; one cache's size is set
os.environ["LRU_CACHE_CAPACITY"] = "7"
import iishpo.jobs.evaluation, iishpo.jobs.stage
from iishpo import cli
seen = {{}}
iishpo.jobs.stage.run_stage = lambda *a, **k: seen.setdefault("run-stage", snapshot())
iishpo.jobs.evaluation.evaluate_test = lambda *a, **k: seen.setdefault("evaluate-test", snapshot())
common = ["--dataset", "synthetic", "--seed", "0", "--data", "x.npz"]
cli.main(["run-stage", *common, "--optimizer", "random", "--strategy", "standard", "--stage", "0", "--out-dir", "o"])
for name in CACHES:  # as a fresh process would have them
    if name != "LRU_CACHE_CAPACITY":
        os.environ.pop(name, None)
for name in QUIET:
    logging.getLogger(name).setLevel(logging.NOTSET)
import torch
torch.utils.deterministic.fill_uninitialized_memory = True
cli.main(["evaluate-test", *common, "--trials", "t.jsonl", "--output", "o.json"])
print(json.dumps({{"modules": modules, "before": before, "after_import": after_import, "seen": seen}}))
"""


@pytest.fixture(scope="module")
def global_state() -> dict[str, Any]:
    """Import every iishpo module, then run both training commands, in a fresh process
    (neither kernel cache set at import; one set by the user before the commands run)."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHES}
    env["IISHPO_CONF"] = str(CONF)
    script = GLOBAL_STATE.format(quiet=QUIET_LOGGERS, caches=tuple(KERNEL_CACHES))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_any_module_changes_nothing_global(global_state: dict[str, Any]) -> None:
    assert {"iishpo.training.fit", "iishpo.jobs.stage", "iishpo.training.memory", "iishpo.training.runtime"} <= set(global_state["modules"])
    before, after = global_state["before"], global_state["after_import"]
    assert after["env"] == before["env"]
    assert after["levels"] == before["levels"]
    assert after["filters"] == before["filters"]
    assert after["fill"] is before["fill"] is True
    assert not set(KERNEL_CACHES) & set(after["env"])


@pytest.mark.parametrize("command", ["run-stage", "evaluate-test"])
def test_the_training_commands_configure_the_process_first(global_state: dict[str, Any], command: str) -> None:
    seen = global_state["seen"][command]
    assert seen["env"]["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == KERNEL_CACHES["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]
    assert seen["env"]["LRU_CACHE_CAPACITY"] == "7"  # a value already in the environment wins
    assert set(seen["levels"].values()) == {logging.WARNING}
    assert seen["fill"] is False  # deterministic mode without NaN-filling new tensors
    for message in EXPECTED_WARNINGS:
        assert any(f.startswith(f"('ignore', re.compile({message!r}") for f in seen["filters"]), message
