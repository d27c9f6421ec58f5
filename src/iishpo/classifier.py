"""The LightningModule every trial trains: the paper's loss and optimizer around a CNN."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from iishpo.failures import Diverged


class Classifier(L.LightningModule):
    """Cross-entropy plus ``l1 * sum|w|`` and ``l2 * sum w^2`` over the weights (not the
    biases), SGD with momentum. Keeps the best validation epoch's weights in memory (no
    checkpoint files: a stage trains hundreds of models)."""

    def __init__(self, net: nn.Module, lr: float, momentum: float, l1: float, l2: float) -> None:
        super().__init__()
        self.net, self.lr, self.momentum, self.l1, self.l2 = net, lr, momentum, l1, l2
        self._weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
        self._errors = 0
        self._seen = 0
        self.best_error: float | None = None
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        if self.l1:
            loss = loss + self.l1 * sum(w.abs().sum() for w in self._weights)
        if self.l2:
            loss = loss + self.l2 * sum(w.pow(2).sum() for w in self._weights)
        if not torch.isfinite(loss):
            raise Diverged(f"loss became {loss.item()} in epoch {self.current_epoch}")
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._errors += int((self.net(x).argmax(1) != y).sum())
        self._seen += len(y)

    def on_validation_epoch_end(self) -> None:
        """Log for early stopping and keep the best weights (the earliest on ties)."""
        error = self._errors / max(self._seen, 1)
        self._errors = self._seen = 0
        self.log("val_error", error, prog_bar=False, logger=False)
        if self.best_error is None or error < self.best_error:
            self.best_error, self.best_epoch = error, self.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum)
