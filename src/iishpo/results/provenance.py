"""What made a result: resolved config, seed, package versions, device, git commit."""

from __future__ import annotations

import functools
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iishpo.settings.config import Settings

PACKAGES = (
    "iishpo", "torch", "lightning", "hyperopt", "deap", "smac", "numpy", "hydra-core",
    "snakemake", "dvc",
)


@functools.cache
def package_versions() -> dict[str, str]:
    """The installed versions, read once per process (0.1 s: a scan of the installed
    packages' metadata): those of the packages it imported. The warm worker reads them
    before it forks its jobs."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """HEAD and whether the tree had uncommitted changes; ``unknown`` outside a checkout.

    By default the checkout this package runs from, not the working directory, which
    may lie outside it (Snakemake ``--directory``).
    """
    cwd = repo or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def device_description(device: Any) -> str:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"{device} ({platform.processor() or platform.machine()})"


@dataclass(frozen=True)
class Provenance:
    """Recorded in every ``stage.json`` and ``test.json``."""

    config: dict[str, Any]  # the resolved configuration
    overrides: list[str]
    packages: dict[str, str]
    python: str
    git: dict[str, Any]  # {"commit": ..., "dirty": ...}
    host: str
    created_at: str
    device: str
    seed: int
    #: Lightning's precision of the trainings (``trainer.precision`` resolved on the device);
    #: empty in records made before it was recorded, and where nothing trains
    precision: str = ""


def provenance(
    resolved_config: dict[str, Any], overrides: tuple[str, ...], device: str, seed: int, precision: str = "",
) -> Provenance:
    return Provenance(
        config=resolved_config,
        overrides=list(overrides),
        packages=dict(package_versions()),
        python=platform.python_version(),
        git=git_commit(),
        host=platform.node(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        device=device,
        seed=seed,
        precision=precision,
    )


def training_provenance(settings: Settings, device: Any, seed: int) -> Provenance:
    """A training job's provenance: the device it trained on and Lightning's precision there
    (``auto`` resolves per device, so the record says which one the trainings had)."""
    from iishpo.training.device import precision_for

    return provenance(
        settings.resolved, settings.overrides, device=device_description(device), seed=seed,
        precision=precision_for(settings.trainer.precision, device),
    )
