"""JSON schemas a caller sends: checked when the request is, against what llama.cpp's grammar can enforce.

A schema must be a valid JSON Schema, every constraint in it must be one the grammar can enforce, and the
converter must take it. So a request is refused at once (the caller's error) rather than generated into
output that does not validate (handler/formats/json_output.py checks the output again).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from functools import cache
from types import ModuleType
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

#: Constraints llama.cpp's converter does not turn into grammar (it would ignore them): refused, since the
#: output could not be held to them.
UNENFORCED_KEYWORDS = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "dependentSchemas",
        "dependentRequired",
        "dependencies",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "$dynamicRef",
        "$recursiveRef",
    }
)
#: Keywords whose value is one subschema, a list of them, or a map of names to them.
_SUBSCHEMA = ("items", "additionalProperties", "additionalItems")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")
#: Deeper schemas than this are refused before they are walked or converted.
MAX_SCHEMA_DEPTH = 32
#: The most nested JSON containers (objects, arrays) a schema may hold: two per schema level (a keyword's map
#: and the subschema in it), and room beside. Checked without recursion before any library walks the schema,
#: since the JSON Schema validator and the grammar converter recurse and would exhaust Python's stack.
MAX_SCHEMA_NESTING = 2 * MAX_SCHEMA_DEPTH + 8


@cache
def grammar_module() -> ModuleType:
    """llama-cpp-python's grammar module, loaded from its file alone.

    Importing ``llama_cpp.llama_grammar`` would import the ``llama_cpp`` package, which loads the llama.cpp
    library; the service picks that library's build before its first import (handler/engine/builds.py),
    which may be later than a request is checked. The module itself needs only the standard library.
    """
    package = importlib.util.find_spec("llama_cpp")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError("llama_cpp is not installed")
    path = f"{next(iter(package.submodule_search_locations))}/llama_grammar.py"
    spec = importlib.util.spec_from_file_location("llm_service_llama_grammar", path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _masked(parts: Any) -> str:
    """A schema path with the caller's own names (properties, definitions) shown as ``*``: errors about a
    schema are logged, and a schema's names are the caller's text."""
    shown: list[str] = []
    previous = None
    for part in parts:
        shown.append("*" if previous in _SUBSCHEMA_MAPS else str(part))
        previous = part
    return ".".join(shown) or "the top"


def _unenforced(schema: Any, path: str, depth: int = 0) -> Iterator[str]:
    """Where the schema uses a constraint the grammar cannot enforce, as ``keyword at path``."""
    if depth > MAX_SCHEMA_DEPTH:
        raise ValueError(f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    if not isinstance(schema, dict):
        return
    for keyword in sorted(UNENFORCED_KEYWORDS.intersection(schema)):
        yield f"{keyword} at {_masked(path.split('.')) if path else 'the top'}"
    for keyword in _SUBSCHEMA:
        yield from _unenforced(schema.get(keyword), f"{path}.{keyword}".lstrip("."), depth + 1)
    for keyword in _SUBSCHEMA_LISTS:
        for index, inner in enumerate(schema.get(keyword) or []):
            yield from _unenforced(inner, f"{path}.{keyword}.{index}".lstrip("."), depth + 1)
    for keyword in _SUBSCHEMA_MAPS:
        members = schema.get(keyword)
        if isinstance(members, dict):
            for name, inner in members.items():
                yield from _unenforced(inner, f"{path}.{keyword}.{name}".lstrip("."), depth + 1)


def _nesting(value: Any) -> int:
    """How many JSON containers deep ``value`` goes, counted with a stack of its own (no recursion), stopping
    as soon as the limit is passed."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if not isinstance(current, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_SCHEMA_NESTING:
            break
        stack.extend((inner, depth + 1) for inner in (current.values() if isinstance(current, dict) else current))
    return deepest


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse, with the reason, a schema that is not valid or that the grammar cannot hold output to."""
    if _nesting(schema) > MAX_SCHEMA_NESTING:
        raise ValueError(
            f"the schema is nested more than {MAX_SCHEMA_NESTING} objects and arrays deep "
            f"(at most {MAX_SCHEMA_DEPTH} levels of subschemas)"
        )
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise ValueError(
            f"not a valid JSON schema: the value at {_masked(exc.absolute_path)} breaks the metaschema's "
            f"{exc.validator!s} rule"
        ) from None
    unenforced = list(_unenforced(schema, ""))
    if unenforced:
        raise ValueError(
            "the grammar cannot enforce " + ", ".join(unenforced[:10]) + "; remove these constraints "
            "(or check them in your own code)"
        )
    try:
        grammar_module().json_schema_to_gbnf(json.dumps(schema))
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError, NotImplementedError) as exc:
        # The converter's messages quote the schema: named by kind only.
        raise ValueError(
            f"llama.cpp's grammar converter cannot handle this schema ({type(exc).__name__}: an unsupported "
            "type, format, pattern or $ref)"
        ) from None
