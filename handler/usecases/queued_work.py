"""Queued work: requests queued in bulk (handler/usecases/queueing.py), claimed, generated, completed or released, and
scheduled runs through them.

Every queued request is an item of the results table (handler/storage/result_store.py); a worker (SQS) or a
scheduled run claims it under a lease, generates (several at a time through batched decoding) and
completes it while it still holds the lease, or releases it with its error.

A scheduled run lists PENDING items (and RUNNING ones whose lease expired) through the status index,
claims each with a conditional write, generates, and completes it while it holds the lease. It stops
claiming when the time left cannot fit the next item and leaves the rest for the next run, or, with
a work queue, hands the rest to worker invocations through SQS (a dispatcher, not a scheduler:
SQS and Lambda's concurrency decide who does what).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, Literal

from handler.core.errors import (
    ChunkFailed,
    DeadlineReached,
    InputTooLong,
    InvalidRequest,
    OutputInvalid,
    ServiceError,
    StoreError,
)
from handler.core.observability import logger
from handler.domain.answers import Metrics, Status
from handler.domain.requests import TextRequest, parse_request
from handler.domain.stored_item import StoredItem
from handler.engine import Completion, Engine, PromptTokens
from handler.storage.attributes import result_too_large
from handler.storage.document_steps import WAITING_FOR_CHUNKS
from handler.usecases.documents import DocumentWaiting
from handler.usecases.generation_result import GenerationResult, generation_result
from handler.usecases.metrics import RUN_COUNTS, emit_run
from handler.usecases.preparation import PreparedRequest, prepare
from handler.usecases.text_service import TextService

#: "skipped": the item has ended (or waits for its chunks' requests, which queue it again); "held": another
#: invocation holds its lease now, so its work is not this one's to drop (a worker's message comes back later);
#: "deferred": the table could not be written now (throttled, unavailable): its lease runs out and it is tried again.
Outcome = Literal["done", "failed", "requeued", "skipped", "held", "deferred", "lost-lease", "waiting"]
#: Outcomes after which a worker's message must come back: the item has not ended and nobody will queue it again.
NOT_ENDED: frozenset[Outcome] = frozenset({"requeued", "held", "deferred"})


@dataclass(frozen=True)
class Processed:
    """What processing one queued item came to, with the generation's metrics when it finished."""

    outcome: Outcome
    metrics: Metrics | None = None


@dataclass
class RunSummary:
    """What one scheduled run did."""

    claimed: int = 0
    done: int = 0
    failed: int = 0
    requeued: int = 0
    skipped: int = 0
    waiting: int = 0
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
    table = service.stored_requests.table
    assert table is not None
    yield from table.items.items_with_status(Status.PENDING)
    yield from table.items.items_with_status(Status.RUNNING)


def run(service: TextService, owner: str, deadline: float, dispatch: bool = False) -> RunSummary:
    """Work through queued items until none is left or the next ones cannot finish before ``deadline``.

    Items are taken ``BATCH_PARALLEL`` at a time and decoded together. With ``dispatch`` and a work
    queue, what this run cannot fit is sent to the queue's workers.
    """
    if service.stored_requests.table is None:
        raise InvalidRequest("batch runs need TABLE_NAME")
    summary = RunSummary()
    leftover: list[str] = []
    items = over_one_text_together(queued_items(service), service.settings.batch_parallel)
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
            processed = process_many(service, fitting, owner, deadline)
            summary.generation_seconds += time.monotonic() - started
            for one in processed.values():
                _count(one, summary)
    leftover.extend(item.id for item in items)
    summary.left = len(leftover)
    queue = service.stored_requests.queue
    if dispatch and queue is not None and leftover:
        summary.dispatched = queue.send(leftover)
    _report(summary)
    return summary


#: Queued items looked at together when grouping requests over one text (groups of BATCH_PARALLEL each).
GROUPING_WINDOW_GROUPS = 8


def over_one_text_together(items: Iterator[StoredItem], parallel: int) -> Iterator[StoredItem]:
    """The items, oldest first, but within each window those over one text next to each other, so that a
    batch decodes them together and evaluates their shared text once (handler/engine/batch_decoder.py)."""
    while window := list(islice(items, parallel * GROUPING_WINDOW_GROUPS)):
        first_seen: dict[str, int] = {}
        for position, item in enumerate(window):
            first_seen.setdefault(_text_of(item), position)
        yield from sorted(window, key=lambda item: first_seen[_text_of(item)])


