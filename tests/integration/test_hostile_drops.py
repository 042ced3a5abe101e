"""Nothing a caller sends is dropped without a word: one request per body, every field read or refused by name,
and OpenAI-route fields of the wrong type refused as OpenAI refuses them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handler.entry import api
from tests.support.apigw import ApiAnswer, decode, proxy_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

MARKER = "zq-drop-marker-7a3"
SERVED = "tiny-phi3"


def _call(event: dict[str, Any], context: FakeLambdaContext) -> ApiAnswer:
    return decode(api.lambda_handler(event, context))


def _completion(**fields: Any) -> dict[str, Any]:
    return {"model": SERVED, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, **fields}


NATIVE = {"text": "Trees grow slowly in cold places.", "options": {"max_tokens": 4}}
TOOL_CALLS = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]


@pytest.mark.parametrize(
    ("route", "one"),
    [
        ("/summarize", NATIVE),
        ("/chat", {"messages": [{"role": "user", "content": "Hi."}]}),
        ("/v1/chat/completions", _completion()),
    ],
)
def test_an_array_of_requests_is_refused_in_the_route_s_error_shape(
    route: str, one: dict[str, Any], service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    # GIVEN a body holding two requests
    answer = _call(proxy_event("POST", route, [one, one]), lambda_context)
    # THEN it is refused, saying why, in the route's shape, and nothing is generated or stored
    assert answer.status in (400, 422), answer.body
    error = answer.body["error"]
    assert "one request per body" in error["message"]
    assert ("code" in error) == route.startswith("/v1/")
    assert generations == []
    assert service_env.items() == []


@pytest.mark.parametrize(
    ("message_fields", "named"),
    [
        ({"tool_calls": TOOL_CALLS}, "tool_calls"),
        ({"audio": {"id": "a1"}}, "audio"),
        ({f"x-{MARKER}": 1}, f"x-{MARKER}"),
    ],
)
def test_a_message_field_this_service_does_not_read_is_refused_by_name(
    message_fields: dict[str, Any],
    named: str,
    service_env: Table,
    lambda_context: FakeLambdaContext,
    generations: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN an assistant turn carrying a field this service does not read
    turns = [{"role": "assistant", "content": "Calling.", **message_fields}, {"role": "user", "content": "Go on."}]
    answer = _call(proxy_event("POST", "/v1/chat/completions", _completion(messages=turns)), lambda_context)
    # THEN the caller is told which (the answer is theirs), the logs never name an unknown field, nothing runs
    assert answer.status == 400, answer.body
    assert f"messages.0.{named}" in answer.body["error"]["message"]
    assert MARKER not in "\n".join(json.dumps(vars(record), default=str) for record in caplog.records)
    assert generations == []


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", "1"), ("max_tokens", "4"), ("stream", "false"), ("seed", "3")]
)
def test_an_openai_field_of_the_wrong_type_is_refused_not_converted(
    field: str, value: Any, service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    answer = _call(proxy_event("POST", "/v1/chat/completions", _completion(**{field: value})), lambda_context)
    assert answer.status == 400, answer.body
    assert answer.body["error"]["param"] == field
    assert generations == []


# -- class 6: nothing a caller sends reaches a log line --------------------------------------------------


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(json.dumps(vars(record), default=str) for record in caplog.records)


def test_a_model_name_in_the_path_is_answered_but_never_logged(
    service_env: Table, lambda_context: FakeLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    answer = _call(proxy_event("GET", f"/v1/models/{MARKER}-model"), lambda_context)
    assert answer.status == 404
    assert MARKER in answer.body["error"]["message"]
    assert MARKER not in _logged(caplog)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "patternProperties": {f"^{MARKER}$": {"type": 5}}},
        {"type": "object", "dependentSchemas": {MARKER: {"minimum": "x"}}},
        {"type": "object", "properties": {MARKER: {"type": "nope"}}},
    ],
)
def test_the_names_in_a_refused_schema_are_never_logged(
    schema: dict[str, Any], service_env: Table, lambda_context: FakeLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    body = _completion(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    answer = _call(proxy_event("POST", "/v1/chat/completions", body), lambda_context)
    assert answer.status == 400, answer.body
    assert "not a valid JSON schema" in answer.body["error"]["message"]
    assert MARKER not in _logged(caplog)
