"""Which hyperparameters the code reads, checked against the space when the configuration
is loaded.

The model, the training and the memory estimate read hyperparameters from a configuration by name; each of
those modules declares the names it reads in one constant next to that code::

    READS = HyperparameterNames(required=("learning_rate", ...), optional=(...))

A space parameter that no code reads (a typo: ``fc_dropuot``), a required one the space
lacks, or one declared per layer where the code reads one value (or the reverse) is a
configuration error at load, in ``check``, the Snakefile and every job, before any
training: otherwise the first would be searched and never used, the second would fail
every trial, and the third would be one of the two.

The constants are read from the modules' source, not imported: the training imports
torch, and loading the configuration must not (the DAG is built without it).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from iishpo.search.space import SpaceSpec

#: the modules that read hyperparameters (paths in the package), each declaring them as ``READS``
READERS = ("training/model.py", "training/fit.py", "plan/memory_estimate.py")
_PACKAGE = Path(__file__).parents[1]
#: messages name the declaring files from above the package's folder: src/iishpo/training/model.py
_SHOWN_FROM = _PACKAGE.parents[1]


@dataclass(frozen=True)
class HyperparameterNames:
    """The space parameters some code reads, by their names in ``conf/space``
    (``conv_filters``, not its per-layer ``conv_filters_0``): ``required`` ones it cannot
    do without, ``optional`` ones it uses when the configuration has them, and for those
    it reads once per layer, the layer count (``per_layer``: name -> count)."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    per_layer: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """``required: a, b per layer of n; optional: c`` (an empty group left out)."""
        groups = [
            f"{group}: " + ", ".join(
                f"{name} per layer of {self.per_layer[name]}" if name in self.per_layer else name
                for name in names
            )
            for group, names in (("required", self.required), ("optional", self.optional))
            if names
        ]
        return "; ".join(groups)


@cache
def declared(source: Path) -> HyperparameterNames:
    """The ``READS = HyperparameterNames(...)`` of the module ``source``, from its syntax
    tree; its arguments must be literals.

    Raises ``RuntimeError`` (the package is broken, not the configuration) when there is
    no such assignment.
    """
    for node in ast.parse(source.read_text(), str(source)).body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["READS"]:
            call = node.value
            if isinstance(call, ast.Call) and ast.unparse(call.func) == HyperparameterNames.__name__ and not call.args:
                try:  # a keyword that is no field (or `**`) is a TypeError, a value that is no literal a ValueError
                    return HyperparameterNames(**{str(k.arg): ast.literal_eval(k.value) for k in call.keywords})
                except (TypeError, ValueError):
                    pass
            break
    raise RuntimeError(
        f"{source} must declare the hyperparameters it reads as READS = "
        f"{HyperparameterNames.__name__}(required=(...), optional=(...), per_layer={{...}}) with literal values"
    )


def check_reads(spec: SpaceSpec) -> None:
    """Raise ``ValueError`` naming every parameter of ``spec`` that no code reads, every
    required one it lacks and every one declared per layer where the code reads one value
    (or the reverse), and where the names read are declared."""
    readers = {(_PACKAGE / module).relative_to(_SHOWN_FROM): declared(_PACKAGE / module) for module in READERS}
    reader_of: dict[str, tuple[Path, HyperparameterNames]] = {}  # each name to the first module reading it
    for path, names in readers.items():
        for name in (*names.required, *names.optional):
            reader_of.setdefault(name, (path, names))
    problems = []
    for declaration in spec.declarations:
        name, per_layer_of = declaration.param.name, declaration.per_layer_of
        if name not in reader_of:
            problems.append(f"space parameter {name!r} is read by no code")
            continue
        path, names = reader_of[name]
        count = names.per_layer.get(name)
        if per_layer_of != count:
            problems.append(
                f"space parameter {name!r} needs per_layer_of: {count} ({path} reads one per layer of {count})"
                if count is not None
                else f"space parameter {name!r} cannot be per_layer_of: {per_layer_of} ({path} reads one value of it)"
            )
    in_space = {d.param.name for d in spec.declarations}
    requiring: dict[str, list[str]] = {}
    for path, names in readers.items():
        for name in names.required:
            if name not in in_space:
                requiring.setdefault(name, []).append(str(path))
    problems += [
        f"space parameter {name!r} is required by {' and '.join(paths)} but the space does not declare it"
        for name, paths in requiring.items()
    ]
    if problems:
        where = " and ".join(f"{path} ({names.describe()})" for path, names in readers.items())
        raise ValueError("; ".join(problems) + f"; the names read are declared in {where}")
