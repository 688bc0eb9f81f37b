"""The core's modules import one another without cycles, counting imports under ``if TYPE_CHECKING:``.

A cycle hidden behind ``TYPE_CHECKING`` is still two modules that each need the other to be understood
(pipeline <-> overlay <-> status was one): the parts of the pipeline are passed in by constructor and
none reaches back up. The graph is read from the source with ``ast``: every ``import`` and
``from ... import`` anywhere in a module (inside functions and ``TYPE_CHECKING`` blocks too) is an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import svcbridge

SRC = Path(svcbridge.__file__).resolve().parent
PACKAGE = "svcbridge"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for p in sorted(SRC.rglob("*.py"))
        if "migrations" not in p.relative_to(SRC).parts  # Alembic's scripts, loaded by path
    }


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The core modules ``name`` imports: ``from .x import y`` is module ``x.y`` when that is a module,
    else ``x``; ``import a.b`` is ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif target in known:
                    found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, set(comp)) for comp in components]


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, e.g. [a, b, a]."""
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def test_the_core_has_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_type_checking_imports_and_the_checker_finds_a_cycle(tmp_path: Path) -> None:
    graph = import_graph()
    assert "svcbridge.models" in graph["svcbridge.pipeline"]
    assert "svcbridge.store.lease" in graph["svcbridge.store.pipelease"]  # `from . import lease`
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n")
    (pkg / "b.py").write_text("from . import a\n")
    known = {"p.a", "p.b"}
    small = {n: imports_of(n, pkg / f"{n[2:]}.py", known) for n in known}
    assert small == {"p.a": {"p.b"}, "p.b": {"p.a"}}
    assert find_cycles(small) == [["p.a", "p.b", "p.a"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []
