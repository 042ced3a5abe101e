"""JSON schemas a caller sends: checked when the request is, against what llama.cpp's grammar can enforce.

A schema must be a valid JSON Schema, every constraint in it must be one the grammar can enforce, and the
converter must take it. So a request is refused at once (the caller's error) rather than generated into
output that does not validate (handler/formats/json_output.py checks the output again).

Every step is bounded before it runs: the nesting is measured without recursion, the grammar's cost (enum
members, repetition counts, pattern length and the constructs llama.cpp's grammar has no equivalent for) is
checked before conversion, the converter (pure Python, known to loop forever on some patterns) runs under a
budget of interpreter steps that stops it, and the grammar it makes has a size limit. What llama.cpp's own
grammar parser would still refuse is refused when the request is planned (handler/engine/tokenizer.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Callable, Iterator
from functools import cache, lru_cache
from types import FrameType, ModuleType
from typing import Any, TypeVar

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
#: JSON Schema's own keywords (draft 2020-12 and earlier): the only names of a schema path that are not the
#: caller's text.
SCHEMA_KEYWORDS = frozenset(
    {
        *UNENFORCED_KEYWORDS,
        "$schema",
        "$id",
        "$ref",
        "$defs",
        "$anchor",
        "$dynamicAnchor",
        "$vocabulary",
        "$comment",
        "definitions",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "additionalItems",
        "anyOf",
        "oneOf",
        "allOf",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "title",
        "description",
        "default",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
        "contentMediaType",
        "contentEncoding",
        "contentSchema",
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
#: Members of one enum: each is an alternative the grammar checks at every sampled token.
MAX_ENUM_MEMBERS = 256
#: The largest count in minLength, maxLength, minItems, maxItems or a pattern's {n,m}: the converter writes
#: a repetition out element by element.
MAX_REPETITION = 1000
#: The longest pattern, in characters.
MAX_PATTERN_CHARS = 1000
#: The largest grammar a schema may become, in characters.
MAX_GRAMMAR_CHARS = 131_072
#: Interpreter steps (line events) the converter may take: common schemas take a few thousand; a runaway
#: is stopped here, in well under a second.
CONVERSION_STEPS = 2_000_000
_COUNTED_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")
#: Regular-expression escapes llama.cpp's grammar has no equivalent for (word boundaries, shorthand classes,
#: anchors, Unicode properties, back references), with what to write instead.
_NO_GRAMMAR_ESCAPES = {
    **dict.fromkeys("bBAzZG", "anchors and word boundaries have no grammar equivalent: remove it"),
    **dict.fromkeys("dDwWsShH", "write the characters as a class, such as [0-9] or [A-Za-z0-9_]"),
    **dict.fromkeys("pPkK", "Unicode properties and named references have no grammar equivalent"),
    **dict.fromkeys("123456789", "back references have no grammar equivalent"),
}
_QUANTIFIER = re.compile(r"\{(\d*)\s*(?:,\s*(\d*))?\s*\}")
#: A quantifier of any form where it starts: *, +, ?, {n}, {n,}, {n,m}.
_QUANTIFIER_AT = re.compile(r"[*+?]|\{\d+\s*(?:,\s*\d*)?\s*\}")

T = TypeVar("T")


class _Runaway(BaseException):
    """The converter passed its step budget (BaseException: no ``except Exception`` in it can swallow it)."""


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


@lru_cache(maxsize=32)
def schema_grammar(schema_json: str) -> str:
    """The GBNF grammar of a JSON schema (as JSON text), converted once: a request's schema is converted when it
    is checked, and its planning and generation read the same grammar again."""
    return str(grammar_module().json_schema_to_gbnf(schema_json))


def _masked(parts: Any) -> str:
    """A schema path with everything but JSON Schema's own keywords and array indexes shown as ``*``: errors
    about a schema are logged, and every other name in it (properties, definitions, patternProperties'
    patterns, dependentSchemas' names...) is the caller's text."""
    shown = [
        str(part) if isinstance(part, int) or str(part) in SCHEMA_KEYWORDS or str(part).isdigit() else "*"
        for part in parts
    ]
    return ".".join(shown) or "the top"


def _subschemas(schema: Any, path: str = "", depth: int = 0) -> Iterator[tuple[dict[str, Any], str]]:
    """Every subschema (an object) with its path, the schema itself first; refused past MAX_SCHEMA_DEPTH."""
    if depth > MAX_SCHEMA_DEPTH:
        raise ValueError(f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    if not isinstance(schema, dict):
        return
    yield schema, path
    for keyword in _SUBSCHEMA:
        yield from _subschemas(schema.get(keyword), f"{path}.{keyword}".lstrip("."), depth + 1)
    for keyword in _SUBSCHEMA_LISTS:
        for index, inner in enumerate(schema.get(keyword) or []):
            yield from _subschemas(inner, f"{path}.{keyword}.{index}".lstrip("."), depth + 1)
    for keyword in _SUBSCHEMA_MAPS:
        members = schema.get(keyword)
        if isinstance(members, dict):
            for name, inner in members.items():
                yield from _subschemas(inner, f"{path}.{keyword}.{name}".lstrip("."), depth + 1)


def _where(path: str) -> str:
    return _masked(path.split(".")) if path else "the top"


def _unenforced(schema: Any) -> Iterator[str]:
    """Where the schema uses a constraint the grammar cannot enforce, as ``keyword at path``."""
    for subschema, path in _subschemas(schema):
        for keyword in sorted(UNENFORCED_KEYWORDS.intersection(subschema)):
            yield f"{keyword} at {_where(path)}"


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


def _costly(schema: Any) -> Iterator[str]:
    """What in the schema would make its grammar too costly, or that the grammar cannot express, as
    ``keyword at path: why`` (names and patterns are the caller's text: never quoted)."""
    for subschema, path in _subschemas(schema):
        where = _where(path)
        enum = subschema.get("enum")
        if isinstance(enum, list) and len(enum) > MAX_ENUM_MEMBERS:
            yield f"enum at {where}: {len(enum)} members; at most {MAX_ENUM_MEMBERS}"
        for keyword in _COUNTED_KEYWORDS:
            count = subschema.get(keyword)
            if isinstance(count, int) and count > MAX_REPETITION:
                yield f"{keyword} at {where}: {count}; at most {MAX_REPETITION}"
        pattern = subschema.get("pattern")
        if isinstance(pattern, str):
            yield from (f"pattern at {where}: {problem}" for problem in _pattern_problems(pattern))


def _pattern_problems(pattern: str) -> Iterator[str]:
    """Why a pattern cannot become grammar (the converter takes ``^...$`` in a small regex subset)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        yield f"{len(pattern)} characters; at most {MAX_PATTERN_CHARS}"
        return
    if "[:" in pattern:
        yield "a POSIX class such as [[:alpha:]] has no grammar equivalent: write the characters, such as [A-Za-z]"
    for escape in sorted(set(re.findall(r"\\(.)", pattern)) & set(_NO_GRAMMAR_ESCAPES)):
        yield f"the escape \\{escape}: {_NO_GRAMMAR_ESCAPES[escape]}"
    for low, high in _QUANTIFIER.findall(pattern):
        largest = max(int(low or 0), int(high or 0))
        if largest > MAX_REPETITION:
            yield f"a repetition count of {largest}; at most {MAX_REPETITION}"
    if _misread_repetition(pattern):
        yield (
            "a quantifier after an escaped character would repeat the literal characters before it too; put the "
            "escaped character in a class or a group, such as [.]{3} or (\\.){3}"
        )


def _misread_repetition(pattern: str) -> bool:
    """Whether a quantifier follows an escaped character that ends a run of two or more literal characters.

    llama.cpp's converter (json_schema_to_gbnf) keeps a run of literal characters as one string and, where the
    run's last character was escaped, applies the quantifier after it to the whole run: ``id\\.{3}`` becomes
    ``"id.id.id."``, ``a\\-*`` becomes ``("a-")*``, for every quantifier form. After an unescaped character it
    splits the run correctly, and an escaped character alone (after a group, a class, an alternation or the start)
    is repeated alone; a class (``[.]{3}``) or a group (``(\\.){3}``) is always right.
    """
    run = 0  # literal characters in the run that ends here
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "[":  # a class is one element: skip to its end
            index = _class_end(pattern, index)
            run = 0
            continue
        if char == "\\" and index + 1 < len(pattern):
            if run > 0 and _QUANTIFIER_AT.match(pattern, index + 2):
                return True
            run += 1
            index += 2
            continue
        quantifier = _QUANTIFIER_AT.match(pattern, index)
        if quantifier:
            run = 0
            index = quantifier.end()
            continue
        run = 0 if char in "()|^$." else run + 1
        index += 1
    return False


def _class_end(pattern: str, start: int) -> int:
    """The index after the ``]`` that closes the class opened at ``start`` (escapes inside skipped)."""
    index = start + 1
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return index + 1


def _bounded(work: Callable[[], T], steps: int) -> T:
    """Run pure-Python ``work``, stopped with _Runaway after ``steps`` interpreter steps (line events)."""
    taken = 0

    def count(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal taken
        taken += 1
        if taken > steps:
            raise _Runaway
        return count

    previous = sys.gettrace()
    sys.settrace(count)
    try:
        return work()
    finally:
        sys.settrace(previous)


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
    unenforced = list(_unenforced(schema))
    if unenforced:
        raise ValueError(
            "the grammar cannot enforce " + ", ".join(unenforced[:10]) + "; remove these constraints "
            "(or check them in your own code)"
        )
    costly = list(_costly(schema))
    if costly:
        raise ValueError("the schema cannot become a grammar: " + "; ".join(costly[:10]))
    text = json.dumps(schema)
    try:
        rules = _bounded(lambda: schema_grammar(text), CONVERSION_STEPS)
    except _Runaway:
        raise ValueError(
            f"llama.cpp's grammar converter did not finish within {CONVERSION_STEPS} steps on this schema "
            "(an unbalanced ] or } in a pattern makes it loop); simplify the schema"
        ) from None
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError, NotImplementedError) as exc:
        # The converter's messages quote the schema: named by kind only.
        raise ValueError(
            f"llama.cpp's grammar converter cannot handle this schema ({type(exc).__name__}: an unsupported "
            "type, format, pattern or $ref)"
        ) from None
    if len(rules) > MAX_GRAMMAR_CHARS:
        raise ValueError(f"the schema's grammar is {len(rules)} characters; at most {MAX_GRAMMAR_CHARS}")
