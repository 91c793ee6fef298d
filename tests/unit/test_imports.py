"""The bus package's modules import each other without a cycle (docs/design.md: arrows only point down)."""
from __future__ import annotations

import ast
from pathlib import Path

import bus

ROOT = Path(bus.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imported_at_load(name: str, path: Path, known: set[str]) -> set[str]:
    """The bus modules `name` imports when it is loaded: statements at module level (not inside a
    function, which runs later), with the packages each target's import loads on the way."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for stmt in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(stmt, ast.Import):
                targets = [alias.name for alias in stmt.names]
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - stmt.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in stmt.names]
            else:
                continue
            for target in targets:
                if target not in known:
                    continue
                # Importing bus.a.b runs bus/a/__init__.py first, unless the importer is inside bus.a already.
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    step = ".".join(parts[:i])
                    if step in known and not (name == step or name.startswith(step + ".")):
                        found.add(step)
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as the modules along it, or None."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_of_the_bus_package_imports_itself_back_through_others():
    found = modules()
    graph = {name: imported_at_load(name, path, set(found)) for name, path in found.items()}
    assert sum(len(edges) for edges in graph.values()) > 50, "the walk must see the package's imports"
    assert cycle(graph) is None, f"import cycle: {' -> '.join(cycle(graph) or [])}"


def test_the_cycle_finder_finds_a_cycle_when_there_is_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
