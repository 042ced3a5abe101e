"""A generation's result: its completion checked against the response format, measured, and ready to answer and
to store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handler.core.observability import logger
from handler.domain.answers import Answer, Status
from handler.domain.requests import TextRequest
from handler.domain.stored_item import done_fields
from handler.engine import Completion, Engine
from handler.formats.json_output import check_output
from handler.formats.prompts import PROMPT_VERSION
from handler.usecases.metrics import emit_generation, generation_metrics


@dataclass(frozen=True)
class GenerationResult:
    """A finished generation, ready to answer and to store."""

    answer: Answer
    fields: dict[str, Any]


def generation_result(
    item_id: str,
    request: TextRequest,
    completion: Completion,
    engine: Engine,
    loaded_now: bool,
    cold_start: bool,
) -> GenerationResult:
    """The answer and stored fields of one completion; OutputInvalid when it is not the JSON asked for."""
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
    fields = done_fields(
        request, completion.text, completion.finish_reason, metrics, engine.info, prompt_version=PROMPT_VERSION
    )
    return GenerationResult(answer, fields)
