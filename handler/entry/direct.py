"""Direct invocations (``sam local invoke``, the SDK): a request event in, its answer (or the error shape) out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.core.observability import logger, metrics
from handler.domain.requests import parse_request
from handler.entry.runtime import deadline_of, error_answer, get_service, preload


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Answer a direct-invoke request: ``{"task": "summarize" | "translate" | "chat", ...}``."""
    try:
        request = parse_request(event)
        return get_service().answer(request, deadline_of(context)).model_dump(mode="json")
    except Exception as exc:  # every failure is answered in the one error shape, never as a traceback
        return error_answer(exc)


preload()
