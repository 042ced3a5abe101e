"""Hostile JSON schemas in ``response_format`` through the API, enqueue.py and planning on the tiny model: refused
at the check, never a 5xx, nothing generated, the caller's pattern never printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler.core.errors import InvalidRequest
from handler.core.settings import settings_from
from handler.domain.requests import parse_request
from handler.engine import prompt_counter
from handler.entry import api
from handler.usecases.preparation import prepare
from scripts.batch import enqueue as enqueue_script
from tests.support.apigw import decode, proxy_event
from tests.support.hostile_input import LOOPING_PATTERNS, with_schema
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

#: Put into a caller's pattern: it must never reach stdout, stderr or a log line.
MARKER = "zq-schema-marker-9d2"


def _deep_body(levels: int, route: str) -> str:
    # Written as text: the JSON encoder itself would recurse as deep as the schema.
    schema = '{"type": "object", "properties": {"inner": ' * levels + '{"type": "string"}' + "}}" * levels
    response_format = '{"type": "json_schema", "json_schema": {"name": "x", "schema": ' + schema + "}}"
    messages = '[{"role": "user", "content": "Describe a person."}]'
    if route == "/v1/chat/completions":
        return '{"model": "tiny-phi3", "messages": ' + messages + ', "response_format": ' + response_format + "}"
    return '{"messages": ' + messages + ', "options": {"response_format": ' + response_format + "}}"


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


def test_enqueue_reports_a_looping_schema_line_and_queues_the_others(
    service_env: Table, tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a batch file whose middle lines would hang the converter
    good = {"task": "summarize", "text": "Trees grow slowly in cold places.", "options": {"max_tokens": 8}}
    lines = [good, *(with_schema({"type": "string", "pattern": p}) for p in LOOPING_PATTERNS[:2])]
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


def test_a_grammar_llama_cpp_refuses_is_refused_when_planned_and_not_printed(
    tiny_model: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a schema the converter takes but llama.cpp's grammar parser refuses (an escape it does not know)
    request = parse_request(with_schema({"type": "string", "pattern": f"^[\\f]{MARKER}$"}))
    counter = prompt_counter(settings_from({"MODEL_PATH": str(tiny_model), "N_THREADS": "1"}))
    capfd.readouterr()
    # WHEN the request is planned THEN it is the caller's error, before any generation
    with pytest.raises(InvalidRequest) as refused:
        prepare(counter, request)
    assert "grammar parser refuses" in refused.value.message
    # AND llama.cpp printed nothing of it (the grammar holds the caller's pattern)
    printed = capfd.readouterr()
    assert MARKER not in printed.out + printed.err


def test_a_schema_llama_cpp_refuses_is_a_4xx_through_the_api_and_nothing_is_generated(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    body = json.dumps(with_schema({"type": "string", "pattern": "^[\\f]$"}) | {"task": "chat"})
    answer = decode(api.lambda_handler(proxy_event("POST", "/chat", body), lambda_context))
    assert answer.status in (400, 422), answer.body
    assert generations == []
    assert service_env.items() == []
