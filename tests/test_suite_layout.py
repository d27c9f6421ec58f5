"""The test suite's own structure: test modules share code through helper modules
(``helpers``, ``tiny_training``, ``workflow_runs``, ...), never by importing one another.
A test module imported by another is imported twice (pytest imports each file under its
own name), runs its module-level code and fixtures in the wrong suite, and ties the two
suites' edits together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def imports_of_test_modules(source: str) -> list[str]:
    """The imports in ``source`` that name a test module (any dotted part ``test_*``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or "", *(alias.name for alias in node.names)]
        else:
            continue
        found += [name for name in names if any(part.startswith("test_") for part in name.split("."))]
    return found


@pytest.mark.parametrize(("source", "found"), [
    ("from test_workflow import planned_jobs, snakemake", ["test_workflow"]),
    ("import test_training as t", ["test_training"]),
    ("from tests.optimizers.test_optimizers import Subject", ["tests.optimizers.test_optimizers"]),
    ("from . import test_space", ["test_space"]),
    ("def f():\n    from test_store import trial", ["test_store"]),
    ("from helpers import TINY\nimport pytest\ntext = 'from test_x import y'", []),
])
def test_the_check_finds_imports_of_test_modules(source: str, found: list[str]) -> None:
    assert imports_of_test_modules(source) == found


def test_no_imports_of_test_modules_another() -> None:
    offending = {
        str(path.relative_to(TESTS)): names
        for path in sorted(TESTS.rglob("*.py"))
        if (names := imports_of_test_modules(path.read_text()))
    }
    assert not offending, f"move what these share into a helper module under tests/: {offending}"
