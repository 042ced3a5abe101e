"""The handler in-process against moto server and the tiny model: storing, caching, errors."""

from __future__ import annotations

from typing import Any

import pytest

from handler.entry.direct import lambda_handler
from tests.support.events import BAD_EVENTS, load_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table


def _small(event: dict[str, Any], max_tokens: int = 16) -> dict[str, Any]:
    return {**event, "options": {**event.get("options", {}), "max_tokens": max_tokens}}


@pytest.mark.parametrize("name", ["summarize.json", "translate.json", "chat-solve.json"])
def test_handler_answers_event_and_stores_item(
    name: str, service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    answer = lambda_handler(_small(load_event(name)), lambda_context)

    assert "error" not in answer, answer
    assert answer["task"] == load_event(name)["task"]
    assert answer["status"] == "DONE"
    assert answer["cached"] is False
    assert answer["stored"] is True
    assert isinstance(answer["output"], str)
    assert answer["finish_reason"] in {"stop", "length"}
    assert answer["model"]["context_length"] == 4096
    metrics = answer["metrics"]
    for name_ in ("prompt_tokens", "prompt_ms", "prompt_tokens_per_s", "completion_tokens", "eval_ms"):
        assert metrics[name_] > 0, name_
    assert metrics["eval_tokens_per_s"] > 0
    assert metrics["n_threads"] == 2
    assert metrics["peak_rss_mb"] > 0
    (item,) = service_env.items()
    assert item["id"] == answer["id"]
    assert item["status"] == "DONE"
    assert item["output"] == answer["output"]
    assert item["request"]["task"] == answer["task"]
    assert item["model"]["sha256"] == answer["model"]["sha256"]
    assert item["metrics"]["completion_tokens"] == metrics["completion_tokens"]
    assert item["created_at"]
    assert item["updated_at"]
    assert generations == [1]


def test_handler_second_identical_request_is_cached_without_generation(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    event = _small(load_event("summarize.json"))

    first = lambda_handler(event, lambda_context)
    second = lambda_handler(event, lambda_context)

    assert (first["cached"], second["cached"]) == (False, True)
    assert second["id"] == first["id"]
    assert second["output"] == first["output"]
    assert second["metrics"] == first["metrics"]
    assert len(generations) == 1
    assert len(service_env.items()) == 1


def test_handler_store_false_answers_without_storing(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    event = _small(load_event("summarize.json"))
    event["options"]["store"] = False

    answer = lambda_handler(event, lambda_context)

    assert answer["stored"] is False
    assert answer["output"] is not None
    assert service_env.items() == []


@pytest.mark.parametrize(("event", "expected"), BAD_EVENTS)
def test_handler_bad_input_is_a_clear_error_and_stores_nothing(
    event: dict[str, Any], expected: str, service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    answer = lambda_handler(event, lambda_context)

    assert answer["error"]["type"] == "InvalidRequest"
    assert expected in answer["error"]["message"]
    assert "Traceback" not in answer["error"]["message"]
    assert service_env.items() == []
    assert generations == []


def test_handler_input_longer_than_context_says_tokens_and_limit(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    answer = lambda_handler({"task": "summarize", "text": "tokens " * 6000, "strategy": "single"}, lambda_context)

    error = answer["error"]
    assert error["type"] == "InputTooLong"
    assert "context window of 4096" in error["message"]
    assert error["details"]["prompt_tokens"] > 4096
    assert error["details"]["context_window"] == 4096
    assert service_env.items() == []
    assert generations == []


def test_a_result_stored_between_the_lookup_and_the_claim_is_answered_not_generated_again(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a request whose DONE item another writer stores just after this invocation looked it up
    from handler.entry.runtime import get_service

    event = _small(load_event("translate.json"))
    first = lambda_handler(event, lambda_context)
    service_env.client().update_item(
        TableName=service_env.name,
        Key={"id": {"S": first["id"]}},
        UpdateExpression="SET #o = :o",
        ExpressionAttributeNames={"#o": "output"},
        ExpressionAttributeValues={":o": {"S": "the other writer's text"}},
    )
    store = get_service().stored_requests.table
    assert store is not None
    real_get = store.items.get
    reads: list[str] = []

    def get_missing_first(item_id: str) -> Any:
        reads.append(item_id)  # the first read misses: the other writer had not finished yet
        return None if len(reads) == 1 else real_get(item_id)

    monkeypatch.setattr(store.items, "get", get_missing_first)

    # WHEN the same request comes again
    second = lambda_handler(event, lambda_context)

    # THEN the claim finds the stored result: it is returned, neither generated again nor overwritten
    assert len(generations) == 1
    assert second["output"] == "the other writer's text"
    assert second["cached"] is True
    (item,) = service_env.items()
    assert item["output"] == "the other writer's text"


def test_handler_missing_table_is_a_store_error_not_a_traceback(
    service_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABLE_NAME", "no-such-table")

    answer = lambda_handler(_small(load_event("summarize.json")), lambda_context)

    assert answer["error"]["type"] == "StoreError"
    assert "no-such-table" in answer["error"]["message"]


def test_handler_missing_model_setting_is_a_configuration_error(
    service_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODEL_PATH")

    answer = lambda_handler(_small(load_event("summarize.json")), lambda_context)

    assert answer["error"] == {"type": "ConfigurationError", "message": answer["error"]["message"]}
    assert "MODEL_PATH" in answer["error"]["message"]
