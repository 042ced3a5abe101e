"""Texts longer than the context window: summarized by map-reduce, translated chunk by chunk.

The text is cut into chunks of about ``CHUNK_TOKENS`` (handler/chunking.py). Each chunk is a request of its
own (the same task and options over the chunk's text, ``strategy: single``), stored as its own item under
its own id, so an unchanged chunk of an edited document is a cache hit, and a document that could not
finish in one invocation goes on where it stopped: the chunks already done are in the table. The chunks
are generated together (batched decoding). A translation is its chunks' translations joined; a summary's
chunk summaries are summarized in turn, in groups that fit, until one request holds them all (the reduce
step). The answer says how many chunks and levels it took, with its metrics summed and per level.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from handler.chunking import chunks
from handler.engine import Engine, Tokenizer
from handler.errors import DeadlineReached, InputTooLong
from handler.items import Status, done_fields, pending_fields
from handler.observability import logger
from handler.schemas import (
    MAX_DOCUMENT_TOKENS,
    Answer,
    DocumentInfo,
    DocumentStep,
    Metrics,
    SummarizeRequest,
    TextRequest,
    TranslateRequest,
)
from handler.tasks import build_messages

if TYPE_CHECKING:
    from handler.service import Generated, TextService

#: Chunk size in tokens, as LangChain's and LlamaIndex's map-reduce users usually choose it.
CHUNK_TOKENS = 1000
#: The most of a chunk's last sentence repeated at the next chunk's start.
OVERLAP_TOKENS = 48
#: Room for the instruction and the chat template around a chunk.
PROMPT_ROOM_TOKENS = 96
#: How often a document waits for a chunk that another caller is generating.
WAIT_POLL_S = 0.25

Document = SummarizeRequest | TranslateRequest


def needs_chunks(counter: Engine | Tokenizer, request: TextRequest) -> bool:
    """Whether the request is answered chunk by chunk: asked for, or (auto) its prompt does not fit."""
    if not isinstance(request, SummarizeRequest | TranslateRequest) or request.strategy == "single":
        return False
    if request.strategy == "map_reduce":
        return True
    prompt = counter.build_prompt(build_messages(request))
    return len(prompt.tokens) + request.options.max_tokens > counter.n_ctx


def check_document(counter: Engine | Tokenizer, request: Document) -> int:
    """The text's length in tokens, refused beyond the document limit or when no chunk can fit."""
    tokens = counter.count_tokens(request.text)
    if tokens > MAX_DOCUMENT_TOKENS:
        raise InputTooLong(
            f"the text is {tokens} tokens; a document may be at most {MAX_DOCUMENT_TOKENS} tokens "
            "(split it into several requests)",
            text_tokens=tokens,
            limit_tokens=MAX_DOCUMENT_TOKENS,
        )
    if chunk_limit(counter, request) < 64:
        raise InputTooLong(
            f"max_tokens {request.options.max_tokens} leaves no room for a chunk of text in the context window "
            f"of {counter.n_ctx}; lower options.max_tokens",
            max_tokens=request.options.max_tokens,
            context_window=counter.n_ctx,
        )
    return tokens


def chunk_limit(counter: Engine | Tokenizer, request: Document) -> int:
    """The most tokens of text one chunk's request can hold."""
    return min(CHUNK_TOKENS, counter.n_ctx - request.options.max_tokens - PROMPT_ROOM_TOKENS)


def split(counter: Engine | Tokenizer, request: Document, text: str) -> list[Document]:
    """The requests over ``text``'s chunks: the same task and options, one chunk each."""
    pieces = chunks(text, chunk_limit(counter, request), counter.count_tokens, counter.cut_tokens, OVERLAP_TOKENS)
    return [request.model_copy(update={"text": piece, "strategy": "single", "mode": "sync"}) for piece in pieces]


def generate_document(
    service: TextService,
    item_id: str,
    request: Document,
    engine: Engine,
    loaded_now: bool,
    cold_start: bool,
    deadline: float | None,
) -> Generated:
    """Answer a long text through its chunks' requests; DeadlineReached when they cannot all finish in time
    (those finished are stored, so the next attempt goes on from them)."""
    from handler.service import Generated

    started = time.perf_counter()
    check_document(engine, request)
    parts = split(engine, request, request.text)
    steps: list[DocumentStep] = []
    collected: list[Answer] = []
    answers = _answer_parts(service, engine, parts, deadline, steps, collected, item_id)
    outputs = [answer.output or "" for answer in answers]
    if isinstance(request, TranslateRequest):
        final = answers
        output = "\n\n".join(outputs)
    else:
        while True:
            joined = "\n\n".join(outputs)
            whole = request.model_copy(update={"text": joined, "strategy": "single", "mode": "sync"})
            if not needs_chunks(engine, whole.model_copy(update={"strategy": "auto"})):
                final = _answer_parts(service, engine, [whole], deadline, steps, collected, item_id)
                output = final[0].output or ""
                break
            answers = _answer_parts(
                service, engine, split(engine, request, joined), deadline, steps, collected, item_id
            )
            outputs = [answer.output or "" for answer in answers]
    info = DocumentInfo(chunks=len(parts), levels=len(steps), steps=steps)
    metrics = _summed([answer.metrics for answer in collected], engine, loaded_now, cold_start)
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
    return Generated(answer, done_fields(request, output, finish_reason, metrics, engine.info, info))


