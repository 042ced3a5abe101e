"""Texts longer than the context window, on the tiny model (exact token counts) against moto server:
map-reduce summaries, chunked translations, chunks stored as their own requests, limits."""

from __future__ import annotations

import time
from typing import Any

import pytest

from conftest import FakeLambdaContext, Table
from handler import app, queued
from handler.errors import DeadlineReached
from handler.runtime import get_service
from handler.schemas import MAX_DOCUMENT_TOKENS

#: About 6,200 of the tiny model's tokens in sixteen paragraphs: over its 4,096-token window.
LONG_TEXT = "\n\n".join(
    " ".join(f"Paragraph {p} sentence {s} tells of boosted trees and their features." for s in range(12))
    for p in range(16)
)


def request(task: str = "summarize", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"task": task, "text": LONG_TEXT, "options": {"max_tokens": 12}}
    if task == "translate":
        body["target_language"] = "French"
    return {**body, **changes}


def test_a_summary_of_a_text_over_the_window_is_made_by_map_reduce_and_each_chunk_is_stored(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    answer = app.lambda_handler(request(), lambda_context)

    assert answer["status"] == "DONE", answer
    document = answer["document"]
    assert document["chunks"] >= 5
    assert document["levels"] >= 2
    assert document["steps"][0]["requests"] == document["chunks"]
    assert document["steps"][-1]["requests"] == 1
    assert len(generations) == sum(step["generated"] for step in document["steps"])
    items = {item["id"]: item for item in service_env.items()}
    assert items[answer["id"]]["document"]["chunks"] == document["chunks"]
    # every chunk and summary request is an item of its own, DONE
    assert len(items) == 1 + sum(step["requests"] for step in document["steps"])
    assert all(item["status"] == "DONE" for item in items.values())
    parts = [item for item_id, item in items.items() if item_id != answer["id"]]
    assert answer["metrics"]["completion_tokens"] == sum(item["metrics"]["completion_tokens"] for item in parts)


def test_a_document_asked_again_after_its_result_is_lost_reuses_every_chunk(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    first = app.lambda_handler(request(), lambda_context)
    service_env.client().delete_item(TableName=service_env.name, Key={"id": {"S": first["id"]}})
    generations.clear()

    again = app.lambda_handler(request(), lambda_context)

    assert again["output"] == first["output"]
    assert generations == []  # every chunk and summary came from the table
    assert all(step["generated"] == 0 for step in again["document"]["steps"])


def test_a_translation_over_the_window_is_its_chunks_translations_joined(
    service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    answer = app.lambda_handler(request("translate"), lambda_context)

    assert answer["status"] == "DONE", answer
    assert answer["document"]["levels"] == 1
    assert answer["output"].count("\n\n") >= answer["document"]["chunks"] - 1


def test_a_queued_document_cut_off_by_its_deadline_goes_on_from_the_chunks_done(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, generations: list[int]
) -> None:
    from handler import engine as engine_module

    service = get_service()
    queued.enqueue(service, [(1, request())])
    (item_id,) = [item["id"] for item in service_env.items()]
    original = engine_module.Engine.generate_batch

    finished: list[int] = []

    def first_two_only(self: Any, jobs: Any, *args: Any, **kwargs: Any) -> Any:
        # the invocation's time runs out after two chunks: the rest come back unfinished
        room = max(2 - len(finished), 0)
        done = original(self, jobs[:room], *args, **kwargs) if room else []
        finished.extend(1 for _ in done)
        return done + [None] * (len(jobs) - len(done))

    monkeypatch.setattr(engine_module.Engine, "generate_batch", first_two_only)
    cut = queued.process(service, item_id, "worker-1", time.monotonic() + 600)
    assert cut.outcome == "requeued"
    assert len(generations) == 2
    monkeypatch.setattr(engine_module.Engine, "generate_batch", original)
    generations.clear()

    # WHEN the next run takes it (its chunk items were queued too; the run finishes everything)
    summary = queued.run(service, "worker-2", time.monotonic() + 600)

    item = service.store.get(item_id) if service.store else None
    assert item is not None
    assert item.status == "DONE", item
    assert summary.failed == 0
    chunks = item.document.chunks if item.document else 0
    levels = item.document.steps if item.document else []
    # nothing generated twice: the two chunks done before were read, not generated again
    assert len(generations) == chunks - 2 + sum(step.requests for step in levels[1:])


def test_strategy_single_refuses_a_text_over_the_window(service_env: Table, lambda_context: FakeLambdaContext) -> None:
    answer = app.lambda_handler(request(strategy="single"), lambda_context)

    assert answer["error"]["type"] == "InputTooLong"
    assert service_env.items() == []


def test_a_text_over_the_document_limit_is_refused_naming_it(
    service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    huge = "\n\n".join(" ".join(f"w{p}x{n}" for n in range(1500)) for p in range(20))  # ~100,000+ tokens

    answer = app.lambda_handler({"task": "summarize", "text": huge[:299_000]}, lambda_context)

    assert answer["error"]["type"] == "InputTooLong", answer
    assert str(MAX_DOCUMENT_TOKENS) in answer["error"]["message"]
    assert service_env.items() == []


def test_a_chunked_document_past_its_deadline_answers_deadline_reached_or_queues(
    service_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handler import engine as engine_module

    monkeypatch.setattr(engine_module.Engine, "generate_batch", lambda self, jobs, *a, **k: [None] * len(jobs))
    service = get_service()
    from handler.service import parse_request

    with pytest.raises(DeadlineReached):
        service.generate("f" * 64, parse_request(request()), False, time.monotonic() + 60)


def test_a_document_through_the_api_answers_202_then_its_progress_then_done(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext
) -> None:
    from apigw import decode, proxy_event
    from handler import api
    from handler import engine as engine_module

    service = get_service()
    body = {key: value for key, value in request().items() if key != "task"}
    # Queued, as a document predicted past the API's budget is (asked for here: speeds measured earlier in
    # this process would decide otherwise).
    event = proxy_event("POST", "/summarize", body, headers={"Prefer": "respond-async"})
    posted = decode(api.lambda_handler(event, lambda_context))
    assert posted.status == 202, posted
    item_id = posted.body["id"]
    original = engine_module.Engine.generate_batch
    seen: list[dict[str, Any]] = []

    def reading_progress(self: Any, jobs: Any, *args: Any, **kwargs: Any) -> Any:
        # between rounds, a caller reads the document's state through the API
        event = proxy_event("GET", f"/results/{item_id}", resource="/results/{id}")
        seen.append(decode(api.lambda_handler(event, lambda_context)).body)
        return original(self, jobs, *args, **kwargs)

    monkeypatch.setattr(engine_module.Engine, "generate_batch", reading_progress)
    queued.process(service, item_id, "worker", time.monotonic() + 600)

    running = [answer for answer in seen if answer["status"] == "RUNNING"]
    assert running, seen
    first_level = [answer["progress"] for answer in running if answer["progress"]["level"] == 1]
    assert first_level[0]["done"] == 0
    assert [p["done"] for p in first_level] == sorted(p["done"] for p in first_level)
    assert first_level[-1]["done"] < first_level[-1]["total"]
    done = service.lookup(item_id)
    assert done is not None
    assert done.status == "DONE"
    assert done.progress is None
    final = decode(
        api.lambda_handler(proxy_event("GET", f"/results/{item_id}", resource="/results/{id}"), lambda_context)
    )
    assert final.status == 200
    assert final.body["document"]["chunks"] == first_level[0]["total"]
