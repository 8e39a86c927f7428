"""The package layout: no module imports (directly or around a loop) a module that imports it.

Every import counts, at any depth of the module (function-level and ``TYPE_CHECKING`` ones
too): a cycle hidden in a function is still two modules that cannot be read apart."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "launcher"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the launcher modules it imports (``from pkg import mod`` names the submodule)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    # store.update_catalog imports build inside the function: the walk must find it.
    assert "launcher.catalog.build" in graph["launcher.catalog.store"]
    assert "launcher.providers.aws.cleanup" in graph["launcher.providers.aws.launch"]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_providers_are_packages_one_module_per_concern() -> None:
    for provider in ("aws", "gcp"):
        folder = PACKAGE / "providers" / provider
        assert {p.stem for p in folder.glob("*.py")} >= {"__init__", "launch", "selection", "cleanup", "api"}
        assert not (PACKAGE / "providers" / f"{provider}.py").exists()
