"""Batch pre-generation in-process against moto server and the tiny model: claims, leases, faults, export."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from handler import engine as engine_module
from handler.core.errors import GenerationError, StoreError
from handler.domain.requests import parse_request
from handler.entry.runtime import get_service
from handler.entry.schedule import schedule_handler
from handler.entry.worker import worker_handler
from handler.storage.result_store import ResultStore
from handler.usecases import queued_work, queueing
from handler.usecases.text_service import TextService
from scripts.batch import enqueue as enqueue_script
from scripts.batch import export as export_results
from tests.support import sqs as sqs_helpers
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table


def _requests(count: int, prefix: str = "Document") -> list[dict[str, Any]]:
    return [
        {"task": "summarize", "text": f"{prefix} number {n}: gradient boosting trees.", "options": {"max_tokens": 8}}
        for n in range(count)
    ]


def _queue(service: TextService, requests: list[dict[str, Any]]) -> list[str]:
    report = queueing.queue_requests(service, enumerate(requests, start=1))
    assert report.new == len(requests)
    return [service.request_id(parse_request(r)) for r in requests]


def _statuses(table: Table) -> dict[str, str]:
    return {item["id"]: item["status"] for item in table.items()}


def test_enqueue_jsonl_then_runs_finish_everything_once(
    service_env: Table, lambda_context: FakeLambdaContext, tmp_path: Path, tiny_model: Path, generations: list[int]
) -> None:
    # GIVEN 50 requests in a JSONL file, one line invalid
    source = tmp_path / "requests.jsonl"
    lines = [json.dumps(r) for r in _requests(50)] + ['{"task": "poem", "text": "x"}', "not json"]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = [str(source), "--table", service_env.name, "--model", str(tiny_model)]

    # WHEN they are enqueued and scheduled runs go until nothing is pending
    assert enqueue_script.main(argv) == 1  # invalid lines make the exit code non-zero
    runs = [schedule_handler({}, lambda_context) for _ in range(3)]

    # THEN every request has exactly one DONE item with metrics, generated once
    items = service_env.items()
    assert len(items) == 50
    assert all(item["status"] == "DONE" and item["metrics"]["completion_tokens"] > 0 for item in items)
    assert len(generations) == 50
    assert runs[0]["run"]["done"] == 50
    assert runs[0]["run"]["tokens_per_s"] > 0
    assert runs[1]["run"]["claimed"] == 0
    # AND re-enqueueing the same file adds nothing
    report = enqueue_script.enqueue_all(enqueue_script.read_jsonl(source), service_env.name, str(tiny_model), None)
    assert (report.new, report.already_done, report.already_pending) == (0, 50, 0)
    assert [line for line, _ in report.invalid] == [51, 52]
    assert len(service_env.items()) == 50


def test_enqueue_csv_builds_requests_from_columns(service_env: Table, tmp_path: Path, tiny_model: Path) -> None:
    source = tmp_path / "docs.csv"
    source.write_text("text,target_language,max_tokens\nHello there.,French,8\nGood night.,,16\n,German,8\n")

    report = enqueue_script.enqueue_all(
        enqueue_script.read_csv(source, "translate", "text", {"target_language": "Japanese"}),
        service_env.name,
        str(tiny_model),
        None,
    )

    assert report.new == 2
    assert [line for line, _ in report.invalid] == [4]
    languages = sorted(item["request"]["target_language"] for item in service_env.items())
    assert languages == ["French", "Japanese"]


def test_schedule_event_items_are_queued_and_run(
    service_env: Table, lambda_context: FakeLambdaContext, generations: list[int]
) -> None:
    answer = schedule_handler({"items": _requests(3, "Inline")}, lambda_context)

    assert answer["enqueued"]["new"] == 3
    assert answer["run"]["done"] == 3
    assert set(_statuses(service_env).values()) == {"DONE"}


def test_run_reclaims_an_abandoned_lease_and_refuses_the_dead_workers_write(
    service_env: Table, generations: list[int]
) -> None:
    # GIVEN an item claimed by a worker that died (its lease is short and runs out)
    service = get_service()
    assert service.stored_requests.table is not None
    (item_id,) = _queue(service, _requests(1, "Abandoned"))
    assert service.stored_requests.table.leases.claim_queued(item_id, "dead-worker", lease_s=0.2) is not None
    time.sleep(0.3)

    # WHEN the next run comes
    summary = queued_work.run(service, "next-run", time.monotonic() + 60)

    # THEN it finishes the item, and the dead worker's late write is refused
    assert summary.done == 1
    item = service.stored_requests.table.items.get(item_id)
    assert item is not None
    assert item.status == "DONE"
    assert item.attempts == 2
    assert service.stored_requests.table.leases.complete(item_id, "dead-worker", {"output": "late"}) is None
    assert service.stored_requests.table.items.get(item_id).output != "late"  # type: ignore[union-attr]


def test_run_skips_an_item_whose_lease_is_live(service_env: Table, generations: list[int]) -> None:
    service = get_service()
    assert service.stored_requests.table is not None
    (item_id,) = _queue(service, _requests(1, "Busy"))
    service.stored_requests.table.leases.claim_queued(item_id, "live-worker", lease_s=600)

    summary = queued_work.run(service, "other", time.monotonic() + 60)

    assert summary.claimed == 0
    assert generations == []
    assert service.stored_requests.table.items.get(item_id).lease_owner == "live-worker"  # type: ignore[union-attr]


def test_poison_item_fails_after_max_attempts_and_the_others_finish(
    service_env: Table,
    monkeypatch: pytest.MonkeyPatch,
    lambda_context: FakeLambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN one request that always breaks generation among good ones
    monkeypatch.setenv("MAX_ATTEMPTS", "3")
    original = engine_module.Engine.generate_batch

    def poisoned(self: engine_module.Engine, jobs: Any, *args: Any, **kwargs: Any) -> Any:
        if any("POISON" in self.model.llama.detokenize(prompt.tokens).decode(errors="ignore") for prompt, _ in jobs):
            raise GenerationError("llama_decode failed with status -3")
        return original(self, jobs, *args, **kwargs)

    monkeypatch.setattr(engine_module.Engine, "generate_batch", poisoned)
    service = get_service()
    ids = _queue(service, _requests(3, "Good") + _requests(1, "POISON"))

    # WHEN runs are repeated
    for _ in range(4):
        schedule_handler({}, lambda_context)

    # THEN the poison item is FAILED with its error after 3 attempts and the rest are DONE
    assert service.stored_requests.table is not None
    poison = service.stored_requests.table.items.get(ids[-1])
    assert poison is not None
    assert (poison.status, poison.attempts) == ("FAILED", 3)
    assert "llama_decode failed" in (poison.error or "")
    assert [_statuses(service_env)[i] for i in ids[:-1]] == ["DONE"] * 3
    # AND its failure is counted once, under its task, in the runs' metrics (the dashboard's failed_<task>)
    failed = [
        value
        for line in capsys.readouterr().out.splitlines()
        if line.startswith('{"_aws"')
        for value in json.loads(line).get(f"failed_{poison.task}", [])
    ]
    assert failed == [1.0]


def test_invalid_queued_request_fails_at_once(service_env: Table) -> None:
    service = get_service()
    assert service.stored_requests.table is not None
    service.stored_requests.table.items.put_pending(
        "f" * 64, {"task": "summarize", "request": {"task": "summarize", "text": ""}}
    )

    summary = queued_work.run(service, "worker", time.monotonic() + 60)

    assert summary.failed == 1
    failed = service.stored_requests.table.items.get("f" * 64)
    assert failed is not None
    assert failed.status == "FAILED"
    assert "text" in (failed.error or "")


def test_output_over_the_item_limit_fails_cleanly(service_env: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    original = engine_module.Engine.generate_batch

    def huge(self: engine_module.Engine, *args: Any, **kwargs: Any) -> Any:
        return [
            engine_module.Completion(**{**c.__dict__, "text": "x" * 500_000}) for c in original(self, *args, **kwargs)
        ]

    monkeypatch.setattr(engine_module.Engine, "generate_batch", huge)
    service = get_service()
    (item_id,) = _queue(service, _requests(1, "Huge"))

    summary = queued_work.run(service, "worker", time.monotonic() + 60)

    assert summary.failed == 1
    assert service.stored_requests.table is not None
    item = service.stored_requests.table.items.get(item_id)
    assert item is not None
    assert item.status == "FAILED"
    assert "400 KB" in (item.error or "")
    assert item.lease_owner is None


def test_run_stops_claiming_at_its_time_budget_and_leaves_nothing_running(
    service_env: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN five queued requests, of which the budget fits two
    service = get_service()
    _queue(service, _requests(5, "Budget"))
    predictions = iter([0.0, 0.0])
    monkeypatch.setattr(
        TextService, "predicted_seconds", lambda self, request, steps=False, prepared=None: next(predictions, 10_000.0)
    )

    # WHEN a run works until its deadline
    summary = queued_work.run(service, "worker", time.monotonic() + 60)

    # THEN it does two, stops cleanly and leaves three PENDING, none RUNNING
    assert (summary.done, summary.left, summary.stopped_for_time) == (2, 3, True)
    assert sorted(_statuses(service_env).values()) == ["DONE", "DONE", "PENDING", "PENDING", "PENDING"]


def test_fan_out_dispatches_to_sqs_and_workers_report_partial_failures(
    service_env: Table, monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext
) -> None:
    # GIVEN a work queue and queued requests that this invocation has no time for
    sqs = sqs_helpers.client(service_env.endpoint_url)
    queue_url = sqs.create_queue(QueueName=f"work-{service_env.name}")["QueueUrl"]
    monkeypatch.setenv("WORK_QUEUE_URL", queue_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", service_env.endpoint_url)
    service = get_service()
    ids = _queue(service, _requests(4, "FanOut"))
    sqs_helpers.drain(sqs, queue_url)  # enqueue already sent them; the dispatcher must send them again
    monkeypatch.setattr(TextService, "predicted_seconds", lambda self, request, steps=False, prepared=None: 10_000.0)

    # WHEN the scheduled run dispatches what it cannot fit
    run = schedule_handler({}, lambda_context)["run"]
    messages = sqs_helpers.drain(sqs, queue_url)

    # THEN every id went to the queue
    assert run["dispatched"] == 4
    assert sorted(json.loads(m["Body"])["id"] for m in messages) == sorted(ids)

    # WHEN a worker gets them with one broken message
    monkeypatch.undo()
    monkeypatch.setenv("WORK_QUEUE_URL", queue_url)
    broken = sqs_helpers.record({"MessageId": "bad", "Body": "{}"})
    event = {"Records": [sqs_helpers.record(m) for m in messages] + [broken]}
    response = worker_handler(event, lambda_context)

    # THEN the four are DONE and only the broken message is reported failed
    assert response == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    assert [_statuses(service_env)[i] for i in ids] == ["DONE"] * 4


def test_put_pending_batch_retries_unprocessed_items_then_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("handler.storage.item_access.backoff", lambda attempt: 0.0)
    responses = [{"UnprocessedItems": {"t": ["x"]}}, {"UnprocessedItems": {}}]
    store = ResultStore("t", table=_FakeTable(lambda **kwargs: responses.pop(0)))

    assert store.items.put_pending_batch([("a" * 64, {"task": "summarize"})]) == 1
    assert responses == []

    stuck = ResultStore("t", table=_FakeTable(lambda **kwargs: {"UnprocessedItems": {"t": ["x"]}}))
    with pytest.raises(StoreError, match="left 1 of 1 items unwritten after 6 attempts") as caught:
        stuck.items.put_pending_batch([("b" * 64, {"task": "summarize"})])
    assert caught.value.details["throttled"] is True


def test_store_throttling_is_a_clear_error() -> None:
    def throttled(**kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "GetItem"
        )

    store = ResultStore("t", table=_FakeTable(throttled, get_item=throttled))

    with pytest.raises(StoreError, match="ProvisionedThroughputExceededException: slow down") as caught:
        store.items.get("c" * 64)
    assert caught.value.details["throttled"] is True


def test_export_prints_summary_and_writes_results_and_plot(
    service_env: Table, lambda_context: FakeLambdaContext, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule_handler({"items": _requests(6, "Export")}, lambda_context)
    out, plot = tmp_path / "results.csv", tmp_path / "decode.png"

    assert export_results.main(["--table", service_env.name, "--out", str(out), "--plot", str(plot)]) == 0

    printed = capsys.readouterr().out
    start = printed.index('{\n  "counts"')
    report = json.loads(printed[start : printed.index("\n}\n", start) + 2])
    assert report["counts"]["DONE"] == 6
    assert report["completion_tokens"] > 0
    assert report["eval_tokens_per_s"]["p50"] > 0
    assert report["estimated_cost_usd"] > 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 7
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _FakeClient:
    def __init__(self, batch_write_item: Callable[..., Any]) -> None:
        self.batch_write_item = batch_write_item


class _FakeMeta:
    def __init__(self, client: _FakeClient) -> None:
        self.client = client


class _FakeTable:
    """Just enough of a boto3 Table to script DynamoDB's answers."""

    def __init__(self, batch_write_item: Callable[..., Any], get_item: Callable[..., Any] | None = None) -> None:
        self.meta = _FakeMeta(_FakeClient(batch_write_item))
        if get_item is not None:
            self.get_item = get_item


def test_tiny_floats_are_stored_as_zero_instead_of_failing() -> None:
    from handler.storage.attributes import to_dynamo

    assert to_dynamo({"temperature": 1e-300, "top_p": 0.5}) == {"temperature": 0, "top_p": Decimal("0.5")}


def test_a_run_takes_queued_requests_over_one_text_together() -> None:
    from handler.domain.stored_item import StoredItem
    from handler.usecases.queued_work import over_one_text_together

    def item(n: int, text: str | None) -> StoredItem:
        request = {"task": "summarize", "text": text} if text else {"task": "chat", "messages": []}
        return StoredItem(id=f"{n:064d}", status="PENDING", request=request)

    oldest_first = [item(1, "A"), item(2, "B"), item(3, None), item(4, "A"), item(5, "B"), item(6, "A")]

    order = [int(i.id) for i in over_one_text_together(iter(oldest_first), parallel=2)]

    # Each text's requests next to each other, where its first one stood; the others in their places.
    assert order == [1, 4, 6, 2, 5, 3]
