"""The API Gateway front in-process, against moto server and the tiny model: every route and every error."""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apigw import ApiAnswer, decode, proxy_event
from conftest import FakeLambdaContext, Table, load_event
from handler import engine as engine_module
from handler.core.errors import ModelLoadError, StoreError
from handler.entry import api, api_openai, api_resolver, api_rules
from handler.formats.schemas import parse_request
from handler.storage.table import ResultStore
from handler.usecases.answer import TextService

ROUTES = ["summarize", "translate", "chat"]
SAMPLES = {"summarize": "api-summarize.json", "translate": "api-translate.json", "chat": "api-chat.json"}


@pytest.fixture
def api_env(service_env: Table, monkeypatch: pytest.MonkeyPatch) -> Table:
    """The service environment, where a request fits the API budget (whatever speeds this process measured)."""
    monkeypatch.setenv("EXPECTED_PROMPT_TOKENS_PER_S", "5000")
    monkeypatch.setenv("EXPECTED_EVAL_TOKENS_PER_S", "5000")
    monkeypatch.setenv("EXPECTED_LOAD_S", "1")
    monkeypatch.setenv("API_BUDGET_S", "900")
    return service_env


@pytest.fixture
def call(lambda_context: FakeLambdaContext) -> Callable[[dict[str, Any]], ApiAnswer]:
    """Invokes the API's Lambda entry point with a proxy event."""

    def invoke(event: dict[str, Any]) -> ApiAnswer:
        return decode(api.lambda_handler(event, lambda_context))

    return invoke


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process has no model loaded, and loading one fails."""

    def refuse(settings: Any) -> Any:
        raise ModelLoadError("the model must not load in this test")

    monkeypatch.setattr(engine_module, "_engine", None)
    monkeypatch.setattr(engine_module, "load_engine", refuse)


def sample(route: str, max_tokens: int = 16, **changes: Any) -> dict[str, Any]:
    """The body of a sample API event, with few tokens to generate.

    Summaries are paragraphs here: the engine's KV cache is process-wide, and test_service's first request
    (the bullet summary) must not find its whole prompt cached by this module.
    """
    body: dict[str, Any] = json.loads(load_event(SAMPLES[route])["body"])
    body["options"] = {**body.get("options", {}), "max_tokens": max_tokens}
    if route == "summarize":
        body["style"] = "paragraph"
    return {**body, **changes}


def post(route: str, body: Any, **kwargs: Any) -> dict[str, Any]:
    return proxy_event("POST", f"/{route}", body, **kwargs)


def get_result(item_id: str) -> dict[str, Any]:
    return proxy_event("GET", f"/results/{item_id}", resource="/results/{id}")


def assert_error(answer: ApiAnswer, status: int, error_type: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert set(answer.body) == {"error"}, answer.body
    assert answer.error["type"] == error_type, answer.error
    assert answer.headers["Content-Type"] == "application/json"
    assert "Traceback" not in json.dumps(answer.body)
    return answer.error


# -- answers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_api_post_generates_within_budget_and_stores(
    route: str, api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], generations: list[int]
) -> None:
    answer = call(post(route, sample(route)))

    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.body["task"] == route
    assert answer.body["status"] == "DONE"
    assert (answer.body["cached"], answer.body["stored"]) == (False, True)
    assert isinstance(answer.body["output"], str)
    assert answer.body["metrics"]["completion_tokens"] > 0
    assert "Location" not in answer.headers
    (item,) = api_env.items()
    assert item["id"] == answer.body["id"]
    assert item["request"]["task"] == route
    assert generations == [1]


def test_api_cache_miss_reads_the_table_once(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One consistent read decides cached / queued / generate; storing the result needs no other read."""
    reads: list[str] = []
    original = ResultStore.get

    def counted(self: ResultStore, item_id: str) -> Any:
        reads.append(item_id)
        return original(self, item_id)

    monkeypatch.setattr(ResultStore, "get", counted)

    generated = call(post("chat", sample("chat", max_tokens=4)))
    assert generated.body["status"] == "DONE"
    assert reads == [generated.body["id"]]

    reads.clear()
    queued = call(post("chat", sample("chat", max_tokens=5), headers={"Prefer": "respond-async"}))
    assert queued.status == 202
    assert reads == [queued.body["id"]]

    reads.clear()
    cached = call(post("chat", sample("chat", max_tokens=4)))
    assert cached.body["cached"] is True
    assert reads == [generated.body["id"]]


