"""Holds a stage in the middle of its second training, so that a test can kill or signal
it there however fast the machine trains, instead of hoping that it is still busy.

Python imports this module at start-up in every process that has this directory on
``PYTHONPATH`` (``held`` in tests/helpers.py). It patches ``Classifier.training_step``
when ``iishpo.training.classifier`` is first imported, so in a warm worker too, whose forked jobs
inherit the patch. A process whose environment names a file in ``$IISHPO_TEST_HOLD``
creates that file in the first epoch of its second training (the first trial is in the
journal by then) and waits there for a signal: SIGTERM and SIGINT stop the stage as
inside any training, SIGKILL kills it. Without the variable nothing changes.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

VARIABLE = "IISHPO_TEST_HOLD"


def hold_the_second_training(classifier: Any) -> None:
    step = classifier.training_step
    started = 0

    def held(self: Any, epoch: Any, batch_idx: int) -> Any:
        nonlocal started
        if self.current_epoch == 0:  # one step per epoch: this training's first
            started += 1
            hold = os.environ.get(VARIABLE)
            if hold and started == 2:
                Path(hold).touch()
                while True:
                    signal.pause()
        return step(self, epoch, batch_idx)

    classifier.training_step = held


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds ``iishpo.training.classifier`` as usual, and patches it once it is executed."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "iishpo.training.classifier":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        load = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            load(module)
            hold_the_second_training(module.Classifier)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, PatchOnImport())
