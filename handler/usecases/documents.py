"""Texts longer than the context window: summarized by map-reduce, translated chunk by chunk.

The text is cut into chunks (handler/usecases/preparation.py, chunking.py). Each chunk is a request of its
own (the same task and options over the chunk's text, ``strategy: single``), stored as its own item under
its own id, so an unchanged chunk of an edited document is a cache hit, and a document that could not
finish in one invocation goes on where it stopped: the chunks already done are in the table. The chunks
are generated together (batched decoding). A translation is its chunks' translations joined; a summary's
chunk summaries are summarized in turn, in groups that fit, until one request holds them all (the reduce
step). The answer says how many chunks and levels it took, with its metrics summed and per level.

Queued documents with a work queue fan out: a level with more chunk requests than one batch is handed to
the workers. Each chunk request is queued (SQS) and notes the document waiting on it; the document stays
RUNNING, held by no invocation, with the set of its chunks not yet ended. Whoever ends a chunk (DONE, or
FAILED for good) takes it out of that set with a conditional write, and the one write that empties the
set queues the document again, exactly once: its next run reads the chunks from the table and goes on
to the next level (the reduce step). A killed worker loses only its unfinished chunks, which are taken
again when their lease expires; nothing done is generated twice.
"""

from __future__ import annotations

import time
import uuid

from handler.core.errors import ChunkFailed, DeadlineReached
from handler.core.observability import logger
from handler.domain.answers import Answer, DocumentInfo, DocumentStep, Status
from handler.domain.requests import TranslateRequest
from handler.domain.stored_item import StoredItem, done_fields, pending_fields
from handler.engine import Engine
from handler.formats.prompts import PROMPT_VERSION
from handler.usecases.generation_result import GenerationResult, generation_result
from handler.usecases.metrics import summed_metrics
from handler.usecases.preparation import Document, check_document, checked_prompt, fits_one_request, split
from handler.usecases.stored_requests import StoredRequests

#: How often a document waits for a chunk that another caller is generating.
WAIT_POLL_S = 0.25
#: How long a fanned-out document waits for its chunks before a scheduled run may take it again (a safety
#: net: the last chunk to end queues it at once).
FAN_OUT_WAIT_S = 3600.0


class DocumentWaiting(Exception):
    """The document's chunk requests went to the workers; the last of them to end queues it again."""

    def __init__(self, level: int, handed_over: int) -> None:
        super().__init__(f"level {level}: {handed_over} chunk requests handed to the workers")
        self.level = level
        self.handed_over = handed_over


def generate_document(
    stored_requests: StoredRequests,
    item_id: str,
    request: Document,
    engine: Engine,
    loaded_now: bool,
    cold_start: bool,
    deadline: float | None,
    held_by: str | None = None,
) -> GenerationResult:
    """Answer a long text through its chunks' requests; DeadlineReached when they cannot all finish in time
    (those finished are stored, so the next attempt goes on from them).

    ``held_by`` is the owner of a queued document's claim: with a work queue, a level of more chunk
    requests than one batch then goes to the workers (DocumentWaiting).
    """
    started = time.perf_counter()
    check_document(engine, request)
    parts = split(engine, request, request.text)
    steps: list[DocumentStep] = []
    collected: list[Answer] = []
    fan_out = _FanOut.of(stored_requests, item_id, held_by)
    answers = _answer_parts(stored_requests, engine, parts, deadline, steps, collected, item_id, fan_out)
    outputs = [answer.output or "" for answer in answers]
    if isinstance(request, TranslateRequest):
        final = answers
        output = "\n\n".join(outputs)
    else:
        while True:
            joined = "\n\n".join(outputs)
            whole = request.model_copy(update={"text": joined, "strategy": "single", "mode": "sync"})
            if fits_one_request(engine, whole):
                final = _answer_parts(stored_requests, engine, [whole], deadline, steps, collected, item_id, fan_out)
                output = final[0].output or ""
                break
            answers = _answer_parts(
                stored_requests, engine, split(engine, request, joined), deadline, steps, collected, item_id, fan_out
            )
            outputs = [answer.output or "" for answer in answers]
    info = DocumentInfo(chunks=len(parts), levels=len(steps), steps=steps)
    metrics = summed_metrics([answer.metrics for answer in collected], engine, loaded_now, cold_start)
    metrics = metrics.model_copy(update={"total_ms": round((time.perf_counter() - started) * 1000.0, 3)})
    finish_reason = final[-1].finish_reason or "stop"
    logger.info("document finished", id=item_id, task=request.task, chunks=len(parts), levels=len(steps))
    answer = Answer(
        id=item_id,
        task=request.task,
        status=Status.DONE,
        output=output,
        finish_reason=finish_reason,
        metrics=metrics,
        model=engine.info,
        document=info,
    )
    fields = done_fields(request, output, finish_reason, metrics, engine.info, info, prompt_version=PROMPT_VERSION)
    return GenerationResult(answer, fields)


