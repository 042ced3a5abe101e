"""Hostile and careless callers at the entry points: what they send may be answered back to them, never logged,
never break JSON; events that are not what a handler takes are answered in the error shape.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from handler.entry import api, worker
from handler.entry import direct as direct_invoke
from handler.entry.runtime import get_service
from handler.usecases import queued_work
from tests.support.apigw import decode, proxy_event
from tests.support.hostile_input import MARKER, logged
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table


def _strict_json(text: str) -> Any:
    """json.loads that refuses Infinity and NaN, as every other JSON parser does."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


BAD_REQUESTS: list[dict[str, Any]] = [
    {"task": f"summarize-{MARKER}", "text": "hello"},
    {"task": "translate", "text": "hello", "target_language": MARKER * 10},
    {"task": "chat", "messages": [{"role": f"admin-{MARKER}", "content": "hi"}]},
    {"task": "summarize", "text": "hello", "style": MARKER},
    {"task": "summarize", "text": "hello", "options": {"temperature": MARKER}},
    {"task": "summarize", "text": MARKER, "options": {"max_tokens": -1}},
    {"task": "summarize", "text": "hello", f"note-{MARKER}": 1},
    {"task": "summarize", "text": "hello", "options": {f"={MARKER}": 1}},
]


@pytest.mark.parametrize("request_body", BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
def test_invalid_requests_are_answered_with_their_values_but_logged_without(
    request_body: dict[str, Any],
    service_env: Table,
    lambda_context: FakeLambdaContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    direct = direct_invoke.lambda_handler(request_body, lambda_context)
    assert direct["error"]["type"] == "InvalidRequest"
    task = str(request_body["task"])
    if task in ("summarize", "translate", "chat"):  # the API's task is its route
        body = {key: value for key, value in request_body.items() if key != "task"}
        through_api = decode(api.lambda_handler(proxy_event("POST", f"/{task}", body), lambda_context))
        assert through_api.status == 422, through_api

    logs = logged(caplog)
    assert "request failed" in logs
    assert MARKER not in logs


def test_a_queued_request_that_fails_is_stored_with_its_error_and_logged_without_the_values(
    service_env: Table, caplog: pytest.LogCaptureFixture
) -> None:
    service = get_service()
    assert service.stored_requests.table is not None
    item_id = "e" * 64
    bad = {"task": "translate", "text": "hello", "target_language": MARKER * 10}
    service.stored_requests.table.items.put_pending(item_id, {"task": "translate", "request": bad})

    outcome = queued_work.process(service, item_id, "worker", time.monotonic() + 60)

    logs = logged(caplog)
    item = service.stored_requests.table.items.get(item_id)
    assert outcome.outcome == "failed"
    assert item is not None
    assert MARKER in (item.error or "")  # the item holds the caller's request anyway
    assert "queued request failed" in logs
    assert MARKER not in logs


@pytest.mark.parametrize("number", ["1e400", "-1e400"])
def test_an_infinite_number_is_answered_in_valid_json(
    number: str, service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    raw = '{"text": "hello", "options": {"temperature": ' + number + "}}"
    result = api.lambda_handler(proxy_event("POST", "/summarize", raw), lambda_context)

    body = _strict_json(result["body"])
    assert result["statusCode"] == 422
    (problem,) = body["error"]["details"]["fields"]
    assert problem["field"] == "options.temperature"
    assert problem["value"] in ("inf", "-inf")

    direct = direct_invoke.lambda_handler(
        {"task": "summarize", "text": "hello", "options": {"temperature": float(number)}}, lambda_context
    )
    assert _strict_json(json.dumps(direct))["error"]["type"] == "InvalidRequest"


# -- repeated headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values", [["respond-async", "respond-async"], ["wait=10", "respond-async"], ["respond-async", "wait=5"]]
)
def test_a_prefer_header_sent_more_than_once_is_read_whole(
    values: list[str], service_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 7230: repeated fields mean their values joined with commas; API Gateway keeps them in multiValueHeaders."""
    monkeypatch.setenv("API_BUDGET_S", "900")
    event = proxy_event("POST", "/chat", {"messages": [{"role": "user", "content": "Say hello."}]})
    event["headers"]["Prefer"] = values[-1]  # API Gateway's single-value map keeps the last one
    event["multiValueHeaders"]["Prefer"] = values

    answer = decode(api.lambda_handler(event, lambda_context))

    assert answer.status == 202, answer
    assert answer.headers["Preference-Applied"] == "respond-async"


# -- events that are not what the handler takes ----------------------------------------------------


@pytest.mark.parametrize("event", [{}, [], None, "x", {"path": "/chat"}, {"httpMethod": "POST"}], ids=repr)
def test_the_api_handler_answers_a_malformed_event_with_400_in_the_error_shape(
    event: Any, service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    answer = decode(api.lambda_handler(event, lambda_context))

    assert answer.status == 400
    assert answer.body["error"]["type"] == "InvalidRequest"
    assert "proxy event" in answer.body["error"]["message"]


@pytest.mark.parametrize(
    "event",
    [[], {}, None, {"Records": "x"}, {"Records": ["x"]}, {"Records": [{"body": "{}"}]}],
    ids=repr,
)
def test_the_worker_answers_a_malformed_event_in_the_error_shape(
    event: Any, service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    answer = worker.worker_handler(event, lambda_context)

    assert answer["error"]["type"] == "InvalidRequest"


@pytest.mark.parametrize("record", [{"messageId": "m-1"}, {"messageId": "m-1", "body": "not json"}], ids=repr)
def test_a_message_without_a_readable_body_is_that_message_s_failure(
    record: dict[str, Any], service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    sqs = {**record, "eventSource": "aws:sqs", "receiptHandle": "r", "attributes": {}, "messageAttributes": {}}

    answer = worker.worker_handler({"Records": [sqs]}, lambda_context)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


@pytest.mark.parametrize(("method", "path"), [("GET", f"/nothing-{MARKER}"), ("DELETE", f"/results/{MARKER}")])
def test_a_path_that_is_no_route_is_answered_with_it_and_logged_without_it(
    method: str, path: str, service_env: Table, lambda_context: FakeLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    answer = decode(api.lambda_handler(proxy_event(method, path), lambda_context))

    assert answer.status in (404, 405)
    assert MARKER in answer.body["error"]["message"]  # the caller sees what it sent
    assert MARKER not in logged(caplog)
