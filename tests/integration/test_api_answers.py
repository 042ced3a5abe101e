"""The API Gateway front in-process, against moto server and the tiny model: answers within the budget, cached
results, asynchronous requests (202 and their location) and results read back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from handler import engine as engine_module
from handler.storage.item_access import ItemAccess
from handler.storage.result_store import ResultStore
from handler.usecases.text_service import TextService
from tests.support.apigw import ROUTES, SAMPLES, ApiAnswer, assert_error, get_result, post, proxy_event, sample
from tests.support.events import load_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

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
    original = ItemAccess.get

    def counted(self: ItemAccess, item_id: str) -> Any:
        reads.append(item_id)
        return original(self, item_id)

    monkeypatch.setattr(ItemAccess, "get", counted)

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
    monkeypatch.setattr(engine_module.process_engine, "engine", None)
    monkeypatch.setattr(engine_module.process_engine, "load", lambda settings: pytest.fail("the model was loaded"))

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
    monkeypatch.setattr(TextService, "predicted_seconds", lambda self, request, steps=False, prepared=None: 60.0)

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
        store.items.put_pending(ids[status], {"task": "summarize", "request": {}})
    store.leases.claim_queued(ids["RUNNING"], "owner", 60)
    store.leases.claim_queued(ids["FAILED"], "owner", 60)
    store.leases.release(ids["FAILED"], "owner", "llama_decode failed", max_attempts=1)
    store.leases.claim_or_create(ids["DONE"], "owner", 60, {"task": "chat", "request": {}})
    store.leases.complete(ids["DONE"], "owner", {"output": "x = -1.2, y = -6.6", "finish_reason": "stop"})

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
