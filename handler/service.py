"""The request path: answer from the table when done, else generate within a deadline, or queue the work.

Nothing is lost: a request that cannot finish in time becomes a PENDING item (and a message on the
work queue when one is configured); a worker claims it, generates and completes it under a lease.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from handler import openai_api
from handler.config import Settings
from handler.documents import (
    CHUNK_TOKENS,
    PROMPT_ROOM_TOKENS,
    check_document,
    generate_document,
    needs_chunks,
    tell_waiting_documents,
)
from handler.engine import (
    Completion,
    Engine,
    PromptTokens,
    Tokenizer,
    get_engine,
    loaded_engine,
    model_identity,
    peak_rss_mb,
    prompt_counter,
)
from handler.errors import (
    DeadlineReached,
    GenerationError,
    InvalidRequest,
    ServiceError,
    describe_problems,
    field_problems,
)
from handler.items import Status, done_fields, pending_fields
from handler.observability import emit_cached, emit_generation, logger
from handler.schemas import TASKS, Answer, Metrics, SummarizeRequest, TextRequest, TranslateRequest, request_adapter
from handler.store import ResultStore, result_too_large
from handler.structured import check_output
from handler.tasks import PROMPT_VERSION, build_messages
from handler.workqueue import WorkQueue

EngineProvider = Callable[[Settings], tuple[Engine, bool]]

#: How often a caller waiting for another caller's generation of the same request reads its item.
SINGLE_FLIGHT_POLL_S = 0.25
#: Lambda's longest invocation: the lease of a generation without a deadline.
MAX_INVOCATION_S = 900.0


#: Why a request that asks for nothing to be written cannot be queued.
NOT_QUEUEABLE = (
    "store: false writes nothing, but a queued request is stored until it is done; "
    "send store: true to queue it, or ask for a synchronous answer"
)


def parse_request(event: Any) -> TextRequest:
    """A typed request from a direct-invoke event or API body; errors name every bad field."""
    if not isinstance(event, dict):
        raise InvalidRequest(f"event must be a JSON object, got {type(event).__name__}")
    try:
        return request_adapter.validate_python(event)
    except ValidationError as exc:
        problems = field_problems(exc.errors(include_url=False), TASKS)
        raise InvalidRequest(describe_problems(problems), fields=problems) from exc


def request_id(request: TextRequest, model_sha256: str) -> str:
    """Deterministic id of a request: task, inputs, output-changing options, model and prompt version."""
    identity = {"prompt_version": PROMPT_VERSION, "model_sha256": model_sha256, "request": request.identity()}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Generated:
    """A finished generation, ready to answer and to store."""

    answer: Answer
    fields: dict[str, Any]


class TextService:
    """Answers requests with one engine per process, one results table and an optional work queue."""

    def __init__(
        self,
        settings: Settings,
        store: ResultStore | None,
        queue: WorkQueue | None = None,
        engine_provider: EngineProvider = get_engine,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self._engine_provider = engine_provider
        self._served_first = False

    # -- lookups ---------------------------------------------------------------------------------

    def request_id(self, request: TextRequest) -> str:
        """The request's id (hashes the model file once per process unless its hash is given)."""
        identity = model_identity(self.settings.model_path, self.settings.model_sha256)
        return request_id(request, identity.sha256)

    def served_model(self) -> str:
        """The served model's id, as GET /v1/models gives it and OpenAI requests must name it."""
        return openai_api.model_id(model_identity(self.settings.model_path, self.settings.model_sha256).file)

    def lease_s(self, deadline: float | None) -> float:
        """How long a claim made now lasts: until the deadline (or Lambda's longest invocation), plus the margin."""
        remaining_s = deadline - time.monotonic() if deadline is not None else MAX_INVOCATION_S
        return max(remaining_s, 0.0) + self.settings.safety_margin_s

    def lookup(self, item_id: str) -> Answer | None:
        """The stored state of a request, or None; never loads the model."""
        if self.store is None:
            return None
        item = self.store.get(item_id)
        return item.to_answer(cached=True) if item is not None else None

    def predicted_seconds(self, request: TextRequest, steps: bool = False) -> float:
        """How long generating this request should take here, from its token count and measured speeds.

        With ``steps``, a document counts only its first batch of chunk requests: it goes on from its
        stored chunks, so any invocation that fits one batch makes progress.
        """
        counter = prompt_counter(self.settings)
        prompt_tokens = check_request(counter, request)
        if steps and needs_chunks(counter, request):
            prompt_tokens = min(prompt_tokens, (CHUNK_TOKENS + PROMPT_ROOM_TOKENS) * self.settings.batch_parallel)
        engine = loaded_engine()
        settings = self.settings
        if engine is None:
            load_s = settings.expected_load_s
            prompt_speed, eval_speed = settings.expected_prompt_tokens_per_s, settings.expected_eval_tokens_per_s
        else:
            load_s = 0.0
            prompt_speed = engine.measured_prompt_tokens_per_s or settings.expected_prompt_tokens_per_s
            eval_speed = engine.measured_eval_tokens_per_s or settings.expected_eval_tokens_per_s
        return load_s + prompt_tokens / prompt_speed + request.options.max_tokens / eval_speed

    # -- answering -------------------------------------------------------------------------------

    def answer(
        self,
        request: TextRequest,
        deadline: float | None = None,
        *,
        respond_async: bool = False,
        queue_if_late: bool = False,
    ) -> Answer:
        """The one way a request is answered, whatever the entry point.

        From the table when its result is done (one read); queued when the caller asks for it
        (``mode: async`` or ``respond_async``) or, with ``queue_if_late``, when generating is predicted
        to pass ``deadline``; otherwise generated, and queued after all if the deadline comes first.
        """
        cold_start = self.next_is_cold_start()
        item_id = self.request_id(request)
        stored = self.lookup(item_id)
        if stored is not None and stored.status == Status.DONE:
            emit_cached(request.task)
            logger.info("answered from table", id=item_id, task=request.task)
            return stored
        if respond_async or request.mode == "async":
            if not request.options.store:
                raise InvalidRequest(NOT_QUEUEABLE, fields=[{"field": "options.store", "problem": NOT_QUEUEABLE}])
            return self.enqueue(item_id, request)
        if queue_if_late and deadline is not None:
            predicted_s, budget_s = self.predicted_seconds(request), deadline - time.monotonic()
            if predicted_s > budget_s:
                logger.info(
                    "queued: predicted beyond the budget", id=item_id, predicted_s=predicted_s, budget_s=budget_s
                )
                return self.enqueue(item_id, request)
        if self.store is None or not request.options.store:
            try:
                generated = self.generate(item_id, request, cold_start, deadline)
            except DeadlineReached:
                generated = None
            if generated is None:
                return self.enqueue(item_id, request)  # which says why it cannot be queued
            return generated.answer
        return self._answer_once(item_id, request, cold_start, deadline)

    def _answer_once(self, item_id: str, request: TextRequest, cold_start: bool, deadline: float | None) -> Answer:
        """Generate a stored request once, however many callers ask for it at the same time.

        The table is the lock, as it is for queued work: the first caller takes the item with a
        conditional write and generates; the others wait for its result and answer it as cached (nothing
        was generated for them), or answer its state (RUNNING: the API's 202) when their time is up.
        """
        store = self.store
        assert store is not None
        check_request(prompt_counter(self.settings), request)  # refused before anything is written
        owner = f"caller-{uuid.uuid4()}"
        lease_s = self.lease_s(deadline)
        while True:
            created = store.claim_to_generate(item_id, owner, lease_s, pending_fields(request))
            if created is not None:
                return self._generate_claimed(item_id, request, cold_start, deadline, owner, created)
            item = store.get(item_id)
            if item is not None and item.status == Status.DONE:
                emit_cached(request.task)
                logger.info("answered from table after waiting", id=item_id, task=request.task)
                return item.to_answer(cached=True)
            if deadline is not None and time.monotonic() + SINGLE_FLIGHT_POLL_S >= deadline:
                if item is not None:
                    return item.to_answer(cached=False)
                raise DeadlineReached("the request was being generated by another caller when time ran out")
            if item is not None and item.status == Status.RUNNING:
                time.sleep(SINGLE_FLIGHT_POLL_S)  # another caller holds it; any other state is claimed again

    def _generate_claimed(
        self, item_id: str, request: TextRequest, cold_start: bool, deadline: float | None, owner: str, created: bool
    ) -> Answer:
        """Generate an item this caller holds and finish it: DONE, queued when late, given back on failure."""
        store = self.store
        assert store is not None
        try:
            generated = self.generate(item_id, request, cold_start, deadline)
        except DeadlineReached:
            generated = None
        except BaseException as exc:
            self._give_back(item_id, owner, created, exc)
            raise
        if generated is None:
            # Not finished in time: queued for a worker like any late request; nothing half-made is kept.
            self.release(item_id, owner, None)
            if self.queue is not None:
                self.queue.send([item_id])
            logger.info("deadline reached; request queued", id=item_id, task=request.task)
            return self.lookup(item_id) or Answer(id=item_id, task=request.task, status=Status.PENDING, stored=True)
        oversized = result_too_large(generated.fields)
        if oversized is not None:
            self._give_back(item_id, owner, created, GenerationError(oversized))
            raise GenerationError(oversized)
        finished = store.complete(item_id, owner, generated.fields)
        tell_waiting_documents(self, finished)
        if finished is not None:
            # What every later caller of this id will read, with the attempt it took.
            return finished.to_answer(cached=False)
        # The lease ran out and another holder took the item: its result is the one answer for this id.
        logger.info("lease lost before the result was written", id=item_id)
        return self.lookup(item_id) or generated.answer

    def _give_back(self, item_id: str, owner: str, created: bool, exc: BaseException) -> None:
        """After a failed generation: an item this caller created is removed (the caller has the error);
        one that was queued before goes back to the queue with the error, counting the attempt."""
        store = self.store
        assert store is not None
        try:
            # A document may wait on an item this caller created: then it is given back, not removed.
            if not (created and store.forget(item_id, owner)):
                error = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}"
                self.release(item_id, owner, error)
        except ServiceError as cleanup:
            # The lease expires on its own; the caller's error is the one that matters.
            logger.warning("could not give back a failed request", id=item_id, error=cleanup.log_message)

    def release(self, item_id: str, owner: str, error: str | None, max_attempts: int | None = None) -> Status | None:
        """Give a claimed item back (PENDING, or FAILED with its error after ``max_attempts``, by default the
        setting); documents waiting on an item that failed for good are told (handler/documents.py)."""
        assert self.store is not None
        attempts = self.settings.max_attempts if max_attempts is None else max_attempts
        status = self.store.release(item_id, owner, error, attempts)
        if status == Status.FAILED:
            tell_waiting_documents(self, self.store.get(item_id))
        return status

    def enqueue(self, item_id: str, request: TextRequest) -> Answer:
        """Queue a request for a worker: a PENDING item, and its id on the work queue when there is one."""
        if not request.options.store:
            # Nothing is written for such a request: it is answered in time or not at all.
            raise DeadlineReached("the request cannot finish in time, and with options.store false it is not queued")
        if self.store is None:
            raise DeadlineReached("the request cannot finish in time and there is no results table to queue it in")
        # Nothing is promised that a worker would refuse: the prompt is counted before it is queued.
        check_request(prompt_counter(self.settings), request)
        created = self.store.put_pending(item_id, pending_fields(request))
        if created and self.queue is not None:
            self.queue.send([item_id])
        if not created:
            existing = self.lookup(item_id)
            if existing is not None:
                return existing
        return Answer(id=item_id, task=request.task, status=Status.PENDING, stored=True)

    def generate(
        self,
        item_id: str,
        request: TextRequest,
        cold_start: bool,
        deadline: float | None,
        held_by: str | None = None,
    ) -> Generated | None:
        """Generate an answer; None when the deadline came first (no partial result is kept).

        ``held_by``: the owner of a queued item's claim, under which a document may hand its chunk
        requests to the workers (handler/documents.py raises DocumentWaiting then).
        """
        engine, loaded_now = self.engine()
        if needs_chunks(engine, request):
            assert isinstance(request, SummarizeRequest | TranslateRequest)
            return generate_document(self, item_id, request, engine, loaded_now, cold_start, deadline, held_by)
        prompt = checked_prompt(engine, request)
        completion = engine.generate(prompt, request.options, deadline=deadline)
        if completion.finish_reason == "deadline":
            return None
        return self.generated(item_id, request, completion, engine, loaded_now, cold_start)

    def engine(self) -> tuple[Engine, bool]:
        """The process's engine, loaded on first use; the flag says whether this call loaded it."""
        return self._engine_provider(self.settings)

    def next_is_cold_start(self) -> bool:
        """Whether the result about to be served is this environment's first (then it no longer is)."""
        cold_start, self._served_first = not self._served_first, True
        return cold_start

    def generated(
        self,
        item_id: str,
        request: TextRequest,
        completion: Completion,
        engine: Engine,
        loaded_now: bool,
        cold_start: bool,
    ) -> Generated:
        metrics = generation_metrics(completion, engine, loaded_now, cold_start)
        emit_generation(request.task, metrics)
        # JSON output is answered and stored only when it is what the response format asks for.
        check_output(completion.text, request.options.response_format, completion.finish_reason)
        logger.info(
            "generation finished",
            id=item_id,
            task=request.task,
            finish_reason=completion.finish_reason,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            eval_tokens_per_s=metrics.eval_tokens_per_s,
        )
        answer = Answer(
            id=item_id,
            task=request.task,
            status=Status.DONE,
            output=completion.text,
            finish_reason=completion.finish_reason,
            metrics=metrics,
            model=engine.info,
        )
        return Generated(answer, done_fields(request, completion.text, completion.finish_reason, metrics, engine.info))


