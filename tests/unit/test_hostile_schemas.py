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
