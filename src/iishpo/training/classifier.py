"""The LightningModule every trial trains: the paper's loss and optimizer around a CNN."""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from torch import nn

from iishpo.training.batches import Epoch
from iishpo.training.failures import Diverged


class Classifier(L.LightningModule):
    """Cross-entropy plus ``l1 * sum|w|`` and ``l2 * sum w^2`` over the weights (not the
    biases), SGD with momentum. Keeps the best validation epoch's weights in memory (no
    checkpoint files: a stage trains hundreds of models) and stops the training after
    ``patience`` validations without a lower error.

    Lightning's per-step and per-epoch machinery is a large share of an epoch at 8-32 px,
    so the module does the little it needs itself: one Lightning step per epoch (see
    :class:`~iishpo.training.batches.EpochLoader`) runs the optimization steps over that epoch's
    mini-batches (manual optimization) and then the validation, in evaluation mode without
    autograd, and stops early on the error it computes (no validation loop, no ``self.log``,
    no result collection, no callback). The arithmetic and its order are those of
    Lightning's automatic optimization, validation loop and ``EarlyStopping(mode="min")``.
    """

    def __init__(self, net: nn.Module, lr: float, momentum: float, l1: float, l2: float, patience: int) -> None:
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.net, self.lr, self.momentum, self.l1, self.l2 = net, lr, momentum, l1, l2
        self.patience = patience
        self.automatic_optimization = False
        self._weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
        self._since_best = 0
        self.best_error: float | None = None
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The net's logits. A ``*-true`` precision (``64-true``, ``bf16-true``) has cast
        the weights; the images are cast to match, as Lightning's own loops cast a batch
        (they never see these batches: see :class:`~iishpo.training.batches.EpochLoader`)."""
        return self.net(x.to(self._weights[0].dtype) if self._weights else x)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The training loss of a batch; raises :class:`Diverged` when it is not finite."""
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        if self.l1:
            loss = loss + self.l1 * sum(w.abs().sum() for w in self._weights)
        if self.l2:
            loss = loss + self.l2 * sum(w.pow(2).sum() for w in self._weights)
        if not torch.isfinite(loss):
            raise Diverged(f"loss became {loss.item()} in epoch {self.current_epoch}")
        return loss

    def training_step(self, epoch: Epoch, batch_idx: int) -> None:
        """One epoch: an SGD step on each of its training mini-batches, in order, then
        the validation.

        In plain float32 (Lightning's base precision plugin, a CPU's default) the steps
        call autograd and the optimizer directly: Lightning's ``manual_backward`` and
        optimizer wrapper add only hooks there, which nothing here uses, about 0.3 ms a
        step, 3% of an evaluation at 16 px. Any other precision goes through them: they
        carry loss scaling (``16-mixed``) and the plugins' other work.
        """
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list), "configure_optimizers returns one optimizer"
        if type(self.trainer.precision_plugin) is Precision:
            step, backward = optimizer.optimizer.step, torch.Tensor.backward
        else:
            step, backward = optimizer.step, self.manual_backward
        for batch in epoch.train:
            loss = self.loss(batch)
            optimizer.zero_grad()
            backward(loss)
            step()
        self.end_epoch(self.validation_error(epoch.val))

    def validation_error(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """The fraction of misclassified images over all ``batches``."""
        predicted, truth = self.predicted_labels(batches)
        return int((predicted != truth).sum()) / max(len(truth), 1)

    def predicted_labels(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted and the true class of every image in ``batches``, in order: the
        net in evaluation mode without autograd, its mode restored afterwards."""
        predicted, truth = [torch.empty(0, dtype=torch.long)], [torch.empty(0, dtype=torch.long)]
        training = self.net.training
        self.net.eval()
        with torch.no_grad():
            for x, y in batches:
                predicted.append(self(x.to(self.device)).argmax(1).cpu())
                truth.append(y.cpu())
        self.net.train(training)
        return torch.cat(predicted), torch.cat(truth)

    def end_epoch(self, error: float) -> None:
        """Keep the best weights (the earliest on ties); stop after ``patience``
        validations without a strictly lower error."""
        if self.best_error is None or error < self.best_error:
            self.best_error, self.best_epoch, self._since_best = error, self.current_epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        else:
            self._since_best += 1
            if self._since_best >= self.patience:
                self.trainer.should_stop = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum)