def check_request(counter: Engine | Tokenizer, request: TextRequest) -> int:
    """Refuse, before anything is promised, a request that cannot be answered; its prompt tokens.

    A text answered chunk by chunk (handler/documents.py) is checked against the document limit: its
    tokens are returned, the prompts of its chunks and their summaries being about as many.
    """
    if needs_chunks(counter, request):
        assert isinstance(request, SummarizeRequest | TranslateRequest)
        return check_document(counter, request)
    return len(checked_prompt(counter, request).tokens)


def checked_prompt(counter: Engine | Tokenizer, request: TextRequest) -> PromptTokens:
    """The request's prompt tokens, refused before any evaluation if they cannot fit the context."""
    prompt = counter.build_prompt(build_messages(request))
    counter.check_fits(prompt, request.options.max_tokens)
    return prompt


def generation_metrics(completion: Completion, engine: Engine, loaded_now: bool, cold_start: bool) -> Metrics:
    """The metrics stored and emitted for one generation."""
    return Metrics(
        prompt_tokens=completion.prompt_tokens,
        prompt_eval_tokens=completion.prompt_eval_tokens,
        prompt_ms=completion.prompt_ms,
        prompt_tokens_per_s=completion.prompt_tokens_per_s,
        completion_tokens=completion.completion_tokens,
        eval_ms=completion.eval_ms,
        eval_tokens_per_s=completion.eval_tokens_per_s,
        total_ms=completion.total_ms,
        load_ms=engine.load_ms if loaded_now else None,
        cold_start=cold_start,
        n_threads=engine.n_threads,
        peak_rss_mb=peak_rss_mb(),
    )
