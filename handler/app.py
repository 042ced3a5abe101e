"""Lambda entry point: Powertools decorators, parse, dispatch; errors become one answer shape."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.config import get_settings
from handler.engine import get_engine
from handler.errors import ServiceError
from handler.observability import logger, metrics
from handler.service import TextService, parse_request
from handler.store import ResultStore


@lru_cache(maxsize=1)
def get_service() -> TextService:
    """The process-wide service, built from the settings on first use."""
    settings = get_settings()
    store = ResultStore(settings.table_name, ttl_days=settings.result_ttl_days) if settings.table_name else None
    return TextService(settings, store)


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Answer a direct-invoke request: ``{"task": "summarize" | "translate" | "chat", ...}``."""
    try:
        request = parse_request(event)
        return get_service().answer(request).model_dump(mode="json")
    except ServiceError as exc:
        logger.warning("request failed", error_type=exc.error_type, error=exc.message)
        return exc.to_answer()
    except Exception:
        # Anything unforeseen is logged with its traceback here and answered without it.
        logger.exception("unexpected failure")
        return {"error": {"type": "InternalError", "message": "internal error; see the function's logs"}}


def _preload() -> None:
    # PRELOAD_MODEL=true loads during init (worth it where every request generates); the default is
    # lazy because the model load can exceed Lambda's 10 s init limit and cached answers need no model.
    try:
        settings = get_settings()
        if settings.preload_model:
            get_engine(settings)
    except ServiceError as exc:
        # Not fatal here: the first request reports the same error in its answer.
        logger.warning("settings or model not ready at init", error=exc.message)


_preload()
