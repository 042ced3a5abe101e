"""Texts longer than the context window, on the tiny model (exact token counts) against moto server:
map-reduce summaries, chunked translations, chunks stored as their own requests, limits."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from handler.core.errors import DeadlineReached
from handler.domain.requests import MAX_DOCUMENT_TOKENS, SummarizeRequest
from handler.entry import direct, worker
from handler.entry.runtime import get_service
from handler.usecases import queued_work, queueing
from handler.usecases.preparation import Document
from tests.support import sqs as sqs_helpers
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

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
    answer = direct.lambda_handler(request(), lambda_context)

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
    first = direct.lambda_handler(request(), lambda_context)
    service_env.client().delete_item(TableName=service_env.name, Key={"id": {"S": first["id"]}})
    generations.clear()

    again = direct.lambda_handler(request(), lambda_context)

    assert again["output"] == first["output"]
    assert generations == []  # every chunk and summary came from the table
    assert all(step["generated"] == 0 for step in again["document"]["steps"])


def test_a_translation_over_the_window_is_its_chunks_translations_joined(
    service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    answer = direct.lambda_handler(request("translate"), lambda_context)

    assert answer["status"] == "DONE", answer
    assert answer["document"]["levels"] == 1
    assert answer["output"].count("\n\n") >= answer["document"]["chunks"] - 1


def test_a_queued_document_cut_off_by_its_deadline_goes_on_from_the_chunks_done(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, generations: list[int]
) -> None:
    from handler import engine as engine_module

    service = get_service()
    queueing.queue_requests(service, [(1, request())])
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
    cut = queued_work.process(service, item_id, "worker-1", time.monotonic() + 600)
    assert cut.outcome == "requeued"
    assert len(generations) == 2
    monkeypatch.setattr(engine_module.Engine, "generate_batch", original)
    generations.clear()

    # WHEN the next run takes it (its chunk items were queued too; the run finishes everything)
    summary = queued_work.run(service, "worker-2", time.monotonic() + 600)

    item = service.stored_requests.table.items.get(item_id) if service.stored_requests.table else None
    assert item is not None
    assert item.status == "DONE", item
    assert summary.failed == 0
    chunks = item.document.chunks if item.document else 0
    levels = item.document.steps if item.document else []
    # nothing generated twice: the two chunks done before were read, not generated again
    assert len(generations) == chunks - 2 + sum(step.requests for step in levels[1:])


def test_strategy_single_refuses_a_text_over_the_window(service_env: Table, lambda_context: FakeLambdaContext) -> None:
    answer = direct.lambda_handler(request(strategy="single"), lambda_context)

    assert answer["error"]["type"] == "InputTooLong"
    assert service_env.items() == []


def test_a_text_over_the_document_limit_is_refused_naming_it(
    service_env: Table, lambda_context: FakeLambdaContext
) -> None:
    huge = "\n\n".join(" ".join(f"w{p}x{n}" for n in range(1500)) for p in range(20))  # ~100,000+ tokens

    answer = direct.lambda_handler({"task": "summarize", "text": huge[:299_000]}, lambda_context)

    assert answer["error"]["type"] == "InputTooLong", answer
    assert str(MAX_DOCUMENT_TOKENS) in answer["error"]["message"]
    assert service_env.items() == []


def test_a_chunked_document_past_its_deadline_answers_deadline_reached_or_queues(
    service_env: Table, lambda_context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handler import engine as engine_module

    monkeypatch.setattr(engine_module.Engine, "generate_batch", lambda self, jobs, *a, **k: [None] * len(jobs))
    service = get_service()
    from handler.domain.requests import parse_request

    with pytest.raises(DeadlineReached):
        service.generate("f" * 64, parse_request(request()), False, time.monotonic() + 60)


def test_a_document_through_the_api_answers_202_then_its_progress_then_done(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext
) -> None:
    from handler import engine as engine_module
    from handler.entry import api
    from tests.support.apigw import decode, proxy_event

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
    queued_work.process(service, item_id, "worker", time.monotonic() + 600)

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


# -- fan-out: a queued document's chunk requests go to the workers through the queue ---------------------


def _work_queue(table: Table, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """A moto SQS queue set as the work queue of the service under test."""
    client = sqs_helpers.client(table.endpoint_url)
    queue_url = client.create_queue(QueueName=f"work-{table.name}")["QueueUrl"]
    monkeypatch.setenv("WORK_QUEUE_URL", queue_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", table.endpoint_url)
    return client, queue_url


def _taken_ids(client: Any, queue_url: str) -> list[str]:
    """The ids of every work message now on the queue, taken off it."""
    return sqs_helpers.ids(sqs_helpers.drain(client, queue_url))


def _chunk_requests(service: Any) -> list[Document]:
    """The chunk requests of ``request()``'s text, as the document is split."""
    from handler.domain.requests import parse_request
    from handler.usecases import preparation

    engine, _ = service.engine()
    document = parse_request(request())
    assert isinstance(document, SummarizeRequest)
    return preparation.split(engine, document, LONG_TEXT)