def _text_of(item: StoredItem) -> str:
    """What a queued request's prompt begins with: its text (summarize, translate); else its own id."""
    request = item.request
    text = request.get("text") if isinstance(request, dict) else None
    return text if isinstance(text, str) else item.id


def _predicted_seconds(service: TextService, item: StoredItem) -> float:
    try:
        return service.predicted_seconds(parse_request(item.request), steps=True)
    except (InvalidRequest, InputTooLong):
        return 0.0  # processing fails it at once, with its error


def _count(processed: Processed, summary: RunSummary) -> None:
    if processed.outcome in ("skipped", "held", "deferred"):  # not ended here: a later run or message takes it
        summary.skipped += 1
        return
    if processed.outcome == "waiting":
        summary.waiting += 1  # a document whose chunk requests went to the workers
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
    counts = {name: getattr(summary, name) for name in RUN_COUNTS}
    emit_run(counts, summary.tokens_per_s if summary.generation_seconds > 0 else None)


# -- claim, generate, complete or release ----------------------------------------------------------


def process(service: TextService, item_id: str, owner: str, deadline: float) -> Processed:
    """Claim a queued item, generate it before ``deadline`` and complete it while holding the lease."""
    return process_many(service, [item_id], owner, deadline)[item_id]


def process_many(service: TextService, item_ids: list[str], owner: str, deadline: float) -> dict[str, Processed]:
    """Claim queued items and generate them together (batched decoding), completing each under its lease."""
    table = service.stored_requests.table
    if table is None:
        raise ServiceError("queued work needs TABLE_NAME")
    lease_s = service.stored_requests.lease_s(deadline)
    results: dict[str, Processed] = {}
    claimed: list[tuple[str, TextRequest, PromptTokens]] = []
    documents: list[tuple[str, TextRequest, PreparedRequest]] = []
    engine: Engine | None = None
    loaded_now = False
    for item_id in dict.fromkeys(item_ids):
        try:
            item = table.leases.claim_queued(item_id, owner, lease_s)
        except StoreError as exc:
            results[item_id] = _deferred(item_id, "claim", exc)
            continue
        if item is None:
            results[item_id] = _not_claimed(service, item_id)
            continue
        try:
            request = parse_request(item.request)
            engine, loaded = service.engine()
            loaded_now = loaded_now or loaded
            prepared = prepare(engine, request)
            if prepared.document:
                documents.append((item_id, request, prepared))  # answered through its chunks' requests, below
                continue
            assert prepared.prompt is not None  # one generation's preparation holds its checked prompt
            prompt = prepared.prompt
        except (InvalidRequest, InputTooLong) as exc:
            # The request itself is wrong: retrying cannot help.
            results[item_id] = _release(service, item_id, owner, exc, permanent=True)
            continue
        except ServiceError as exc:
            results[item_id] = _release(service, item_id, owner, exc, permanent=False)
            continue
        claimed.append((item_id, request, prompt))
    if claimed and engine is not None:
        results.update(_process_claimed(service, engine, claimed, owner, deadline, loaded_now))
    # After the others: a document's chunks may be among them, claimed by this very run.
    for item_id, request, prepared in documents:
        results[item_id] = _process_document(service, item_id, request, prepared, owner, deadline)
    return results


def _deferred(item_id: str, step: str, exc: StoreError) -> Processed:
    """One item's write refused by the table (after the SDK's retries): it alone waits for its next try, the
    others of the batch go on."""
    logger.warning("queued request deferred: the table refused a write", id=item_id, step=step, error=exc.log_message)
    return Processed("deferred")


def _not_claimed(service: TextService, item_id: str) -> Processed:
    """Why an item could not be claimed: ended (or gone), or held by another invocation's lease, which may die
    with it (a worker killed after its claim): then the message must come back until that lease has expired."""
    assert service.stored_requests.table is not None
    try:
        holder = service.stored_requests.table.items.holder(item_id)
    except StoreError as exc:
        return _deferred(item_id, "read", exc)
    if holder is None:
        return Processed("skipped")
    status, owner = holder
    if status in (Status.DONE, Status.FAILED) or owner == WAITING_FOR_CHUNKS:
        return Processed("skipped")
    return Processed("held")


