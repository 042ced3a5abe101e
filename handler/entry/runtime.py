"""Runtime wiring shared by every entry point: the process-wide service, deadlines and the error answer.

Entry modules (one per Lambda function: direct.py, api.py, worker.py, schedule.py, batch_bucket.py) import this
module and never each other, so importing one entry point never runs another's initialisation.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.core.errors import ServiceError
from handler.core.observability import logger
from handler.core.settings import get_settings
from handler.engine import get_engine
from handler.usecases.text_service import TextService, service_from_settings


@lru_cache(maxsize=1)
def get_service() -> TextService:
    """The process-wide service, built from the settings on first use."""
    return service_from_settings(get_settings())


def deadline_of(context: LambdaContext, budget_s: float | None = None) -> float:
    """A ``time.monotonic()`` deadline: the invocation's remaining time (or a smaller budget) less the margin."""
    available = context.get_remaining_time_in_millis() / 1000.0
    if budget_s is not None:
        available = min(available, budget_s)
    return time.monotonic() + max(available - get_settings().safety_margin_s, 0.0)


def error_answer(exc: Exception) -> dict[str, Any]:
    """The one error shape; unforeseen failures are logged with their traceback and answered without it."""
    if isinstance(exc, ServiceError):
        logger.warning("request failed", error_type=exc.error_type, error=exc.log_message)
        return exc.to_answer()
    logger.exception("unexpected failure")
    return {"error": {"type": "InternalError", "message": "internal error; see the function's logs"}}


def lease_owner(context: LambdaContext) -> str:
    """Who holds a lease: this invocation."""
    return f"{context.function_name}:{context.aws_request_id}"


def preload() -> None:
    """Load the model at init when PRELOAD_MODEL says so; a failure is logged, and answered by the first request."""
    # PRELOAD_MODEL=true loads during init (worth it where every request generates); the default is
    # lazy because the model load can exceed Lambda's 10 s init limit and cached answers need no model.
    try:
        settings = get_settings()
        if settings.preload_model:
            get_engine(settings)
    except ServiceError as exc:
        # Not fatal here: the first request reports the same error in its answer.
        logger.warning("settings or model not ready at init", error=exc.message)