def test_api_sample_events_are_the_direct_invoke_samples_without_task() -> None:
    for route, name in SAMPLES.items():
        direct = load_event("chat-solve.json" if route == "chat" else f"{route}.json")
        event = load_event(name)

        assert json.loads(event["body"]) == {key: value for key, value in direct.items() if key != "task"}
        assert (event["httpMethod"], event["path"], event["resource"]) == ("POST", f"/{route}", f"/{route}")
        assert event["headers"]["Content-Type"] == "application/json"


def test_api_request_id_is_the_direct_invoke_id(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], lambda_context: FakeLambdaContext
) -> None:
    from handler.entry.direct import lambda_handler as direct_handler

    body = sample("translate")

    via_api = call(post("translate", body))
    direct = direct_handler({"task": "translate", **body}, lambda_context)

    assert direct["id"] == via_api.body["id"]
    assert direct["cached"] is True


def test_api_body_may_name_its_own_task_but_not_another(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    same = call(post("summarize", sample("summarize", task="summarize")))
    other = call(post("summarize", sample("summarize", task="chat")))

    assert same.status == 200
    error = assert_error(other, 422, "InvalidRequest")
    assert "task: Input should be 'summarize' (got 'chat')" in error["message"]


def test_api_done_result_is_cached_without_loading_the_model(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a request answered once
    first = call(post("summarize", sample("summarize")))
    # AND a process without the model, where loading it fails
    monkeypatch.setattr(engine_module, "_engine", None)
    monkeypatch.setattr(engine_module, "load_engine", lambda settings: pytest.fail("the model was loaded"))

    # WHEN the same request comes again
    again = call(post("summarize", sample("summarize")))

    # THEN it is answered from the table
    assert again.status == 200
    assert again.body["cached"] is True
    assert {k: v for k, v in again.body.items() if k != "cached"} == {
        k: v for k, v in first.body.items() if k != "cached"
    }


def test_api_async_mode_answers_202_with_location_and_queues(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], generations: list[int]
) -> None:
    answer = call(post("chat", sample("chat", mode="async")))

    assert answer.status == 202
    assert answer.body["status"] == "PENDING"
    assert answer.body["stored"] is True
    # execute-api URLs carry the stage before the route
    assert answer.headers["Location"] == f"/prod/results/{answer.body['id']}"
    assert "Preference-Applied" not in answer.headers
    (item,) = api_env.items()
    assert (item["id"], item["status"]) == (answer.body["id"], "PENDING")
    assert generations == []


def test_api_prefer_respond_async_answers_202(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], generations: list[int]
) -> None:
    event = post("translate", sample("translate"), headers={"Prefer": "wait=10, respond-async"})

    answer = call(event)

    assert answer.status == 202
    assert answer.headers["Preference-Applied"] == "respond-async"
    assert answer.body["status"] == "PENDING"
    assert generations == []


def test_api_location_without_stage_prefix_is_the_route(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    event = post("chat", sample("chat", mode="async"))
    event["requestContext"]["path"] = "/chat"  # a custom domain without a base path

    answer = call(event)

    assert answer.headers["Location"] == f"/results/{answer.body['id']}"


def test_api_request_predicted_beyond_budget_answers_202(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], generations: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a request predicted to need a minute, against the API's 29 s budget
    monkeypatch.setenv("API_BUDGET_S", "29")
    monkeypatch.setattr(TextService, "predicted_seconds", lambda self, request, steps=False, planned=None: 60.0)

    answer = call(post("summarize", sample("summarize", max_tokens=512)))

    assert answer.status == 202
    assert answer.body["status"] == "PENDING"
    assert generations == []


def test_api_generation_overtaken_by_its_deadline_answers_202(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], generations: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a request predicted to fit, whose generation runs into its deadline (moved to now)
    original = TextService.generate

    def slower_than_predicted(
        self: TextService, item_id: str, request: Any, cold_start: bool, deadline: Any, **planned: Any
    ) -> Any:
        return original(self, item_id, request, cold_start, time.monotonic(), **planned)

    monkeypatch.setattr(TextService, "generate", slower_than_predicted)

    # WHEN it is asked for
    answer = call(post("chat", sample("chat", max_tokens=400)))

    # THEN generation started, stopped at the deadline, and the request was queued
    assert generations == [1]
    assert answer.status == 202
    assert answer.body["status"] == "PENDING"
    assert answer.headers["Location"].endswith(answer.body["id"])
    (item,) = api_env.items()
    assert item["status"] == "PENDING"


def test_api_get_result_answers_each_status(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer], no_model: None
) -> None:
    ids = {status: letter * 64 for status, letter in zip(("PENDING", "RUNNING", "DONE", "FAILED"), "abcd", strict=True)}
    store = ResultStore(api_env.name)
    for status in ("PENDING", "RUNNING", "FAILED"):
        store.put_pending(ids[status], {"task": "summarize", "request": {}})
    store.claim(ids["RUNNING"], "owner", 60)
    store.claim(ids["FAILED"], "owner", 60)
    store.release(ids["FAILED"], "owner", "llama_decode failed", max_attempts=1)
    store.claim_to_generate(ids["DONE"], "owner", 60, {"task": "chat", "request": {}})
    store.complete(ids["DONE"], "owner", {"output": "x = -1.2, y = -6.6", "finish_reason": "stop"})

    answers = {status: call(get_result(item_id)) for status, item_id in ids.items()}

    for status, answer in answers.items():
        assert answer.status == 200, answer
        assert answer.body["status"] == status
        assert answer.body["stored"] is True
    assert answers["FAILED"].body["last_error"] == "llama_decode failed"
    assert answers["DONE"].body["output"] == "x = -1.2, y = -6.6"
    assert answers["DONE"].body["cached"] is True


