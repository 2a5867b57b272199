"""The house has no circles: no module of clipdex imports, directly or through others, a module that imports it.

Every import statement counts (module level, inside functions, under TYPE_CHECKING): a lazy import still ties
the two modules together. ``from pkg import name`` is an edge to ``pkg.name`` where that is a module, else to
``pkg``; a package's ``__init__`` counts only for what it itself imports. The search path lives in one package.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("retrieval", "ingest")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the clipdex modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circles():
    assert cycles(import_graph()) == []


def test_the_finder_sees_a_circle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_search_path_is_one_package():
    graph = import_graph()
    search = {name for name in graph if name.startswith("retrieval.search")}
    assert {"retrieval.search.request", "retrieval.search.vector", "retrieval.search.run", "retrieval.search.hybrid",
            "retrieval.search.cutoff", "retrieval.search.fetch"} <= search
    for old in ("retrieval.request", "retrieval.query", "retrieval.hybrid", "retrieval.cutoff", "retrieval.fetch"):
        assert old not in graph, f"{old} still exists beside retrieval/search/"
    assert "retrieval.search.run" in graph["retrieval.index"]
    # the search path reaches into no ingest module for its text rules: both sides use retrieval.words
    for name in search:
        assert not any(dep.startswith("ingest.ocr") for dep in graph[name]), name
    assert "retrieval.words" in graph["ingest.ocr_engine"]
