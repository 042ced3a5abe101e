"""The design rules no linter checks: objects composed across modules, never inherited across them, and no
private name imported from another module.

import-linter holds the layers (pyproject.toml); these two rules are about classes and names, so they are read
here: the classes from the imported modules, the imports from the source.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from types import ModuleType

import pydantic
import pytest

import handler
from scripts.repository import ROOT

#: The folders whose Python files the private-name rule reads.
PYTHON_ROOTS = ("handler", "scripts", "tests")


def handler_modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(handler.__path__, "handler.")]
    return [importlib.import_module(name) for name in sorted(names)]


def may_be_inherited_across_modules(base: type) -> bool:
    """Exceptions, protocols and data shapes (pydantic models, dataclasses) are shared shapes, not half of one
    object's behaviour: a subclass elsewhere is their point."""
    return (
        issubclass(base, BaseException)
        or bool(getattr(base, "_is_protocol", False))
        or issubclass(base, pydantic.BaseModel)
        or dataclasses.is_dataclass(base)
    )


def private_imports(source: str, where: str) -> list[str]:
    """Each import of a name that another module keeps to itself (one leading underscore), as ``where:line``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [part for alias in node.names for part in alias.name.split(".")]
        else:
            continue
        found.extend(
            f"{where}:{node.lineno}: {name}"
            for name in names
            if name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
        )
    return found


def test_handler_classes_inherit_only_shared_shapes_from_other_modules() -> None:
    # GIVEN every class defined in handler/
    modules = handler_modules()
    assert len(modules) > 50
    spread = []
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            # WHEN one of its bases is a class of another handler module
            for base in cls.__bases__:
                crosses = base.__module__.startswith("handler.") and base.__module__ != cls.__module__
                if crosses and not may_be_inherited_across_modules(base):
                    spread.append(f"{cls.__module__}.{cls.__qualname__}({base.__module__}.{base.__qualname__})")
    # THEN that base is an exception, a protocol or a data shape, never half of the object
    assert spread == []


def test_no_module_imports_a_private_name_of_another() -> None:
    # GIVEN the project's Python files
    files = [path for root in PYTHON_ROOTS for path in sorted((ROOT / root).rglob("*.py"))]
    assert len(files) > 100
    # WHEN their imports are read
    found = [
        problem
        for path in files
        for problem in private_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    # THEN none takes a name another module keeps to itself
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from handler.engine.output_text import _Held\n", ["probe.py:1: _Held"]),
        ("from handler.engine import Engine, __version__\n", []),
        ("from __future__ import annotations\n", []),
        ("import handler._private\n", ["probe.py:1: _private"]),
        ("def f():\n    from handler.usecases import queued_work, _hidden\n", ["probe.py:2: _hidden"]),
    ],
)
def test_private_import_reader_tells_private_from_public(source: str, expected: list[str]) -> None:
    # GIVEN a module with one kind of import WHEN its imports are read THEN a private name is found, and only that
    assert private_imports(source, "probe.py") == expected
