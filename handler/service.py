"""The request path: parse, answer from the table when done, else generate, store and answer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from handler.config import Settings
from handler.engine import Completion, Engine, get_engine, model_identity, peak_rss_mb
from handler.errors import InvalidRequest, describe_validation_error
from handler.observability import emit_cached, emit_generation, logger
from handler.schemas import (
    TASKS,
    Answer,
    ChatRequest,
    Metrics,
    ModelInfo,
    SummarizeRequest,
    TranslateRequest,
    request_adapter,
)
from handler.store import DONE, ResultStore
from handler.tasks import PROMPT_VERSION, build_messages

TextRequest = SummarizeRequest | TranslateRequest | ChatRequest
EngineProvider = Callable[[Settings], tuple[Engine, bool]]


def parse_request(event: Any) -> TextRequest:
    """A typed request from a direct-invoke event; errors name every bad field."""
    if not isinstance(event, dict):
        raise InvalidRequest(f"event must be a JSON object, got {type(event).__name__}")
    try:
        return request_adapter.validate_python(event)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_error(exc, TASKS)) from exc


def request_id(request: TextRequest, model_sha256: str) -> str:
    """Deterministic id of a request: task, inputs, output-changing options, model and prompt version."""
    identity = {
        "prompt_version": PROMPT_VERSION,
        "model_sha256": model_sha256,
        "request": request.model_dump(mode="json", exclude={"options": {"store"}}),
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def answer_from_item(item: dict[str, Any], cached: bool) -> Answer:
    """The answer a stored item gives."""
    return Answer(
        id=item["id"],
        task=item["task"],
        status=item["status"],
        output=item.get("output"),
        finish_reason=item.get("finish_reason"),
        cached=cached,
        stored=True,
        metrics=Metrics.model_validate(item["metrics"]) if item.get("metrics") else None,
        model=ModelInfo.model_validate(item["model"]) if item.get("model") else None,
    )


class TextService:
    """Answers requests with one engine per process and one results table."""

    def __init__(self, settings: Settings, store: ResultStore | None, engine_provider: EngineProvider = get_engine):
        self.settings = settings
        self.store = store
        self._engine_provider = engine_provider
        self._served_first = False

    def answer(self, request: TextRequest) -> Answer:
        """Answer from the table when the result is done; otherwise generate and store it."""
        cold_start, self._served_first = not self._served_first, True
        identity = model_identity(self.settings.model_path, self.settings.model_sha256)
        item_id = request_id(request, identity.sha256)
        if self.store is not None:
            item = self.store.get(item_id)
            if item is not None and item["status"] == DONE:
                emit_cached(request.task)
                logger.info("answered from table", id=item_id, task=request.task)
                return answer_from_item(item, cached=True)

        engine, loaded_now = self._engine_provider(self.settings)
        prompt = engine.build_prompt(build_messages(request))
        engine.check_fits(prompt, request.options.max_tokens)
        completion = engine.generate(prompt, request.options)
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
            status=DONE,
            output=completion.text,
            finish_reason=completion.finish_reason,
            metrics=metrics,
            model=engine.info,
        )
        if self.store is None or not request.options.store:
            return answer
        fields = {
            "task": request.task,
            "request": request.model_dump(mode="json"),
            "output": completion.text,
            "finish_reason": completion.finish_reason,
            "metrics": metrics.model_dump(mode="json"),
            "model": engine.info.model_dump(mode="json"),
            "prompt_version": PROMPT_VERSION,
            "attempts": 1,
        }
        if self.store.put_done(item_id, fields):
            return answer.model_copy(update={"stored": True})
        # Another writer finished the same request first: its item is the one answer for this id.
        logger.info("result already stored by another writer", id=item_id)
        existing = self.store.get(item_id)
        return answer_from_item(existing, cached=True) if existing else answer


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