def _answer_parts(
    service: TextService,
    engine: Engine,
    parts: list[Document],
    deadline: float | None,
    steps: list[DocumentStep],
    collected: list[Answer],
    document_id: str,
) -> list[Answer]:
    """The parts' answers: from the table when done, else generated together under this caller's claims."""
    store = service.store if all(part.options.store for part in parts) else None
    ids = [service.request_id(part) for part in parts]
    answers: dict[str, Answer] = {}
    if store is not None:
        for item_id, item in store.get_many(ids).items():
            if item.status == Status.DONE:
                answers[item_id] = item.to_answer(cached=True)
    owner = f"document-{uuid.uuid4()}"
    lease_s = service.lease_s(deadline)
    todo: list[tuple[str, Document]] = []
    held: list[str] = []
    for item_id, part in dict(zip(ids, parts, strict=True)).items():
        if item_id in answers:
            continue
        if store is not None and store.claim_to_generate(item_id, owner, lease_s, pending_fields(part)) is None:
            held.append(item_id)  # another caller is generating it
            continue
        todo.append((item_id, part))
    generated = 0
    level = len(steps) + 1

    def note_progress() -> None:
        if service.store is not None:
            progress = {"level": level, "done": len(answers), "total": len(ids)}
            service.store.note_progress(document_id, progress)

    note_progress()
    # Rounds of BATCH_PARALLEL requests, so the document's progress can be read between them.
    rounds = [todo[start : start + engine.parallel] for start in range(0, len(todo), max(engine.parallel, 1))]
    from handler.service import checked_prompt

    for batch in rounds:
        jobs = [(checked_prompt(engine, part), part.options) for _, part in batch]
        completions = engine.generate_batch(jobs, deadline=deadline)
        for (item_id, part), completion in zip(batch, completions, strict=True):
            if completion is None:
                if store is not None:  # queued for a worker, like any late request
                    store.release(item_id, owner, None, service.settings.max_attempts)
                    if service.queue is not None:
                        service.queue.send([item_id])
                continue
            done = service.generated(item_id, part, completion, engine, False, False)
            if store is not None:
                finished = store.complete(item_id, owner, done.fields)
                answers[item_id] = finished.to_answer(cached=False) if finished is not None else done.answer
            else:
                answers[item_id] = done.answer
            generated += 1
        note_progress()
    for item_id in held:
        answer = _wait_for(service, item_id, deadline)
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
            level=len(steps) + 1,
            requests=len(ids),
            generated=generated,
            prompt_tokens=sum(a.metrics.prompt_tokens for a in result if a.metrics),
            completion_tokens=sum(a.metrics.completion_tokens for a in result if a.metrics),
            total_ms=round(sum(a.metrics.total_ms for a in result if a.metrics), 3),
        )
    )
    return result


def _wait_for(service: TextService, item_id: str, deadline: float | None) -> Answer | None:
    """Another caller's chunk, once it is done; None when time runs out first."""
    while deadline is None or time.monotonic() + WAIT_POLL_S < deadline:
        answer = service.lookup(item_id)
        if answer is not None and answer.status in (Status.DONE, Status.FAILED):
            return answer if answer.status == Status.DONE else None
        time.sleep(WAIT_POLL_S)
    return None


def _summed(metrics: list[Metrics | None], engine: Engine, loaded_now: bool, cold_start: bool) -> Metrics:
    """One document's metrics: its requests' counts and times summed, speeds from the sums."""
    from handler.engine import peak_rss_mb

    present = [m for m in metrics if m is not None]
    prompt_tokens = sum(m.prompt_tokens for m in present)
    prompt_ms = sum(m.prompt_ms for m in present)
    completion_tokens = sum(m.completion_tokens for m in present)
    eval_ms = sum(m.eval_ms for m in present)
    return Metrics(
        prompt_tokens=prompt_tokens,
        prompt_eval_tokens=sum(m.prompt_eval_tokens for m in present),
        prompt_ms=round(prompt_ms, 3),
        prompt_tokens_per_s=round(prompt_tokens / prompt_ms * 1000.0, 3) if prompt_ms else 0.0,
        completion_tokens=completion_tokens,
        eval_ms=round(eval_ms, 3),
        eval_tokens_per_s=round(completion_tokens / eval_ms * 1000.0, 3) if eval_ms else 0.0,
        total_ms=round(sum(m.total_ms for m in present), 3),
        load_ms=engine.load_ms if loaded_now else None,
        cold_start=cold_start,
        n_threads=engine.n_threads,
        peak_rss_mb=peak_rss_mb(),
    )
