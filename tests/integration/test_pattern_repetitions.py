"""The refusal of quantified escaped characters matches what llama.cpp's converter really does with them: every
refused pattern becomes a grammar that repeats more than one character, every accepted one a grammar that does not."""

from __future__ import annotations

import json

import pytest
from llama_cpp import llama_grammar

from tests.unit.test_hostile_schemas import MISREAD_REPETITIONS, READ_RIGHT


def root_rule(pattern: str) -> str:
    grammar: str = llama_grammar.json_schema_to_gbnf(json.dumps({"type": "string", "pattern": pattern}))
    return next(line for line in grammar.splitlines() if line.startswith("root ::="))


@pytest.mark.parametrize(
    ("pattern", "misread"),
    [
        ("^id\\.{3}$", '"id\\.id\\.id\\."'),
        ("^id\\.+$", '"id\\."+'),
        ("^id\\.*$", '"id\\."*'),
        ("^x\\.?$", '"x\\."?'),
        ("^\\-\\.{2}$", '"\\-\\.\\-\\."'),
    ],
)
def test_the_converter_repeats_the_whole_literal_run(pattern: str, misread: str) -> None:
    assert pattern in MISREAD_REPETITIONS
    assert misread in root_rule(pattern)


@pytest.mark.parametrize("pattern", READ_RIGHT)
def test_the_accepted_forms_repeat_one_element(pattern: str) -> None:
    rule = root_rule(pattern)
    assert '"id\\.id' not in rule
    assert '"id\\."+' not in rule