def test_a_queued_document_fans_its_chunks_out_and_the_last_one_queues_the_reduce_exactly_once(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    # GIVEN a queued document of more chunks than one batch, and a work queue
    sqs, queue_url = _work_queue(service_env, monkeypatch)
    service = get_service()
    queueing.queue_requests(service, [(1, request())])
    (document_id,) = _taken_ids(sqs, queue_url)

    # WHEN an invocation takes it
    outcome = queued_work.process(service, document_id, "scheduler", time.monotonic() + 600)

    # THEN it generates nothing itself: each chunk request is queued for the workers, once
    assert outcome.outcome == "waiting"
    assert generations == []
    document = service_env.items()
    parent = next(item for item in document if item["id"] == document_id)
    chunk_ids = _taken_ids(sqs, queue_url)
    assert len(chunk_ids) == len(set(chunk_ids)) == len(parent["chunks_left"]) > 4
    assert set(chunk_ids) == parent["chunks_left"]
    assert parent["status"] == "RUNNING"
    assert parent["progress"] == {"level": 1, "done": 0, "total": len(chunk_ids)}
    waiting = service.lookup(document_id)
    assert waiting is not None
    assert waiting.progress is not None
    assert waiting.progress.total == len(chunk_ids)

    # WHEN workers take the chunk requests, three to an invocation (the queue's batches)
    done_before: list[int] = []
    requeued: list[list[str]] = []
    for start in range(0, len(chunk_ids), 3):
        event = sqs_helpers.event_for(chunk_ids[start : start + 3])
        assert worker.worker_handler(event, lambda_context) == {"batchItemFailures": []}
        progress = service.lookup(document_id)
        assert progress is not None
        if progress.progress is not None:
            done_before.append(progress.progress.done)
        requeued.append(_taken_ids(sqs, queue_url))

    # THEN progress counted each chunk, and the document was queued again once: after the last chunk
    assert done_before == sorted(done_before)
    assert done_before[0] == 3
    assert requeued[:-1] == [[]] * (len(requeued) - 1)
    assert requeued[-1] == [document_id]
    assert len(generations) == len(chunk_ids)

    # WHEN a worker takes the document again
    event = sqs_helpers.event_for([document_id])
    assert worker.worker_handler(event, lambda_context) == {"batchItemFailures": []}

    # THEN it reads its chunks from the table and makes the reduce step: DONE, nothing generated twice
    finished = service.lookup(document_id)
    assert finished is not None
    assert finished.status == "DONE", finished
    assert finished.document is not None
    assert finished.document.chunks == len(chunk_ids)
    assert finished.document.steps[0].generated == len(chunk_ids)
    reduce_requests = sum(step.requests for step in finished.document.steps[1:])
    assert len(generations) == len(chunk_ids) + reduce_requests
    assert sqs_helpers.drain(sqs, queue_url) == []
    item = next(item for item in service_env.items() if item["id"] == document_id)
    assert "chunks_left" not in item
    assert "fanned_out" not in item
    assert item["attempts"] == 1  # waiting for the chunks was not an attempt


def test_a_chunk_that_ended_before_its_document_noted_it_is_counted_once(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext
) -> None:
    from handler.storage.document_steps import DocumentSteps

    sqs, queue_url = _work_queue(service_env, monkeypatch)
    service = get_service()
    queueing.queue_requests(service, [(1, request())])
    (document_id,) = _taken_ids(sqs, queue_url)
    first = _chunk_requests(service)[0]
    original = DocumentSteps.await_chunk
    raced: list[str] = []

    def finished_meanwhile(self: DocumentSteps, chunk_id: str, document_id: str, fields: dict[str, Any]) -> Any:
        # the first chunk is answered by another caller after the document read the table, before its note
        if not raced:
            raced.append(chunk_id)
            assert service.answer(first).status == "DONE"
        return original(self, chunk_id, document_id, fields)

    monkeypatch.setattr(DocumentSteps, "await_chunk", finished_meanwhile)

    assert queued_work.process(service, document_id, "scheduler", time.monotonic() + 600).outcome == "waiting"

    parent = next(item for item in service_env.items() if item["id"] == document_id)
    assert raced == [service.request_id(first)]
    assert raced[0] not in parent["chunks_left"]
    assert parent["progress"]["done"] == 1
    assert raced[0] not in _taken_ids(sqs, queue_url)
    # AND telling the document again about that chunk counts nothing
    assert service.stored_requests.table is not None
    assert service.stored_requests.table.documents.chunk_ended(document_id, raced[0]) is False


def test_a_chunk_failed_for_good_fails_its_document_naming_it(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext
) -> None:
    sqs, queue_url = _work_queue(service_env, monkeypatch)
    service = get_service()
    assert service.stored_requests.table is not None
    queueing.queue_requests(service, [(1, request())])
    (document_id,) = _taken_ids(sqs, queue_url)
    queued_work.process(service, document_id, "scheduler", time.monotonic() + 600)
    chunk_ids = _taken_ids(sqs, queue_url)

    # WHEN one chunk fails for good and workers finish the others
    assert service.stored_requests.table.leases.claim_queued(chunk_ids[0], "broken-worker", 60) is not None
    assert service.stored_requests.release(chunk_ids[0], "broken-worker", "the model broke", max_attempts=0) == "FAILED"
    worker.worker_handler(sqs_helpers.event_for(chunk_ids[1:]), lambda_context)
    assert _taken_ids(sqs, queue_url) == [document_id]
    worker.worker_handler(sqs_helpers.event_for([document_id]), lambda_context)

    # THEN the document is FAILED for good, naming the chunk and its error
    failed = service.lookup(document_id)
    assert failed is not None
    assert failed.status == "FAILED"
    assert failed.last_error is not None
    assert re.search(rf"request \d+ of {len(chunk_ids)} at level 1 of the document failed", failed.last_error)
    assert "the model broke" in failed.last_error


def test_a_run_plans_a_document_by_its_first_batch_of_chunks_not_the_whole_text(service_env: Table) -> None:
    from handler.domain.requests import parse_request

    # A document goes on from its stored chunks, so a run that fits one batch of them makes progress;
    # planned by the whole text, a book would never fit any run without workers.
    service = get_service()
    document, twice_as_long = parse_request(request()), parse_request(request(text=LONG_TEXT + "\n\n" + LONG_TEXT))

    assert service.predicted_seconds(twice_as_long) > service.predicted_seconds(document)
    assert service.predicted_seconds(twice_as_long, steps=True) == service.predicted_seconds(document, steps=True)
    assert service.predicted_seconds(document, steps=True) < service.predicted_seconds(document)


def test_a_document_whose_chunk_another_holds_waits_for_it_without_holding_an_invocation(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    from datetime import timedelta

    from handler.domain.stored_item import pending_fields
    from handler.storage import attributes as store

    # GIVEN a queued document whose chunks are all done but two, one of them held by another caller
    sqs, queue_url = _work_queue(service_env, monkeypatch)
    service = get_service()
    assert service.stored_requests.table is not None
    queueing.queue_requests(service, [(1, request())])
    (document_id,) = _taken_ids(sqs, queue_url)
    parts = _chunk_requests(service)
    for part in parts[2:]:
        assert service.answer(part).status == "DONE"
    held_id = service.request_id(parts[0])
    leases = service.stored_requests.table.leases
    assert leases.claim_or_create(held_id, "another-caller", 60, pending_fields(parts[0])) is True
    generations.clear()

    # WHEN a worker takes the document
    started = time.monotonic()
    outcome = queued_work.process(service, document_id, "worker", time.monotonic() + 600)

    # THEN it hands the two over at once instead of waiting out its invocation for the held one
    assert outcome.outcome == "waiting"
    assert time.monotonic() - started < 60
    assert sorted(_taken_ids(sqs, queue_url)) == sorted([held_id, service.request_id(parts[1])])
    assert generations == []

    # WHEN the other caller dies, and later runs take its chunk once its lease expired
    later = store.utc_now() + timedelta(minutes=2)
    monkeypatch.setattr(store, "utc_now", lambda: later)
    runs = [queued_work.run(service, "next-run", time.monotonic() + 600) for _ in range(2)]

    # THEN the document is DONE; the two chunks and the reduce step were generated once each
    finished = service.lookup(document_id)
    assert finished is not None
    assert finished.status == "DONE", (finished, runs)
    assert finished.document is not None
    assert len(generations) == 2 + sum(step.requests for step in finished.document.steps[1:])
