"""Relative paths of the configuration are relative to one root, not to the working directory.

The root is ``paths.root``: null (the default, unless ``IISHPO_ROOT`` is set) means the
directory that holds ``conf/``, i.e. the repository root; a relative ``paths.root`` is
relative to that directory. Every other entry of ``paths`` (raw, prepared, results) and a
data set's local locations (``mirror``, ``path``: the keys its source module lists in
``LOCATIONS``) are taken relative to the root. So the Snakefile, a job on a cluster node,
``snakemake --directory elsewhere`` and a run started from any directory read and write
the same files. ``~`` is expanded; URLs are left as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iishpo.data import download, sources

#: environment variable the configuration reads ``paths.root`` from (conf/config.yaml)
ROOT_ENV = "IISHPO_ROOT"


def root_of(paths: Mapping[str, Any], conf_dir: Path) -> Path:
    """``paths.root`` as an absolute directory (null: the directory holding ``conf_dir``)."""
    base = conf_dir.resolve().parent
    root = paths.get("root")
    if root is None:
        return base
    if not isinstance(root, str) or not root:
        raise ValueError(f"paths.root must be null (the directory holding {conf_dir.name}/) "
                         f"or a directory, got {root!r}")
    return absolute(root, base)


def absolute(path: str, root: Path) -> Path:
    """``path`` (``~`` expanded) as is if absolute, else below ``root``."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else root / expanded


def resolve_paths(cfg: Mapping[str, Any], conf_dir: Path) -> dict[str, Any]:
    """A copy of the composed configuration ``cfg`` with every relative path made absolute.

    ``conf_dir`` is the configuration directory ``cfg`` was composed from. Malformed
    entries are left for validation to report.
    """
    out = copy.deepcopy(dict(cfg))
    paths = out.get("paths")
    if not isinstance(paths, dict):
        return out
    root = root_of(paths, conf_dir)
    for key, value in paths.items():
        if isinstance(value, str) and value:
            paths[key] = str(absolute(value, root))
    paths["root"] = str(root)
    datasets = out.get("datasets")
    for dataset in datasets.values() if isinstance(datasets, dict) else ():
        if not isinstance(dataset, dict) or dataset.get("kind") not in sources.KINDS:
            continue
        for key in sources.locations(dataset["kind"]):
            value = dataset.get(key)
            if isinstance(value, str) and value and not download.is_url(value):
                dataset[key] = str(absolute(value, root))
    return out
