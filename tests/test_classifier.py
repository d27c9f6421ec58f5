"""The module's own early stopping and the evaluation's memory release, checked against
scripted validation errors and the garbage collector's state."""

from __future__ import annotations

import gc
import time

import pytest
import torch

from helpers import TINY, compose
from iishpo.training.batches import TrainingData
from iishpo.training.classifier import Classifier
from iishpo.training.fit import evaluate_trial, train
from tiny_training import CONFIG, CPU, PixelIsPrediction, brightness_splits

#: scripted validation errors, one per epoch
ERRORS = [0.5, 0.4, 0.4, 0.45, 0.3, 0.35, 0.35, 0.35, 0.2, 0.1]


@pytest.fixture
def scripted_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every epoch's validation reports ``ERRORS[epoch]``."""
    monkeypatch.setattr(Classifier, "validation_error", lambda self, batches: ERRORS[self.current_epoch])


@pytest.mark.parametrize(("patience", "epochs", "best_epoch"), [
    (1, 3, 1),   # the tie in epoch 2 is no improvement: stop after it
    (2, 4, 1),   # epochs 2 and 3 without a lower error
    (3, 8, 4),   # epoch 4 improves just in time; 5, 6, 7 do not
    (4, 10, 9),  # never 4 in a row: runs to max_epochs
])
def test_training_stops_after_patience_validations_without_a_lower_error(
    scripted_errors: None, patience: int, epochs: int, best_epoch: int
) -> None:
    data = TrainingData(brightness_splits(), CPU)
    settings = compose(*TINY, f"trainer.max_epochs={len(ERRORS)}", f"trainer.patience={patience}").trainer
    result, _ = train(CONFIG, data, settings, seed=0)
    assert (result.epochs, result.best_epoch) == (epochs, best_epoch)
    assert result.val_error == ERRORS[best_epoch]


def test_a_patience_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^patience must be >= 1, got 0$"):
        Classifier(torch.nn.Linear(2, 2), 0.1, 0.9, 0.0, 0.0, patience=0)


def test_the_validation_error_counts_every_batch() -> None:
    """Predictions and labels by hand: one image wrong; 3 of 10 wrong over batches of 4,
    4, 2; 1 of 10 over batches of 3; nothing to validate is no error."""
    module = Classifier(PixelIsPrediction(2), 0.1, 0.9, 0.0, 0.0, patience=5)

    def validate(predicted: list[int], truth: list[int], batch_size: int) -> float:
        x = torch.tensor(predicted, dtype=torch.float32).reshape(-1, 1, 1, 1)
        y = torch.tensor(truth)
        return module.validation_error(
            [(x[start : start + batch_size], y[start : start + batch_size]) for start in range(0, len(y), batch_size)]
        )

    assert validate([1], [0], 4) == 1.0
    assert validate([0, 0, 0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 0, 1, 1, 0], 4) == 0.3
    assert validate([1] * 10, [1] * 9 + [0], 3) == 0.1
    assert type(validate([1], [1], 1)) is float
    assert module.validation_error([]) == 0.0


def test_validation_runs_in_evaluation_mode_without_autograd_and_restores_training_mode() -> None:
    seen: list[tuple[bool, bool]] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((self.training, torch.is_grad_enabled()))
            return torch.zeros(len(x), 2)

    module = Classifier(Probe(), 0.1, 0.9, 0.0, 0.0, patience=5)
    assert module.validation_error([(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))] * 2) == 0.0
    assert seen == [(False, False)] * 2
    assert module.net.training and torch.is_grad_enabled()


def test_the_module_is_its_net_trained_by_sgd_with_momentum() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    module = Classifier(net, 0.05, 0.8, 0.0, 0.0, patience=1)
    x = torch.randn(4, 3)
    assert torch.equal(module(x), net(x))
    optimizer = module.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD
    assert (optimizer.defaults["lr"], optimizer.defaults["momentum"]) == (0.05, 0.8)
    optimized = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(optimized) == 2 and all(p is q for p, q in zip(optimized, net.parameters(), strict=True))


def test_an_evaluation_leaves_nothing_frozen_and_no_training_behind() -> None:
    """Only the evaluation's own modules count: another test's failure may keep one alive
    in its traceback (mutmut runs each mutant in a fork of a process that ran them all, its
    objects frozen, out of ``gc.get_objects()`` until the evaluation unfreezes them)."""
    data = TrainingData(brightness_splits(), CPU)
    settings = compose(*TINY).trainer
    gc.unfreeze()
    gc.collect()
    before = [o for o in gc.get_objects() if type(o) is Classifier]
    evaluate_trial(CONFIG, data, settings, seed=0)
    assert gc.get_freeze_count() == 0
    assert not [o for o in gc.get_objects() if type(o) is Classifier and not any(o is b for b in before)]


def test_an_evaluation_returns_the_trainings_result_and_its_own_duration() -> None:
    data = TrainingData(brightness_splits(), CPU)
    settings = compose(*TINY, "trainer.max_epochs=1").trainer
    start = time.perf_counter()
    result, seconds = evaluate_trial(CONFIG, data, settings, seed=3)
    assert 0 < seconds <= time.perf_counter() - start
    assert result == train(CONFIG, data, settings, seed=3)[0]
