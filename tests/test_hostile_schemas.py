"""Hostile JSON schemas in ``response_format``: refused at the check, in bounded time, never a 5xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import enqueue as enqueue_script
from apigw import decode, proxy_event
from conftest import FakeLambdaContext, Table
from handler.core.errors import InvalidRequest
from handler.core.settings import settings_from
from handler.engine import prompt_counter
from handler.entry import api
from handler.formats.schemas import parse_request
from handler.usecases.plan import plan

#: Put into a caller's pattern: it must never reach stdout, stderr or a log line.
MARKER = "zq-schema-marker-9d2"


def _with_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": "chat",
        "messages": [{"role": "user", "content": "Describe a person."}],
        "options": {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
    }


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


@pytest.mark.parametrize("levels", [100, 5_000])
def test_a_deeply_nested_schema_is_refused_naming_the_limit(levels: int) -> None:
    # GIVEN a schema nested far deeper than any output needs (RecursionError inside jsonschema before the fix)
    event = _with_schema(_nested(levels))
    # WHEN it is checked THEN it is the caller's error, naming the limit
    with pytest.raises(InvalidRequest) as refused:
        parse_request(event)
    assert "nested more than 72 objects and arrays deep" in refused.value.message


def test_a_schema_within_the_nesting_limit_is_accepted() -> None:
    parse_request(_with_schema(_nested(8)))


def _deep_body(levels: int, route: str) -> str:
    # Written as text: the JSON encoder itself would recurse as deep as the schema.
    schema = '{"type": "object", "properties": {"inner": ' * levels + '{"type": "string"}' + "}}" * levels
    response_format = '{"type": "json_schema", "json_schema": {"name": "x", "schema": ' + schema + "}}"
    messages = '[{"role": "user", "content": "Describe a person."}]'
    if route == "/v1/chat/completions":
        return '{"model": "tiny-phi3", "messages": ' + messages + ', "response_format": ' + response_format + "}"
    return '{"messages": ' + messages + ', "options": {"response_format": ' + response_format + "}}"


@pytest.mark.integration
@pytest.mark.parametrize("route", ["/chat", "/v1/chat/completions"])
@pytest.mark.parametrize("levels", [100, 5_000])
def test_a_deeply_nested_schema_through_the_api_is_a_4xx(
    route: str, levels: int, service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    # WHEN the API gets a body whose schema nests thousands of levels
    answer = decode(api.lambda_handler(proxy_event("POST", route, _deep_body(levels, route)), lambda_context))
    # THEN the caller is told, never an internal error
    assert answer.status in (400, 422), answer.body
    assert "nested" in json.dumps(answer.body)


# -- class 1: a schema the converter would loop on is stopped, in-process and through enqueue.py -----------

LOOPING_PATTERNS = ["^[[:alpha:]]+$", "^a]b$", "^a}b$"]


@pytest.mark.parametrize("pattern", LOOPING_PATTERNS)
def test_a_pattern_the_converter_loops_on_is_refused(pattern: str) -> None:
    # GIVEN a pattern llama-cpp-python's converter never finishes (a POSIX class, a stray ] or })
    event = _with_schema({"type": "object", "properties": {"name": {"type": "string", "pattern": pattern}}})
    # WHEN it is checked THEN it is refused, and the check returned at all
    with pytest.raises(InvalidRequest) as refused:
        parse_request(event)
    assert "options.response_format.json_schema" in refused.value.message


@pytest.mark.integration
def test_enqueue_reports_a_looping_schema_line_and_queues_the_others(
    service_env: Table, tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a batch file whose middle lines would hang the converter
    good = {"task": "summarize", "text": "Trees grow slowly in cold places.", "options": {"max_tokens": 8}}
    lines = [good, *(_with_schema({"type": "string", "pattern": p}) for p in LOOPING_PATTERNS[:2])]
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    # WHEN it is enqueued
    code = enqueue_script.main([str(source), "--table", service_env.name, "--model", str(tiny_model)])
    output = capsys.readouterr().out
    # THEN the good line is queued and the others are reported by number
    assert code == 1
    assert "new: 1" in output
    assert "line 2:" in output
    assert "line 3:" in output
    assert len(service_env.items()) == 1


# -- class 3: what llama.cpp would refuse at generation is refused at the check ----------------------------


def test_a_word_boundary_is_refused_at_the_check_naming_the_escape() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_request(_with_schema({"type": "string", "pattern": "^\\bfoo$"}))
    assert "the escape \\b" in refused.value.message


def test_an_enum_too_large_for_the_grammar_is_refused_naming_its_limit() -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_request(_with_schema({"enum": [f"v{n}" for n in range(50_000)]}))
    assert "50000 members; at most 256" in refused.value.message


@pytest.mark.integration
def test_a_grammar_llama_cpp_refuses_is_refused_when_planned_and_not_printed(
    tiny_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a schema the converter takes but llama.cpp's grammar parser refuses (an escape it does not know)
    request = parse_request(_with_schema({"type": "string", "pattern": f"^[\\f]{MARKER}$"}))
    counter = prompt_counter(settings_from({"MODEL_PATH": str(tiny_model), "N_THREADS": "1"}))
    capfd.readouterr()
    # WHEN the request is planned THEN it is the caller's error, before any generation
    with pytest.raises(InvalidRequest) as refused:
        plan(counter, request)
    assert "grammar parser refuses" in refused.value.message
    # AND llama.cpp printed nothing of it (the grammar holds the caller's pattern)
    printed = capfd.readouterr()
    assert MARKER not in printed.out + printed.err


@pytest.mark.integration
def test_a_schema_llama_cpp_refuses_is_a_4xx_through_the_api_and_nothing_is_generated(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    body = json.dumps(_with_schema({"type": "string", "pattern": "^[\\f]$"}) | {"task": "chat"})
    answer = decode(api.lambda_handler(proxy_event("POST", "/chat", body), lambda_context))
    assert answer.status in (400, 422), answer.body
    assert generations == []
    assert service_env.items() == []
