"""The architecture is a check that can fail: the contracts in .importlinter, checked twice.

import-linter checks them where it is installed; the same contracts are also checked here with the
standard library alone (``ast``), so the rule holds in every environment, together with what
import-linter does not check: no import cycle anywhere, imports of the project's own modules at
module top (but for the few that load late on purpose).
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"

# Imports of the project's own modules inside functions, each on purpose (the module says why).
LATE_IMPORTS = {
    ("quire.cli", "server.app"),  # Gradio takes seconds to import: only `serve` pays
    ("quire.cli", "server.mcp"),  # the MCP SDK: only `mcp` pays
    ("bench.ingest", "core.settings"),  # each benchmark child imports only what it measures
    ("bench.ingest", "quire.api"),
    ("bench.ingest", "ingest.base"),
    ("bench.ingest", "ingest.code"),
    ("bench.ingest", "storage.blobs"),
}


def _contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",))
    parser.read(CONFIG)
    return parser


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.strip().splitlines() if line.strip()]


def _modules() -> dict[str, Path]:
    roots = _lines(_contracts()["importlinter"]["root_packages"])
    found = {}
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """(importer, imported project module, inside a function) for every import statement."""
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        late = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `import a.b.c` names a.b.c; a name inside a module names it
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.append((name, target, id(node) in late))
    return edges


def _owner(module: str, names: list[str]) -> str | None:
    """The most specific listed package or module that ``module`` belongs to."""
    hits = [n for n in names if module == n or module.startswith(n + ".")]
    return max(hits, key=len) if hits else None


def test_the_contracts_hold_without_import_linter():
    contracts = _contracts()
    modules = _modules()
    edges = _imports(modules)
    assert len(modules) > 60 and len(edges) > 150  # the walk saw the project

    layers = [[s.strip() for s in line.split("|")] for line in _lines(contracts["importlinter:contract:layers"]["layers"])]
    listed = [name for layer in layers for name in layer]
    level = {name: i for i, layer in enumerate(layers) for name in layer}
    unplaced = [m for m in modules if _owner(m, listed) is None and m != "quire"]
    assert unplaced == [], "modules in no layer: add them to a layer in .importlinter"
    upward, sideways = [], []
    for importer, imported, _ in edges:
        a, b = _owner(importer, listed), _owner(imported, listed)
        if a is None or b is None or a == b:
            continue
        if level[a] > level[b]:
            upward.append(f"{importer} -> {imported}")
        elif level[a] == level[b]:
            sideways.append(f"{importer} -> {imported}")
    assert upward == [], "imports that point up a layer"
    assert sideways == [], "imports between independent siblings"

    forbidden = contracts["importlinter:contract:one-door"]
    sources, targets = _lines(forbidden["source_modules"]), _lines(forbidden["forbidden_modules"])
    past_the_door = [f"{a} -> {b}" for a, b, _ in edges if _owner(a, sources) and _owner(b, targets)]
    assert past_the_door == [], "front ends that reach past quire.api"


def test_no_import_cycle():
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for importer, imported, _ in _imports(modules):
        graph[importer].add(imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    # a package's __init__ that re-exports its modules is not a cycle with them
    cycles = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert cycles == []


def test_project_imports_are_at_module_top():
    late = {(a, b) for a, b, inside in _imports(_modules()) if inside}
    assert late - LATE_IMPORTS == set(), "imports inside functions: move them to the top, or say why they are late"


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter is not installed")
def test_import_linter_keeps_the_contracts(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(CONFIG)) == 0
