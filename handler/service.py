"""The request path: answer from the table when done, else generate within a deadline, or queue the work.

Nothing is lost: a request that cannot finish in time becomes a PENDING item (and a message on the
work queue when one is configured); a worker claims it, generates and completes it under a lease.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from handler.config import Settings
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
from handler.errors import DeadlineReached, InvalidRequest, describe_problems, field_problems
from handler.items import Status, done_fields, pending_fields
from handler.observability import emit_cached, emit_generation, logger
from handler.schemas import TASKS, Answer, Metrics, TextRequest, request_adapter
from handler.store import ResultStore
from handler.tasks import PROMPT_VERSION, build_messages
from handler.workqueue import WorkQueue

EngineProvider = Callable[[Settings], tuple[Engine, bool]]


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

    def lookup(self, item_id: str) -> Answer | None:
        """The stored state of a request, or None; never loads the model."""
        if self.store is None:
            return None
        item = self.store.get(item_id)
        return item.to_answer(cached=True) if item is not None else None

    def predicted_seconds(self, request: TextRequest) -> float:
        """How long generating this request should take here, from its token count and measured speeds."""
        prompt_tokens = len(checked_prompt(prompt_counter(self.settings), request).tokens)
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
        try:
            generated = self.generate(item_id, request, cold_start, deadline)
        except DeadlineReached:
            generated = None
        if generated is None:
            logger.info("deadline reached; request queued", id=item_id, task=request.task)
            return self.enqueue(item_id, request)
        if self.store is None or not request.options.store:
            return generated.answer
        if self.store.put_done(item_id, generated.fields):
            return generated.answer.model_copy(update={"stored": True})
        # Another writer finished the same request first: its item is the one answer for this id.
        logger.info("result already stored by another writer", id=item_id)
        return self.lookup(item_id) or generated.answer

    def enqueue(self, item_id: str, request: TextRequest) -> Answer:
        """Queue a request for a worker: a PENDING item, and its id on the work queue when there is one."""
        if not request.options.store:
            # Nothing is written for such a request: it is answered in time or not at all.
            raise DeadlineReached("the request cannot finish in time, and with options.store false it is not queued")
        if self.store is None:
            raise DeadlineReached("the request cannot finish in time and there is no results table to queue it in")
        # Nothing is promised that a worker would refuse: the prompt is counted before it is queued.
        checked_prompt(prompt_counter(self.settings), request)
        created = self.store.put_pending(item_id, pending_fields(request))
        if created and self.queue is not None:
            self.queue.send([item_id])
        if not created:
            existing = self.lookup(item_id)
            if existing is not None:
                return existing
        return Answer(id=item_id, task=request.task, status=Status.PENDING, stored=True)

    def generate(
        self, item_id: str, request: TextRequest, cold_start: bool, deadline: float | None
    ) -> Generated | None:
        """Generate an answer; None when the deadline came first (no partial result is kept)."""
        engine, loaded_now = self.engine()
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
