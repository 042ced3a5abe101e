"""Hostile JSON schemas in ``response_format``: refused at the check, in bounded time, never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apigw import decode, proxy_event
from conftest import FakeLambdaContext, Table
from handler.core.errors import InvalidRequest
from handler.entry import api
from handler.formats.schemas import parse_request


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
