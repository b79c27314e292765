"""Structural rules for the code under operator/ and trainer_image/: no import cycles, no over-long functions.

The layer and purity contracts are import-linter's (pyproject.toml [tool.importlinter], run by `make lint`); these are
the rules it does not express. The import graph comes from grimp (import-linter's graph library), which sees every
import statement, including those inside functions and under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import grimp
import pytest

from tests.conftest import ROOT

PACKAGES = ("proxyrank", "proxyrank_lab", "proxyrank_trainer")
MAX_FUNCTION_LINES = 80


def strongly_connected_components(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module, or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(sorted(component))
    return components


def import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = set(graph.modules)
    return {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}


def _describe(component: list[str], graph: Mapping[str, set[str]]) -> str:
    members = set(component)
    edges = sorted(f"{a} -> {b}" for a in component for b in graph[a] if b in members)
    return f"{', '.join(component)}\n    " + "\n    ".join(edges)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert sorted(strongly_connected_components(graph)) == [["a", "b", "c"], ["e"]]
    assert strongly_connected_components({"x": {"y"}, "y": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert {"proxyrank.cli", "proxyrank_lab.data.cli", "proxyrank_trainer.train"} <= set(graph)
    assert "proxyrank.handlers" in graph["proxyrank.operator_main"]  # a lazy import, inside cmd_operator, counts
    cycles = strongly_connected_components(graph)
    assert not cycles, "import cycles (modules, then the imports among them):\n" + "\n".join(
        _describe(c, graph) for c in cycles)


# -- function length ---------------------------------------------------------------------------------------------------

SOURCES = sorted(str(p.relative_to(ROOT)) for d in ("operator", "trainer_image") for p in (ROOT / d).rglob("*.py"))


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions and methods (nested ones too) longer than ``limit`` lines, from the def line to the last line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_the_length_check_counts_from_def_to_end(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    (tmp_path / "ok.py").write_text(f"@decorator\ndef f():\n{body}\n")  # def line + 79 = 80 lines
    method_body = body.replace("\n", "\n    ")
    (tmp_path / "long.py").write_text(f"class C:\n    async def g(self):\n    {method_body}\n        return x0\n")
    assert long_functions(tmp_path / "ok.py") == []
    assert long_functions(tmp_path / "long.py") == ["long.py:2 g: 81 lines"]


@pytest.mark.parametrize("source", SOURCES)
def test_no_function_is_longer_than_80_lines(source: str) -> None:
    assert not long_functions(ROOT / source), f"split these functions (at most {MAX_FUNCTION_LINES} lines each)"