def _process_claimed(
    service: TextService,
    engine: Engine,
    claimed: list[tuple[str, TextRequest, PromptTokens]],
    owner: str,
    deadline: float,
    loaded_now: bool,
) -> dict[str, Processed]:
    """Generate claimed requests together and complete or release each."""
    results: dict[str, Processed] = {}
    completions = _generate_isolating_failures(engine, claimed, deadline)
    for (item_id, request, _), completion in zip(claimed, completions, strict=True):
        if isinstance(completion, ServiceError):
            results[item_id] = _release(service, item_id, owner, completion, permanent=False)
            continue
        if completion is None:
            results[item_id] = _release(
                service, item_id, owner, "did not finish within one invocation", permanent=False
            )
            continue
        try:
            generated = generation_result(
                item_id, request, completion, engine, loaded_now, service.next_is_cold_start()
            )
        except OutputInvalid as exc:
            # The same request gives the same output: retrying cannot help.
            results[item_id] = _release(service, item_id, owner, exc, permanent=True)
            continue
        finally:
            loaded_now = False  # the load belongs to the first result only
        results[item_id] = _complete(service, item_id, owner, generated)
    return results


def _process_document(
    service: TextService, item_id: str, request: TextRequest, prepared: PreparedRequest, owner: str, deadline: float
) -> Processed:
    """A claimed long text, through its chunks' requests (handler/usecases/documents.py); when time runs out, it goes
    back to the queue and the next attempt goes on from the chunks already stored."""
    try:
        generated = service.generate(
            item_id, request, service.next_is_cold_start(), deadline, held_by=owner, prepared=prepared
        )
    except DocumentWaiting as waiting:
        # Its chunk requests are the workers' now; the last to end queues the document again.
        logger.info("document waits for its chunks", id=item_id, level=waiting.level, requests=waiting.handed_over)
        return Processed("waiting")
    except DeadlineReached as exc:
        return _release(service, item_id, owner, exc, permanent=False)
    except (InvalidRequest, InputTooLong, OutputInvalid, ChunkFailed) as exc:
        return _release(service, item_id, owner, exc, permanent=True)
    except ServiceError as exc:
        return _release(service, item_id, owner, exc, permanent=False)
    if generated is None:
        return _release(service, item_id, owner, "did not finish within one invocation", permanent=False)
    return _complete(service, item_id, owner, generated)


def _generate_isolating_failures(
    engine: Engine, claimed: list[tuple[str, TextRequest, PromptTokens]], deadline: float
) -> list[Completion | ServiceError | None]:
    """Decode the requests together; if that fails, one at a time, so one bad request fails alone."""
    jobs = [(prompt, request.options) for _, request, prompt in claimed]
    try:
        return list(engine.generate_batch(jobs, deadline=deadline))
    except ServiceError as exc:
        if len(jobs) == 1:
            return [exc]
    alone: list[Completion | ServiceError | None] = []
    for job in jobs:
        try:
            alone.extend(engine.generate_batch([job], deadline=deadline))
        except ServiceError as exc:
            alone.append(exc)
    return alone


def _complete(service: TextService, item_id: str, owner: str, generated: GenerationResult) -> Processed:
    assert service.stored_requests.table is not None
    # An output that would not fit fails cleanly instead of staying RUNNING.
    oversized = result_too_large(generated.fields)
    if oversized is not None:
        return _release(service, item_id, owner, oversized, permanent=True)
    try:
        completed = service.stored_requests.complete(item_id, owner, generated.fields)
    except StoreError as exc:
        return _deferred(item_id, "complete", exc)
    if completed is None:
        logger.warning("lease lost before the result was written", id=item_id, owner=owner)
        return Processed("lost-lease")
    return Processed("done", generated.answer.metrics)


def _release(service: TextService, item_id: str, owner: str, error: ServiceError | str, permanent: bool) -> Processed:
    """Give the item back with its error (stored whole; logged without the caller's values)."""
    assert service.stored_requests.table is not None
    message = error.message if isinstance(error, ServiceError) else error
    logged = error.log_message if isinstance(error, ServiceError) else error
    logger.warning("queued request failed", id=item_id, error=logged, permanent=permanent)
    try:
        status = service.stored_requests.release(item_id, owner, message, 0 if permanent else None)
    except StoreError as exc:
        return _deferred(item_id, "release", exc)
    return Processed("failed" if status == Status.FAILED else "requeued")