def test_api_queued_request_is_readable_at_its_location(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    queued = call(post("summarize", sample("summarize", mode="async")))
    path = queued.headers["Location"].removeprefix("/prod")

    answer = call(proxy_event("GET", path, resource="/results/{id}"))

    assert answer.status == 200
    assert answer.body["id"] == queued.body["id"]
    assert answer.body["status"] == "PENDING"


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
        ("GET", "/"),
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
    body = "{" + " " * api_rules.MAX_BODY_BYTES + "}"  # valid JSON: refused for its size alone

    error = assert_error(call(post("summarize", body, content_type="text/plain")), 413, "PayloadTooLarge")

    assert error["details"] == {"size_bytes": api_rules.MAX_BODY_BYTES + 2, "limit_bytes": api_rules.MAX_BODY_BYTES}


def test_api_largest_body_fits_an_item_and_is_refused_only_for_its_tokens(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    # Three-byte characters sent as UTF-8: the stored request is as large as the body.
    content = "あ" * ((api_rules.MAX_BODY_BYTES - 200) // 9)
    body = {"messages": [{"role": "user", "content": content}] * 3, "mode": "async"}
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8")
    assert api_rules.MAX_BODY_BYTES - 2048 < len(raw) <= api_rules.MAX_BODY_BYTES

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
    def throttled(self: ResultStore, item_id: str) -> None:
        raise StoreError("cannot read result: ProvisionedThroughputExceededException", throttled=True)

    monkeypatch.setattr(ResultStore, "get", throttled)

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

    monkeypatch.setattr("handler.usecases.answer.TextService.request_id", broken)

    answer = call(post("summarize", sample("summarize")))

    error = assert_error(answer, 500, "InternalError")
    assert set(error) == {"type", "message"}
    assert "secret" not in error["message"]


@pytest.fixture
def cors_origin(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API module as loaded where CORS_ORIGIN names a browser origin (the resolver reads it at import)."""
    origin = "https://app.example.com"
    monkeypatch.setenv("CORS_ORIGIN", f"{origin}, https://staging.example.com")
    _reload_api()
    yield origin
    monkeypatch.delenv("CORS_ORIGIN")
    _reload_api()


def _reload_api() -> None:
    # The resolver is built at import, then the route modules register on it.
    for module in (api_resolver, api_openai, api):
        importlib.reload(module)


def test_api_cors_origin_gets_preflight_and_headers(
    cors_origin: str, api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    preflight = call(
        proxy_event("OPTIONS", "/summarize", headers={"Origin": cors_origin, "Access-Control-Request-Method": "POST"})
    )
    answer = call(post("summarize", sample("summarize", mode="async"), headers={"Origin": cors_origin}))
    refused = call(post("summarize", {}, headers={"Origin": cors_origin}))
    stranger = call(post("summarize", sample("summarize", mode="async"), headers={"Origin": "https://evil.example"}))

    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == cors_origin
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Prefer" in preflight.headers["Access-Control-Allow-Headers"]
    assert answer.status == 202
    assert answer.headers["Access-Control-Allow-Origin"] == cors_origin
    assert "Location" in answer.headers["Access-Control-Expose-Headers"]
    assert (refused.status, refused.headers["Access-Control-Allow-Origin"]) == (422, cors_origin)
    assert "Access-Control-Allow-Origin" not in stranger.headers


def test_api_without_cors_origin_sends_no_cors_headers(
    api_env: Table, call: Callable[[dict[str, Any]], ApiAnswer]
) -> None:
    origin = {"Origin": "https://app.example.com"}

    preflight = call(proxy_event("OPTIONS", "/summarize", headers=origin))
    answer = call(post("summarize", sample("summarize", mode="async"), headers=origin))

    assert preflight.status == 405
    assert not [name for name in answer.headers if name.startswith("Access-Control-")]
