"""The house's rules that import-linter's contracts do not state: no import cycle and no module over 400 lines
under handler/ (scripts/: 600). The layer contracts themselves run in `make lint` (pyproject.toml)."""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

from scripts.repository import ROOT


def _cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """The import cycles among the package's modules: strongly connected components of two or more (Tarjan)."""
    modules = sorted(module for module in graph.modules if module.startswith(package))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if not imported.startswith(package):
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_handler_has_no_import_cycle() -> None:
    # GIVEN every import under handler/, those under TYPE_CHECKING and inside functions included
    graph = grimp.build_graph("handler")
    # THEN no two modules reach each other
    assert _cycles(graph, "handler") == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    # GIVEN a package whose two modules import each other, and a third that imports one of them
    package = tmp_path / "loop_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loop_pkg import b\n")
    (package / "b.py").write_text("def f():\n    from loop_pkg import a\n")
    (package / "c.py").write_text("from loop_pkg import a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        graph = grimp.build_graph("loop_pkg", cache_dir=None)
    finally:
        sys.path.remove(str(tmp_path))
    # THEN the deferred import counts: one cycle, of a and b
    assert _cycles(graph, "loop_pkg") == [["loop_pkg.a", "loop_pkg.b"]]


def test_no_module_outgrows_its_bound() -> None:
    bounds = {"handler": 400, "scripts": 600}
    oversized = {
        str(path.relative_to(ROOT)): lines
        for folder, bound in bounds.items()
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > bound
    }
    assert oversized == {}
