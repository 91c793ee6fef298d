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


# The layering (docs/design.md, "Layout"): which bus packages each part may import. A module is
# placed by the longest entry naming it or a package it is in; bus/*.py modules outside any package
# are SHARED (errors, tags, routes, settings, ...), which every part may import except as noted.
# bus.celery is the Celery app, which loads the worker's tasks: only the worker and the CLI use it.
APP = {"bus.celery"}
LOWER = {"bus.wire", "bus.journal", "bus.broker", "bus.archive"}
SHARED = "shared"
MAY_IMPORT: dict[str, set[str]] = {
    "bus.wire": {"bus.errors"},  # below the journal: nothing of the bus but its errors
    "bus.broker.messages": set(),  # the task envelope, built by the journal in the same script as its events
    "bus.journal": {SHARED, "bus.wire", "bus.broker.messages"},
    "bus.broker": {SHARED, "bus.wire", "bus.journal"},
    "bus.archive": {SHARED, "bus.wire", "bus.journal"},
    "bus.spool": {SHARED, "bus.wire", "bus.journal", "bus.broker"},
    "bus.fluentd": {SHARED},
    "bus.worker": {SHARED, *LOWER, *APP},
    "bus.ingress": {SHARED, *LOWER},
    "bus.cli": {SHARED, *LOWER, *APP, "bus.spool", "bus.fluentd", "bus.ingress"},
    SHARED: {SHARED, *LOWER},
    "bus.celery": {SHARED, *LOWER, "bus.worker"},  # its include list and the lost-task recovery step
    "bus": {SHARED, "bus.spool"},  # bus/__init__.py: `from bus import emit, Producer`
    "bus.__main__": {"bus.cli"},
}
PACKAGES = {name for name in MAY_IMPORT if name != SHARED and name not in APP and name not in ("bus", "bus.__main__")}


def part(module: str) -> str:
    """The MAY_IMPORT entry a module is placed by: the longest package or module entry containing it,
    else SHARED for a module of bus/ itself."""
    for entry in sorted(set(MAY_IMPORT) - {SHARED, "bus"}, key=len, reverse=True):
        if module == entry or module.startswith(entry + "."):
            return entry
    return "bus" if module == "bus" else SHARED


def imported_anywhere(name: str, path: Path, known: set[str]) -> set[str]:
    """The bus modules `name` names in any import statement, inside functions and TYPE_CHECKING blocks
    too: a function-level import is as much a dependency as one at the top, only later."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for stmt in ast.walk(ast.parse(path.read_text())):
        if isinstance(stmt, ast.Import):
            found.update(alias.name for alias in stmt.names if alias.name in known)
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - stmt.level + 1] + ([base] if base else []))
            for alias in stmt.names:
                # `from bus.broker import messages` imports the module, not the package's other parts.
                target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                if target in known:
                    found.add(target)
    return found


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that MAY_IMPORT does not allow, as a sentence naming importer, imported and the rule."""
    found = []
    for importer, targets in sorted(graph.items()):
        mine = part(importer)
        for target in sorted(targets):
            theirs = part(target)
            if theirs == mine and mine != SHARED or theirs == importer:
                continue
            allowed = MAY_IMPORT[mine]
            if any(theirs == a or theirs.startswith(a + ".") for a in allowed) or (theirs == SHARED and target in allowed):
                continue
            rule = ", ".join(sorted(allowed)) or "nothing of the bus"
            found.append(f"{importer} imports {target} ({theirs}), but {mine} may import only: {rule}")
    return found


def test_each_package_imports_only_the_layers_below_it():
    found = modules()
    graph = {name: imported_anywhere(name, path, set(found)) for name, path in found.items()}
    assert {part(name) for name in found} >= PACKAGES, "every package of the table must exist"
    assert sum(len(edges) for edges in graph.values()) > 200, "the walk must see the package's imports"
    violations = layering_violations(graph)
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_nothing_but_python_dash_m_bus_imports_the_cli():
    found = modules()
    importers = {name for name, path in found.items() if name != "bus.__main__" and not name.startswith("bus.cli")
                 and any(t.startswith("bus.cli") for t in imported_anywhere(name, path, set(found)))}
    assert importers == set()


def test_the_layering_check_names_an_import_against_the_table():
    graph = {"bus.journal.store": {"bus.worker.delivery", "bus.wire.pipelined", "bus.errors"},
             "bus.wire.resp": {"bus.routes"}, "bus.ingress.http": {"bus.worker.signing_x"},
             "bus.broker.messages": {"bus.errors"}, "bus.worker.delivery": {"bus.celery", "bus.journal"}}
    assert layering_violations(graph) == [
        "bus.broker.messages imports bus.errors (shared), but bus.broker.messages may import only: nothing of the bus",
        "bus.ingress.http imports bus.worker.signing_x (bus.worker), but bus.ingress may import only: "
        "bus.archive, bus.broker, bus.journal, bus.wire, shared",
        "bus.journal.store imports bus.worker.delivery (bus.worker), but bus.journal may import only: "
        "bus.broker.messages, bus.wire, shared",
        "bus.wire.resp imports bus.routes (shared), but bus.wire may import only: bus.errors",
    ]