def _answer_parts(
    stored_requests: StoredRequests,
    engine: Engine,
    parts: list[Document],
    deadline: float | None,
    steps: list[DocumentStep],
    collected: list[Answer],
    document_id: str,
    fan_out: _FanOut | None = None,
) -> list[Answer]:
    """The parts' answers: from the table when done, else generated together under this caller's claims,
    or handed to the workers (``fan_out``) when there are more than one batch of them."""
    table = stored_requests.table if all(part.options.store for part in parts) else None
    ids = [stored_requests.request_id(part) for part in parts]
    answers: dict[str, Answer] = {}
    level = len(steps) + 1
    if table is not None:
        stored = table.items.get_many(ids)
        for item_id, item in stored.items():
            if item.status == Status.DONE:
                answers[item_id] = item.to_answer(cached=True)
        if fan_out is not None:
            fan_out.check_none_failed(ids, stored, level)
            left = {item_id: part for item_id, part in zip(ids, parts, strict=True) if item_id not in answers}
            # More than one batch goes to the workers; so does a level where another holder is generating a
            # chunk: its ender tells the document, which need not wait here for it.
            held_elsewhere = any(stored[item_id].status == Status.RUNNING for item_id in left if item_id in stored)
            if len(left) > engine.parallel or held_elsewhere:
                fan_out.hand_over(level, left, total=len(ids))
    owner = f"document-{uuid.uuid4()}"
    lease_s = stored_requests.lease_s(deadline)
    todo: list[tuple[str, Document]] = []
    held: list[str] = []
    for item_id, part in dict(zip(ids, parts, strict=True)).items():
        if item_id in answers:
            continue
        if table is not None and table.leases.claim_or_create(item_id, owner, lease_s, pending_fields(part)) is None:
            held.append(item_id)  # another caller is generating it
            continue
        todo.append((item_id, part))
    generated = 0

    def note_progress() -> None:
        if stored_requests.table is not None:
            progress = {"level": level, "done": len(answers), "total": len(ids)}
            stored_requests.table.documents.note_progress(document_id, progress)

    note_progress()
    # Rounds of BATCH_PARALLEL requests, so the document's progress can be read between them.
    rounds = [todo[start : start + engine.parallel] for start in range(0, len(todo), max(engine.parallel, 1))]
    for batch in rounds:
        jobs = [(checked_prompt(engine, part), part.options) for _, part in batch]
        completions = engine.generate_batch(jobs, deadline=deadline)
        for (item_id, part), completion in zip(batch, completions, strict=True):
            if completion is None:
                if table is not None:  # queued for a worker, like any late request
                    stored_requests.requeue(item_id, owner)
                continue
            done = generation_result(item_id, part, completion, engine, False, False)
            if table is not None:
                stored_done = stored_requests.complete(item_id, owner, done.fields)
                answers[item_id] = stored_done.to_answer(cached=False) if stored_done is not None else done.answer
            else:
                answers[item_id] = done.answer
            generated += 1
        note_progress()
    for item_id in held:
        answer = _wait_for(stored_requests, item_id, deadline)
        if answer is not None:
            answers[item_id] = answer
    missing = [item_id for item_id in ids if item_id not in answers]
    if missing:
        raise DeadlineReached(
            f"{len(ids) - len(missing)} of {len(ids)} chunk requests finished in time; the others are queued "
            "and the document goes on from them"
        )
    result = [answers[item_id] for item_id in ids]
    collected.extend(result)
    steps.append(
        DocumentStep(
            level=level,
            requests=len(ids),
            generated=min(generated + (fan_out.handed_over(level) if fan_out is not None else 0), len(ids)),
            prompt_tokens=sum(a.metrics.prompt_tokens for a in result if a.metrics),
            completion_tokens=sum(a.metrics.completion_tokens for a in result if a.metrics),
            total_ms=round(sum(a.metrics.total_ms for a in result if a.metrics), 3),
        )
    )
    return result


