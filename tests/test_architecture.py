"""The package's architecture, checked over its syntax trees: subpackages in layers whose
imports run one way, no import cycle between modules, and a planning layer that never
imports torch or Lightning, not even inside a function.

Every ``import`` counts wherever it is written (at module level or in a function: a lazy
import is still a dependency); only imports under ``if TYPE_CHECKING:`` are left out, as
they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "iishpo"

#: the layers, top to bottom: a module may import its own subpackage and any layer below
#: its own; the subpackages of one layer (``|``) may not import each other. The bottom
#: layer is the package's root modules: foundations that import nothing of the package.
LAYERS = (
    "__main__",  # `python -m iishpo ...`: through the warm worker when one runs, else the CLI
    "worker",  # the warm worker: forks the CLI for each job
    "cli",  # the commands the DAG's rules run
    "jobs",  # what a DAG job runs: a stage, a test evaluation
    "results",  # records, summary, comparisons, figures, export
    "training | narrowing",  # one evaluation (torch); range extraction between IIS stages
    "plan",  # the DAG's files and jobs, each job's resources
    "settings",  # the validated configuration, the strategies
    "optimizers | data",  # ask/tell algorithms; data sets
    "search",  # the search space and the names the code reads
    "conf | typed | seeds | store",  # foundations
)
#: what the Snakefile builds the DAG from: none of it may import a deep-learning framework
PLANNING = ("plan", "settings", "optimizers", "data", "search", "conf", "typed", "seeds", "store")
FRAMEWORKS = ("torch", "lightning", "pytorch_lightning", "torchmetrics")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module name ``source`` imports (for ``from a import b``: ``a`` and ``a.b``, as
    ``b`` may be a submodule), outside ``if TYPE_CHECKING:`` blocks."""
    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if not _is_type_checking(child):
                yield child
                yield from walk(child)

    for node in walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package to the modules of the package and the third-party top
    level names it imports."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        found = set()
        for imported in imported_names(path.read_text(), name, path.name == "__init__.py"):
            if imported.split(".")[0] != "iishpo":
                found.add(imported.split(".")[0])
            elif imported in paths and imported != name:
                found.add(imported)
        graph[name] = found
    return graph


def layer_of(module: str) -> tuple[int, str]:
    """The layer index (0 = top) and the unit (subpackage or root module) of ``module``."""
    unit = module.split(".")[1] if "." in module else ""
    for index, layer in enumerate(LAYERS):
        if unit in (u.strip() for u in layer.split("|")):
            return index, unit
    raise AssertionError(f"{module} is in no layer of LAYERS: add its subpackage to one")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph()


def test_the_package_is_in_subpackages_by_role() -> None:
    units = {layer_of(m)[1] for m in GRAPH if m != "iishpo"}
    assert len([p for p in PACKAGE.glob("*.py") if p.stem != "__init__"]) <= 7
    assert {"jobs", "results", "training", "narrowing", "plan", "settings", "optimizers", "data", "search"} <= units


def test_imports_run_down_the_layers() -> None:
    wrong = []
    for module, imports in sorted(GRAPH.items()):
        if module == "iishpo":
            continue
        layer, unit = layer_of(module)
        for imported in sorted(i for i in imports if i.startswith("iishpo.")):
            other_layer, other_unit = layer_of(imported)
            if other_unit != unit and other_layer <= layer:
                wrong.append(f"{module} -> {imported}")
    assert not wrong, "imports against the layers (tests/test_architecture.py LAYERS):\n" + "\n".join(wrong)


def test_no_module_imports_itself_through_others() -> None:
    assert cycles({m: {i for i in imports if i in GRAPH} for m, imports in GRAPH.items()}) == []


def test_the_planning_layer_imports_no_deep_learning_framework() -> None:
    """Statically, over every import the planning modules may run (a function's too):
    the runtime check is tests/test_plan.py."""
    planning = [m for m in GRAPH if m != "iishpo" and layer_of(m)[1] in PLANNING]
    assert len(planning) > 20
    reached, todo = set(planning), list(planning)
    while todo:
        for imported in GRAPH[todo.pop()]:
            if imported in GRAPH and imported not in reached:
                reached.add(imported)
                todo.append(imported)
    leaks = sorted(f"{m} imports {f}" for m in reached for f in GRAPH[m] if f in FRAMEWORKS)
    assert not leaks
    assert not [m for m in reached if layer_of(m)[1] not in PLANNING]


# The checks themselves, on made-up sources.

@pytest.mark.parametrize(("source", "module", "is_package", "expected"), [
    ("import torch\nfrom iishpo.search import space", "iishpo.plan.layout", False,
     ["torch", "iishpo.search", "iishpo.search.space"]),
    ("def f():\n    import torch", "iishpo.x", False, ["torch"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch", "iishpo.x", False,
     ["typing", "typing.TYPE_CHECKING"]),
    ("from .base import Optimizer", "iishpo.optimizers.genetic", False,
     ["iishpo.optimizers.base", "iishpo.optimizers.base.Optimizer"]),
    ("from . import base", "iishpo.optimizers", True, ["iishpo.optimizers", "iishpo.optimizers.base"]),
])
def test_the_check_reads_every_import_that_can_run(source: str, module: str, is_package: bool,
                                                   expected: list[str]) -> None:
    assert list(imported_names(source, module, is_package)) == expected


def test_the_cycle_check_finds_a_cycle_through_three_modules() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
