"""The API Gateway front in-process, against moto server and the tiny model: every error, in one shape, with its
status (404, 405, 400, 413, 415, 422, 429, 503, 500).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from handler.core.errors import StoreError
from handler.domain.requests import parse_request
from handler.entry import api_request_body
from handler.storage.item_access import ItemAccess
from tests.support.apigw import ApiAnswer, assert_error, get_result, post, proxy_event, sample
from tests.support.events import load_event
from tests.support.local_aws import Table

# -- errors ---------------------------------------------------------------------------------------


def test_api_unknown_result_is_404(api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]) -> None:
    error = assert_error(call(get_result("0" * 64)), 404, "NotFound")
    sample_error = assert_error(call(load_event("api-result.json")), 404, "NotFound")

    assert "0" * 64 in error["message"]
    assert load_event("api-result.json")["pathParameters"]["id"] in sample_error["message"]


def test_api_malformed_result_id_is_422_naming_it(api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]) -> None:
    error = assert_error(call(get_result("ABC")), 422, "InvalidRequest")

    assert error["message"].startswith("id: String should match pattern")
    assert error["details"]["fields"] == [
        {"field": "id", "problem": "String should match pattern '^[0-9a-f]{64}$'", "value": "ABC"}
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/index.html"),
        ("POST", "/summarise"),
        ("GET", "/results"),
        ("GET", "/results/a/b"),
        ("GET", "/results/\x07"),
        ("POST", "/summarize/x"),
    ],
)
def test_api_unknown_route_is_404(
    method: str, path: str, api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    error = assert_error(call(proxy_event(method, path, {} if method == "POST" else None)), 404, "NotFound")

    assert path in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/summarize", "POST"),
        ("PUT", "/chat", "POST"),
        ("OPTIONS", "/translate", "POST"),
        ("DELETE", "/results/" + "0" * 64, "GET"),
        ("POST", "/results/" + "0" * 64, "GET"),
    ],
)
def test_api_wrong_method_on_a_known_path_is_405_with_allow(
    method: str, path: str, allowed: str, api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    answer = call(proxy_event(method, path))

    error = assert_error(answer, 405, "MethodNotAllowed")
    assert answer.headers["Allow"] == allowed
    assert error["details"] == {"allowed": [allowed]}


@pytest.mark.parametrize(
    ("body", "base64_body", "expected"),
    [
        pytest.param("{", False, "Expecting property name", id="truncated"),
        pytest.param('{"text": "a",}', False, "line 1 column 14", id="trailing-comma"),
        pytest.param("", False, "empty", id="empty"),
        pytest.param("   ", False, "empty", id="blank"),
        pytest.param('{"text": "a", "options": {"temperature": NaN}}', False, "NaN", id="nan"),
        pytest.param(b'{"text": "\xff"}', True, "not UTF-8", id="not-utf8"),
        pytest.param('{"text": "\\ud800"}', False, "surrogate", id="lone-surrogate"),
        pytest.param("[" * 100_000 + "]" * 100_000, False, "nested too deeply", id="deep"),
        pytest.param('{"options": {"seed": ' + "9" * 5000 + "}}", False, "number too long", id="long-number"),
    ],
)
def test_api_malformed_json_is_400(
    body: str | bytes,
    base64_body: bool,
    expected: str,
    api_env: Table,
    call: Callable[[dict[str, Any]], ApiAnswer],
    generations: list[int],
) -> None:
    error = assert_error(call(post("summarize", body, base64_body=base64_body)), 400, "MalformedJson")

    assert expected in error["message"]
    assert api_env.items() == []
    assert generations == []


def test_api_invalid_base64_body_is_400(api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]) -> None:
    event = post("summarize", "{}")
    event.update(body="not base64!", isBase64Encoded=True)

    error = assert_error(call(event), 400, "MalformedJson")

    assert "base64" in error["message"]


def test_api_body_over_the_limit_is_413_before_parsing(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    body = "{" + " " * api_request_body.MAX_BODY_BYTES + "}"  # valid JSON: refused for its size alone

    error = assert_error(call(post("summarize", body, content_type="text/plain")), 413, "PayloadTooLarge")

    limit = api_request_body.MAX_BODY_BYTES
    assert error["details"] == {"size_bytes": limit + 2, "limit_bytes": limit}


def test_api_largest_body_fits_an_item_and_is_refused_only_for_its_tokens(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    # Three-byte characters sent as UTF-8: the stored request is as large as the body.
    content = "あ" * ((api_request_body.MAX_BODY_BYTES - 200) // 9)
    body = {"messages": [{"role": "user", "content": content}] * 3, "mode": "async"}
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    assert api_request_body.MAX_BODY_BYTES - 2048 < len(raw) <= api_request_body.MAX_BODY_BYTES

    answer = call(post("chat", raw))

    # Storable (the body limit keeps every API request within an item) but counted before it is queued.
    assert parse_request({"task": "chat", **body}).options.store
    error = assert_error(answer, 413, "InputTooLong")
    assert error["details"]["prompt_tokens"] > error["details"]["context_window"]
    assert api_env.items() == []


def test_api_text_too_long_for_the_model_is_413_with_token_counts(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], generations: list[int]
) -> None:
    body = {"text": "tokens " * 6000, "strategy": "single"}  # auto would answer it chunk by chunk
    error = assert_error(call(post("summarize", body)), 413, "InputTooLong")

    assert error["details"]["prompt_tokens"] > 4096
    assert error["details"]["max_tokens"] == 512
    assert error["details"]["context_window"] == 4096
    assert api_env.items() == []
    assert generations == []


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/json; charset=latin-1",
    ],
)
def test_api_body_not_declared_json_is_415(
    content_type: str | None, api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    error = assert_error(
        call(post("summarize", sample("summarize"), content_type=content_type)), 415, "UnsupportedMediaType"
    )

    assert "application/json" in error["message"] or "UTF-8" in error["message"]
    assert api_env.items() == []


@pytest.mark.parametrize("content_type", ["application/json; charset=UTF-8", "Application/JSON", "application/json;"])
def test_api_json_content_type_variants_are_accepted(
    content_type: str, api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    answer = call(post("summarize", sample("summarize"), content_type=content_type))

    assert answer.status == 200, answer


@pytest.mark.parametrize(
    ("route", "body", "expected"),
    [
        ("summarize", {}, ["text: Field required"]),
        ("summarize", {"text": ""}, ["text: String should have at least 1 character (got '')"]),
        ("summarize", {"text": "   "}, ["text: Value error, must not be empty or only whitespace (got '   ')"]),
        ("summarize", {"text": ["a"]}, ["text: Input should be a valid string"]),
        ("summarize", {"text": "x", "tone": "dry"}, ["tone: Extra inputs are not permitted"]),
        (
            "summarize",
            {"text": "x", "style": "haiku"},
            ["style: Input should be 'bullets' or 'paragraph' (got 'haiku')"],
        ),
        ("translate", {"text": "x", "target_language": ""}, ["target_language: String should have at least 1"]),
        ("chat", {"messages": [{"role": "system", "content": "hi"}]}, ["role 'user'"]),
        ("chat", {"messages": [{"role": "bot", "content": ""}]}, ["messages.0.role: Input", "messages.0.content"]),
        (
            "summarize",
            {"text": "x", "options": {"max_tokens": 0, "temperature": "hot"}},
            ["options.max_tokens: Input should be greater than or equal to 1 (got 0)", "options.temperature"],
        ),
        ("summarize", {"text": "x", "options": {"max_tokens": 5000}}, ["options.max_tokens: Input should be less"]),
        ("summarize", {"text": "x", "mode": "later"}, ["mode: Input should be 'sync' or 'async'"]),
        ("summarize", [], ["body: Input should be a valid dictionary"]),
        ("summarize", "null", ["body: Field required"]),
    ],
)
def test_api_invalid_fields_are_422_naming_each(
    route: str,
    body: Any,
    expected: list[str],
    api_env: Table,
    call: Callable[[dict[str, Any]], ApiAnswer],
    generations: list[int],
) -> None:
    error = assert_error(call(post(route, body)), 422, "InvalidRequest")

    for phrase in expected:
        assert phrase in error["message"], error["message"]
    assert len(error["details"]["fields"]) == len(expected)
    assert api_env.items() == []
    assert generations == []


def test_api_throttled_table_is_429_with_retry_after(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], monkeypatch: pytest.MonkeyPatch
) -> None:
    def throttled(self: ItemAccess, item_id: str) -> None:
        raise StoreError("cannot read result: ProvisionedThroughputExceededException", throttled=True)

    monkeypatch.setattr(ItemAccess, "get", throttled)

    answer = call(post("summarize", sample("summarize")))

    error = assert_error(answer, 429, "StoreError")
    assert error["details"] == {"throttled": True}
    assert int(answer.headers["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("variable", "value", "error_type"),
    [("TABLE_NAME", "no-such-table", "StoreError"), ("MODEL_PATH", None, "ConfigurationError")],
)
def test_api_service_side_failures_are_503(
    variable: str,
    value: str | None,
    error_type: str,
    api_env: Table,
    call: Callable[[dict[str, Any]], ApiAnswer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)

    assert_error(call(post("summarize", sample("summarize"))), 503, error_type)
    assert_error(call(get_result("0" * 64)), 503, error_type)


def test_api_missing_model_is_503_for_a_request_that_must_generate(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], no_model: None
) -> None:
    error = assert_error(call(post("summarize", sample("summarize"))), 503, "ModelLoadError")

    assert "must not load" in error["message"]


def test_api_without_a_table_cannot_queue_or_read_results(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TABLE_NAME")

    assert_error(call(post("summarize", sample("summarize", mode="async"))), 503, "DeadlineReached")
    assert_error(call(get_result("0" * 64)), 503, "ConfigurationError")
    assert call(post("summarize", sample("summarize"))).body["stored"] is False


def test_api_unexpected_failure_is_500_without_details(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, request: Any) -> str:
        raise RuntimeError("secret internals /var/task/handler")

    monkeypatch.setattr("handler.usecases.text_service.TextService.request_id", broken)

    answer = call(post("summarize", sample("summarize")))

    error = assert_error(answer, 500, "InternalError")
    assert set(error) == {"type", "message"}
    assert "secret" not in error["message"]
