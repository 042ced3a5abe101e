"""The request path: answer from the table when done, else generate within a deadline, or queue the work.

Nothing is lost: a request that cannot finish in time becomes a PENDING item (and a message on the
work queue when one is configured); a worker claims it, generates and completes it under a lease.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from handler.core.errors import DeadlineReached, GenerationError, InvalidRequest, ServiceError
from handler.core.observability import logger
from handler.core.settings import Settings
from handler.engine import Engine, TextSink, get_engine, loaded_engine, prompt_counter
from handler.formats.schemas import NOT_QUEUEABLE, Answer, SummarizeRequest, TextRequest, TranslateRequest
from handler.storage.dynamo import result_too_large
from handler.storage.items import Status, pending_fields
from handler.storage.table import ResultStore
from handler.storage.workqueue import WorkQueue
from handler.usecases.documents import generate_document
from handler.usecases.generation import Generated, finished
from handler.usecases.metrics import emit_cached
from handler.usecases.plan import CHUNK_TOKENS, PROMPT_ROOM_TOKENS, Plan, plan
from handler.usecases.results import Results

EngineProvider = Callable[[Settings], tuple[Engine, bool]]

#: How often a caller waiting for another caller's generation of the same request reads its item.
SINGLE_FLIGHT_POLL_S = 0.25


@dataclass(frozen=True)
class _Job:
    """One stored request being answered: its id, its plan, its deadline, and where its text goes as it is made."""

    item_id: str
    request: TextRequest
    planned: Plan
    cold_start: bool
    deadline: float | None
    sink: TextSink | None = None


class TextService(Results):
    """Answers requests with one engine per process, one results table and an optional work queue."""

    def __init__(
        self,
        settings: Settings,
        store: ResultStore | None,
        queue: WorkQueue | None = None,
        engine_provider: EngineProvider = get_engine,
    ) -> None:
        super().__init__(settings, store, queue)
        self._engine_provider = engine_provider
        self._served_first = False

    # -- predictions -----------------------------------------------------------------------------

    def predicted_seconds(self, request: TextRequest, steps: bool = False, planned: Plan | None = None) -> float:
        """How long generating this request should take here, from its token count and measured speeds.

        With ``steps``, a document counts only its first batch of chunk requests: it goes on from its
        stored chunks, so any invocation that fits one batch makes progress.
        """
        planned = planned or self.plan(request)
        prompt_tokens = planned.prompt_tokens
        if steps and planned.document:
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

    def plan(self, request: TextRequest) -> Plan:
        """One request or a document (handler/usecases/plan.py), counted without loading the model; the
        request is refused here when it cannot be answered, before anything is written."""
        return plan(prompt_counter(self.settings), request)

    # -- answering -------------------------------------------------------------------------------

    def answer(
        self,
        request: TextRequest,
        deadline: float | None = None,
        *,
        respond_async: bool = False,
        queue_if_late: bool = False,
        sink: TextSink | None = None,
    ) -> Answer:
        """The one way a request is answered, whatever the entry point.

        From the table when its result is done (one read); queued when the caller asks for it
        (``mode: async`` or ``respond_async``) or, with ``queue_if_late``, when generating is predicted
        to pass ``deadline``; otherwise generated, and queued after all if the deadline comes first.
        Whether it is one request or a document is decided once, here, and handed down. ``sink`` receives a
        generated answer's text as it is made (a streamed answer; an answer from the table, a document or
        another caller's generation reaches it only whole, in the answer).
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
        planned = self.plan(request)  # refused here when it cannot be answered, before anything is written
        if queue_if_late and deadline is not None and self._late(item_id, request, planned, deadline):
            return self.enqueue(item_id, request, planned)
        if self.store is None or not request.options.store:
            try:
                generated = self.generate(item_id, request, cold_start, deadline, planned=planned, sink=sink)
            except DeadlineReached:
                generated = None
            if generated is None:
                return self.enqueue(item_id, request, planned)  # which says why it cannot be queued
            return generated.answer
        return self._answer_once(_Job(item_id, request, planned, cold_start, deadline, sink))

    def _late(self, item_id: str, request: TextRequest, planned: Plan, deadline: float) -> bool:
        """Whether generating is predicted to pass the deadline (then the request is queued at once)."""
        predicted_s, budget_s = self.predicted_seconds(request, planned=planned), deadline - time.monotonic()
        if predicted_s > budget_s:
            logger.info("queued: predicted beyond the budget", id=item_id, predicted_s=predicted_s, budget_s=budget_s)
            return True
        return False

    def _answer_once(self, job: _Job) -> Answer:
        """Generate a stored request once, however many callers ask for it at the same time.

        The table is the lock, as it is for queued work: the first caller takes the item with a
        conditional write and generates; the others wait for its result and answer it as cached (nothing
        was generated for them), or answer its state (RUNNING: the API's 202) when their time is up.
        """
        store = self.store
        assert store is not None
        item_id, request, deadline = job.item_id, job.request, job.deadline
        owner = f"caller-{uuid.uuid4()}"
        lease_s = self.lease_s(deadline)
        while True:
            created = store.claim_to_generate(item_id, owner, lease_s, pending_fields(request))
            if created is not None:
                return self._generate_claimed(job, owner, created)
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

    def _generate_claimed(self, job: _Job, owner: str, created: bool) -> Answer:
        """Generate an item this caller holds and finish it: DONE, queued when late, given back on failure."""
        item_id, request, deadline = job.item_id, job.request, job.deadline
        try:
            generated = self.generate(item_id, request, job.cold_start, deadline, planned=job.planned, sink=job.sink)
        except DeadlineReached:
            generated = None
        except BaseException as exc:
            self._give_back(item_id, owner, created, exc)
            raise
        if generated is None:
            # Not finished in time: queued for a worker like any late request; nothing half-made is kept.
            self.requeue(item_id, owner)
            logger.info("deadline reached; request queued", id=item_id, task=request.task)
            return self.lookup(item_id) or Answer(id=item_id, task=request.task, status=Status.PENDING, stored=True)
        oversized = result_too_large(generated.fields)
        if oversized is not None:
            self._give_back(item_id, owner, created, GenerationError(oversized))
            raise GenerationError(oversized)
        done = self.complete(item_id, owner, generated.fields)
        if done is not None:
            # What every later caller of this id will read, with the attempt it took.
            return done.to_answer(cached=False)
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

    def enqueue(self, item_id: str, request: TextRequest, planned: Plan | None = None) -> Answer:
        """Queue a request for a worker: a PENDING item, and its id on the work queue when there is one."""
        if not request.options.store:
            # Nothing is written for such a request: it is answered in time or not at all.
            raise DeadlineReached("the request cannot finish in time, and with options.store false it is not queued")
        if self.store is None:
            raise DeadlineReached("the request cannot finish in time and there is no results table to queue it in")
        if planned is None:
            self.plan(request)  # nothing is promised that a worker would refuse
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
        planned: Plan | None = None,
        sink: TextSink | None = None,
    ) -> Generated | None:
        """Generate an answer; None when the deadline came first (no partial result is kept).

        ``planned``: the request's plan when the caller has taken it (else it is taken here, once).
        ``held_by``: the owner of a queued item's claim, under which a document may hand its chunk
        requests to the workers (handler/usecases/documents.py raises DocumentWaiting then).
        """
        engine, loaded_now = self.engine()
        planned = planned or plan(engine, request)
        if planned.document:
            assert isinstance(request, SummarizeRequest | TranslateRequest)
            return generate_document(self, item_id, request, engine, loaded_now, cold_start, deadline, held_by)
        assert planned.prompt is not None  # one generation's plan holds its checked prompt
        completion = engine.generate(planned.prompt, request.options, deadline=deadline, sink=sink)
        if completion.finish_reason == "deadline":
            return None
        return finished(item_id, request, completion, engine, loaded_now, cold_start)

    def engine(self) -> tuple[Engine, bool]:
        """The process's engine, loaded on first use; the flag says whether this call loaded it."""
        return self._engine_provider(self.settings)

    def next_is_cold_start(self) -> bool:
        """Whether the result about to be served is this environment's first (then it no longer is)."""
        cold_start, self._served_first = not self._served_first, True
        return cold_start
