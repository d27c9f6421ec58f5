"""Test helpers shared by the suites: the real configuration, shrunk for tests."""

from __future__ import annotations

import os
from pathlib import Path

from iishpo.settings.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
#: its sitecustomize, on PYTHONPATH, holds a stage in its second training (see there)
HOLD = REPO / "tests" / "hold"

#: Overrides that make every stage tiny: two epochs, few images, the smoke study.
TINY = [
    "study=smoke",
    "trainer.max_epochs=2",
    "trainer.patience=1",
    "datasets.synthetic.per_class.train=6",
    "datasets.synthetic.per_class.val=4",
    "datasets.synthetic.per_class.test=4",
]


def compose(*overrides: str) -> Settings:
    """The real configuration with ``overrides`` (validated)."""
    return load_settings(list(overrides), config_dir=CONF)


def journal_in(stage_dir: Path) -> Path:
    """The one trial journal in ``stage_dir``; while there is none, a path that does not exist."""
    from iishpo.jobs.stage import JOURNALS

    found = sorted(stage_dir.glob(JOURNALS))
    assert len(found) <= 1, f"more than one journal in {stage_dir}: {found}"
    return found[0] if found else stage_dir / "no-journal-yet"


def held(hold: Path | None = None) -> dict[str, str]:
    """Environment in which a stage (also one a warm worker runs) can be held: with
    ``hold``, it creates that file in its second training and waits there for a signal."""
    path = os.pathsep.join(p for p in (str(HOLD), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, **({"IISHPO_TEST_HOLD": str(hold)} if hold else {})}
