"""The service (TextService): a request answered from the table when done, else generated within a deadline, or
queued for a worker; and the service assembled from the settings, once for every entry point and script.

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
from handler.domain.answers import Answer, Status
from handler.domain.requests import NOT_QUEUEABLE, SummarizeRequest, TextRequest, TranslateRequest
from handler.domain.stored_item import pending_fields
from handler.engine import Engine, TextSink, get_engine, loaded_engine, model_identity, prompt_counter
from handler.formats import openai_chat
from handler.storage.attributes import result_too_large
from handler.storage.result_store import ResultStore
from handler.storage.workqueue import WorkQueue
from handler.usecases.documents import generate_document
from handler.usecases.generation_result import GenerationResult, generation_result
from handler.usecases.metrics import emit_cached
from handler.usecases.preparation import CHUNK_TOKENS, PROMPT_ROOM_TOKENS, PreparedRequest, prepare
from handler.usecases.stored_requests import StoredRequests

EngineProvider = Callable[[Settings], tuple[Engine, bool]]

#: How often a caller waiting for another caller's generation of the same request reads its item.
SINGLE_FLIGHT_POLL_S = 0.25


@dataclass(frozen=True)
class _Job:
    """One stored request being answered: its id, how it is answered, its deadline, and where its text goes as it
    is made."""

    item_id: str
    request: TextRequest
    prepared: PreparedRequest
    cold_start: bool
    deadline: float | None
    sink: TextSink | None = None


class TextService:
    """Answers requests with one engine per process, one results table and an optional work queue."""

    def __init__(
        self,
        settings: Settings,
        table: ResultStore | None,
        queue: WorkQueue | None = None,
        engine_provider: EngineProvider = get_engine,
    ) -> None:
        self.settings = settings
        #: The results table and the work queue, with the rules that end requests (handler/usecases/stored_requests.py).
        self.stored_requests = StoredRequests(settings, table, queue)
        self._engine_provider = engine_provider
        self._served_first = False

    # -- ids and lookups -------------------------------------------------------------------------

    def request_id(self, request: TextRequest) -> str:
        """The request's id (hashes the model file once per process unless its hash is given)."""
        return self.stored_requests.request_id(request)

    def lookup(self, item_id: str) -> Answer | None:
        """The stored state of a request, or None; never loads the model."""
        return self.stored_requests.lookup(item_id)

    def served_model(self) -> str:
        """The served model's id, as GET /v1/models gives it and OpenAI requests must name it."""
        return openai_chat.model_id(model_identity(self.settings.model_path, self.settings.model_sha256).file)

    # -- predictions -----------------------------------------------------------------------------

    def predicted_seconds(
        self, request: TextRequest, steps: bool = False, prepared: PreparedRequest | None = None
    ) -> float:
        """How long generating this request should take here, from its token count and measured speeds.

        With ``steps``, a document counts only its first batch of chunk requests: it goes on from its
        stored chunks, so any invocation that fits one batch makes progress.
        """
        prepared = prepared or self.prepare(request)
        prompt_tokens = prepared.prompt_tokens
        if steps and prepared.document:
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

    def prepare(self, request: TextRequest) -> PreparedRequest:
        """One request or a document (handler/usecases/preparation.py), counted without loading the model; the
        request is refused here when it cannot be answered, before anything is written."""
        return prepare(prompt_counter(self.settings), request)

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
            return self.queue_for_worker(item_id, request)
        prepared = self.prepare(request)  # refused here when it cannot be answered, before anything is written
        if queue_if_late and deadline is not None and self._late(item_id, request, prepared, deadline):
            return self.queue_for_worker(item_id, request, prepared)
        if self.stored_requests.table is None or not request.options.store:
            try:
                generated = self.generate(item_id, request, cold_start, deadline, prepared=prepared, sink=sink)
            except DeadlineReached:
                generated = None
            if generated is None:
                return self.queue_for_worker(item_id, request, prepared)  # which says why it cannot be queued
            return generated.answer
        return self._answer_once(_Job(item_id, request, prepared, cold_start, deadline, sink))

    def _late(self, item_id: str, request: TextRequest, prepared: PreparedRequest, deadline: float) -> bool:
        """Whether generating is predicted to pass the deadline (then the request is queued at once)."""
        predicted_s, budget_s = self.predicted_seconds(request, prepared=prepared), deadline - time.monotonic()
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
        table = self.stored_requests.table
        assert table is not None
        item_id, request, deadline = job.item_id, job.request, job.deadline
        owner = f"caller-{uuid.uuid4()}"
        lease_s = self.stored_requests.lease_s(deadline)
        while True:
            created = table.leases.claim_or_create(item_id, owner, lease_s, pending_fields(request))
            if created is not None:
                return self._generate_claimed(job, owner, created)
            item = table.items.get(item_id)
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
            generated = self.generate(item_id, request, job.cold_start, deadline, prepared=job.prepared, sink=job.sink)
        except DeadlineReached:
            generated = None
        except BaseException as exc:
            self._give_back(item_id, owner, created, exc)
            raise
        if generated is None:
            # Not finished in time: queued for a worker like any late request; nothing half-made is kept.
            self.stored_requests.requeue(item_id, owner)
            logger.info("deadline reached; request queued", id=item_id, task=request.task)
            return self.lookup(item_id) or Answer(id=item_id, task=request.task, status=Status.PENDING, stored=True)
        oversized = result_too_large(generated.fields)
        if oversized is not None:
            self._give_back(item_id, owner, created, GenerationError(oversized))
            raise GenerationError(oversized)
        done = self.stored_requests.complete(item_id, owner, generated.fields)
        if done is not None:
            # What every later caller of this id will read, with the attempt it took.
            return done.to_answer(cached=False)
        # The lease ran out and another holder took the item: its result is the one answer for this id.
        logger.info("lease lost before the result was written", id=item_id)
        return self.lookup(item_id) or generated.answer

    def _give_back(self, item_id: str, owner: str, created: bool, exc: BaseException) -> None:
        """After a failed generation: an item this caller created is removed (the caller has the error);
        one that was queued before goes back to the queue with the error, counting the attempt."""
        table = self.stored_requests.table
        assert table is not None
        try:
            # A document may wait on an item this caller created: then it is given back, not removed.
            if not (created and table.leases.delete_unfinished(item_id, owner)):
                error = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}"
                self.stored_requests.release(item_id, owner, error)
        except ServiceError as cleanup:
            # The lease expires on its own; the caller's error is the one that matters.
            logger.warning("could not give back a failed request", id=item_id, error=cleanup.log_message)

    def queue_for_worker(self, item_id: str, request: TextRequest, prepared: PreparedRequest | None = None) -> Answer:
        """Queue one request for a worker: a PENDING item, and its id on the work queue when there is one."""
        if not request.options.store:
            # Nothing is written for such a request: it is answered in time or not at all.
            raise DeadlineReached("the request cannot finish in time, and with options.store false it is not queued")
        table, queue = self.stored_requests.table, self.stored_requests.queue
        if table is None:
            raise DeadlineReached("the request cannot finish in time and there is no results table to queue it in")
        if prepared is None:
            self.prepare(request)  # nothing is promised that a worker would refuse
        created = table.items.put_pending(item_id, pending_fields(request))
        if created and queue is not None:
            queue.send([item_id])
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
        prepared: PreparedRequest | None = None,
        sink: TextSink | None = None,
    ) -> GenerationResult | None:
        """Generate an answer; None when the deadline came first (no partial result is kept).

        ``prepared``: the request as the caller prepared it (else it is prepared here, once).
        ``held_by``: the owner of a queued item's claim, under which a document may hand its chunk
        requests to the workers (handler/usecases/documents.py raises DocumentWaiting then).
        """
        engine, loaded_now = self.engine()
        prepared = prepared or prepare(engine, request)
        if prepared.document:
            assert isinstance(request, SummarizeRequest | TranslateRequest)
            return generate_document(
                self.stored_requests, item_id, request, engine, loaded_now, cold_start, deadline, held_by
            )
        assert prepared.prompt is not None  # one generation's preparation holds its checked prompt
        completion = engine.generate(prepared.prompt, request.options, deadline=deadline, sink=sink)
        if completion.finish_reason == "deadline":
            return None
        return generation_result(item_id, request, completion, engine, loaded_now, cold_start)

    def engine(self) -> tuple[Engine, bool]:
        """The process's engine, loaded on first use; the flag says whether this call loaded it."""
        return self._engine_provider(self.settings)

    def next_is_cold_start(self) -> bool:
        """Whether the result about to be served is this environment's first (then it no longer is)."""
        cold_start, self._served_first = not self._served_first, True
        return cold_start


def service_from_settings(settings: Settings) -> TextService:
    """The service as the settings describe it: the results table when ``TABLE_NAME`` is set (its items expire
    after ``RESULT_TTL_DAYS``), the work queue when ``WORK_QUEUE_URL`` is."""
    table = ResultStore(settings.table_name, ttl_days=settings.result_ttl_days) if settings.table_name else None
    queue = WorkQueue(settings.work_queue_url) if settings.work_queue_url else None
    return TextService(settings, table, queue)
