"""Hostile JSON schemas in ``response_format`` refused where the request is parsed, in bounded time: nesting too
deep, patterns the converter would loop on, what llama.cpp would refuse at generation.
"""

from __future__ import annotations

from typing import Any

import pytest

from handler.core.errors import InvalidRequest
from handler.domain.requests import parse_request
from tests.support.hostile_input import LOOPING_PATTERNS, with_schema


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


@pytest.mark.parametrize("levels", [100, 5_000])
def test_a_deeply_nested_schema_is_refused_naming_the_limit(levels: int) -> None:
    # GIVEN a schema nested far deeper than any output needs (RecursionError inside jsonschema before the fix)
    event = with_schema(_nested(levels))
    # WHEN it is checked THEN it is the caller's error, naming the limit
    with pytest.raises(InvalidRequest) as refused:
        parse_request(event)
    assert "nested more than 72 objects and arrays deep" in refused.value.message


def test_a_schema_within_the_nesting_limit_is_accepted() -> None:
    parse_request(with_schema(_nested(8)))


# -- class 1: a schema the converter would loop on is stopped, in-process and through enqueue.py -----------


@pytest.mark.parametrize("pattern", LOOPING_PATTERNS)
def test_a_pattern_the_converter_loops_on_is_refused(pattern: str) -> None:
    # GIVEN a pattern llama-cpp-python's converter never finishes (a POSIX class, a stray ] or })
    event = with_schema({"type": "object", "properties": {"name": {"type": "string", "pattern": pattern}}})
    # WHEN it is checked THEN it is refused, and the check returned at all
    with pytest.raises(InvalidRequest) as refused:
        parse_request(event)
    assert "options.response_format.json_schema" in refused.value.message


# -- class 3: what llama.cpp would refuse at generation is refused at the check ----------------------------


def test_a_word_boundary_is_refused_at_the_check_naming_the_escape() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_request(with_schema({"type": "string", "pattern": "^\\bfoo$"}))
    assert "the escape \\b" in refused.value.message


def test_an_enum_too_large_for_the_grammar_is_refused_naming_its_limit() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_request(with_schema({"enum": [f"v{n}" for n in range(50_000)]}))
    assert "50000 members; at most 256" in refused.value.message


# -- class 4: a quantifier after an escaped character in a literal run (the converter repeats the whole run) --

MISREAD_REPETITIONS = [
    "^id\\.{3}$",
    "^id\\.{2,}$",
    "^id\\.{2,4}$",
    "^id\\.+$",
    "^id\\.*$",
    "^x\\.?$",
    "^\\-\\.{2}$",
    "^ab\\.{2}[a-z]+$",
]
#: The same repetitions written so the converter reads them right: a class, a group, the character alone.
READ_RIGHT = [
    "^id[.]{3}$",
    "^id(\\.){3}$",
    "^\\.{3}$",
    "^[a-z]\\.{2}$",
    "^a|\\.{2}$",
    "^ab{3}$",
    "^a{2}\\.{3}$",
    "^id\\.$",
]


@pytest.mark.parametrize("pattern", MISREAD_REPETITIONS)
def test_a_quantifier_the_converter_would_apply_to_a_literal_run_is_refused_before_generation(pattern: str) -> None:
    # GIVEN a pattern whose grammar would force the run again and again ("^id\.{3}$" -> "id.id.id.")
    event = with_schema({"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}})
    # WHEN it is checked THEN it is the caller's error, with the way to write it, before any generation
    with pytest.raises(InvalidRequest) as refused:
        parse_request(event)
    assert "pattern at properties.*: a quantifier after an escaped character" in refused.value.message
    assert "put the escaped character in a class or a group" in refused.value.message
    assert pattern not in refused.value.message  # the caller's text is never quoted back


@pytest.mark.parametrize("pattern", READ_RIGHT)
def test_repetitions_the_converter_reads_right_are_accepted(pattern: str) -> None:
    parse_request(with_schema({"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}))
