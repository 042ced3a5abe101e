"""Batch pre-generation: queue requests, and work through queued ones within one invocation's time.

A scheduled run lists PENDING items (and RUNNING ones whose lease expired) through the status index,
claims each with a conditional write, generates, and completes it while it holds the lease. It stops
claiming when the time left cannot fit the next item and leaves the rest for the next run, or, with
a work queue, hands the rest to worker invocations through SQS (a dispatcher, not a scheduler:
SQS and Lambda's concurrency decide who does what).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from handler.errors import InvalidRequest
from handler.items import Status, StoredItem, pending_fields
from handler.observability import logger, metrics
from handler.schemas import TextRequest
from handler.service import Processed, TextService, parse_request


@dataclass
class EnqueueReport:
    """What an enqueue did with each request."""

    new: int = 0
    already_done: int = 0
    already_pending: int = 0
    duplicates: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "invalid": [{"line": line, "error": error} for line, error in self.invalid]}


def enqueue(service: TextService, requests: Iterable[tuple[int, Any]]) -> EnqueueReport:
    """Queue numbered raw requests as PENDING items; ones already in the table (or repeated) add nothing."""
    if service.store is None:
        raise InvalidRequest("queueing requests needs TABLE_NAME")
    report = EnqueueReport()
    parsed: dict[str, TextRequest] = {}
    for number, raw in requests:
        try:
            request = parse_request(raw)
        except InvalidRequest as exc:
            report.invalid.append((number, exc.message))
            continue
        item_id = service.request_id(request)
        if item_id in parsed:
            report.duplicates += 1
            continue
        parsed[item_id] = request
    existing = service.store.statuses(list(parsed))
    for status in existing.values():
        if status == Status.DONE:
            report.already_done += 1
        else:
            report.already_pending += 1
    new = [(item_id, pending_fields(request)) for item_id, request in parsed.items() if item_id not in existing]
    report.new = service.store.put_pending_batch(new)
    if service.queue is not None and new:
        service.queue.send(item_id for item_id, _ in new)
    return report


@dataclass
class RunSummary:
    """What one scheduled run did."""

    claimed: int = 0
    done: int = 0
    failed: int = 0
    requeued: int = 0
    skipped: int = 0
    left: int = 0
    dispatched: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    stopped_for_time: bool = False

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of generation wall time, all requests together."""
        return round(self.completion_tokens / self.generation_seconds, 3) if self.generation_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


def queued_items(service: TextService) -> Iterator[StoredItem]:
    """Work to do, oldest first: PENDING items, then RUNNING items whose lease expired."""
    assert service.store is not None
    yield from service.store.items_with_status(Status.PENDING)
    yield from service.store.items_with_status(Status.RUNNING)


def run(service: TextService, owner: str, deadline: float, dispatch: bool = False) -> RunSummary:
    """Work through queued items until none is left or the next ones cannot finish before ``deadline``.

    Items are taken ``BATCH_PARALLEL`` at a time and decoded together. With ``dispatch`` and a work
    queue, what this run cannot fit is sent to the queue's workers.
    """
    if service.store is None:
        raise InvalidRequest("batch runs need TABLE_NAME")
    summary = RunSummary()
    leftover: list[str] = []
    items = queued_items(service)
    while not summary.stopped_for_time:
        group = list(islice(items, service.settings.batch_parallel))
        if not group:
            break
        # Decoding together is faster than one after another, so the sum of the items' times is a safe bound.
        fitting: list[str] = []
        needed = 0.0
        for item in group:
            needed += _predicted_seconds(service, item)
            if time.monotonic() + needed > deadline:
                summary.stopped_for_time = True
                leftover.append(item.id)
            else:
                fitting.append(item.id)
        if fitting:
            started = time.monotonic()
            processed = service.process_many(fitting, owner, deadline)
            summary.generation_seconds += time.monotonic() - started
            for one in processed.values():
                _count(one, summary)
    leftover.extend(item.id for item in items)
    summary.left = len(leftover)
    if dispatch and service.queue is not None and leftover:
        summary.dispatched = service.queue.send(leftover)
    _report(summary)
    return summary


def _predicted_seconds(service: TextService, item: StoredItem) -> float:
    try:
        return service.predicted_seconds(parse_request(item.request))
    except InvalidRequest:
        return 0.0  # processing fails it at once, with its error


def _count(processed: Processed, summary: RunSummary) -> None:
    if processed.outcome == "skipped":
        summary.skipped += 1
        return
    summary.claimed += 1
    if processed.outcome == "done" and processed.metrics is not None:
        summary.done += 1
        summary.completion_tokens += processed.metrics.completion_tokens
    elif processed.outcome == "failed":
        summary.failed += 1
    elif processed.outcome == "requeued":
        summary.requeued += 1


def _report(summary: RunSummary) -> None:
    logger.info("batch run finished", **summary.as_dict())
    for name in ("claimed", "done", "failed", "requeued", "left", "dispatched"):
        metrics.add_metric(name=f"batch_{name}", unit=MetricUnit.Count, value=getattr(summary, name))
    if summary.generation_seconds > 0:
        metrics.add_metric(name="batch_tokens_per_s", unit=MetricUnit.CountPerSecond, value=summary.tokens_per_s)