class _FanOut:
    """A queued document's claim, under which its chunk requests can be handed to the workers."""

    def __init__(self, stored_requests: StoredRequests, document_id: str, owner: str, handed: dict[str, int]) -> None:
        self.stored_requests = stored_requests
        self.document_id = document_id
        self.owner = owner
        self._handed = handed  # chunk requests handed over so far, by level (the document's item keeps them)

    @classmethod
    def of(cls, stored_requests: StoredRequests, document_id: str, held_by: str | None) -> _FanOut | None:
        """The fan-out of a document held by ``held_by``, when there are workers to hand chunks to."""
        if held_by is None or stored_requests.queue is None or stored_requests.table is None:
            return None
        item = stored_requests.table.items.get(document_id)
        return cls(stored_requests, document_id, held_by, dict(item.fanned_out or {}) if item is not None else {})

    def handed_over(self, level: int) -> int:
        """How many of the level's requests the workers generated for this document."""
        return self._handed.get(str(level), 0)

    def check_none_failed(self, ids: list[str], stored: dict[str, StoredItem], level: int) -> None:
        """A chunk request that failed for good fails the document (handing it over again would loop)."""
        for number, item_id in enumerate(ids, start=1):
            item = stored.get(item_id)
            if item is not None and item.status == Status.FAILED:
                raise ChunkFailed(
                    f"request {number} of {len(ids)} at level {level} of the document failed: {item.error}",
                    log_message=f"request {number} of {len(ids)} at level {level} of the document failed",
                )

    def hand_over(self, level: int, left: dict[str, Document], total: int) -> None:
        """Queue the chunk requests not done and wait for them: always raises DocumentWaiting.

        The document's set of chunks is written before any chunk notes it, so no chunk can end unseen:
        one that ended before its note is counted here, by the same conditional write its ender uses.
        """
        stored_requests, table, queue = self.stored_requests, self.stored_requests.table, self.stored_requests.queue
        assert table is not None
        assert queue is not None
        self._handed[str(level)] = self.handed_over(level) + len(left)
        progress = {"level": level, "done": total - len(left), "total": total}
        if not table.documents.wait_for_chunks(
            self.document_id, self.owner, set(left), progress, self._handed, FAN_OUT_WAIT_S
        ):
            raise DeadlineReached("the document's claim ran out before its chunks could be handed over")
        to_send: list[str] = []
        for chunk_id, part in left.items():
            chunk = table.documents.await_chunk(chunk_id, self.document_id, pending_fields(part))
            if chunk.status in (Status.DONE, Status.FAILED):
                stored_requests.count_ended(self.document_id, chunk_id)
            else:
                to_send.append(chunk_id)  # a RUNNING one too: a worker takes it if its holder's lease expired
        queue.send(to_send)
        logger.info("document handed to the workers", id=self.document_id, level=level, requests=len(left))
        raise DocumentWaiting(level, len(left))


def _wait_for(stored_requests: StoredRequests, item_id: str, deadline: float | None) -> Answer | None:
    """Another caller's chunk, once it is done; None when time runs out first."""
    while deadline is None or time.monotonic() + WAIT_POLL_S < deadline:
        answer = stored_requests.lookup(item_id)
        if answer is not None and answer.status in (Status.DONE, Status.FAILED):
            return answer if answer.status == Status.DONE else None
        time.sleep(WAIT_POLL_S)
    return None
