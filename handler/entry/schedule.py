"""Scheduled batch runs (EventBridge Scheduler): queue inline items, work through queued requests, then the open
batch files' progress and, for finished ones, their output files (handler/usecases/batch_files.py)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.core.errors import InvalidRequest
from handler.core.observability import logger, metrics
from handler.entry.runtime import deadline_of, error_answer, get_service, lease_owner, preload
from handler.storage.bucket import BatchBucket
from handler.usecases import batch_files, queued_work, queueing


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def schedule_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """A scheduled batch run: queue the event's inline ``items``, then work through queued requests.

    ``{"items": [request, ...], "dispatch": true}``; both keys are optional. With ``dispatch`` (the
    default) and a work queue, what this run cannot fit goes to the queue's workers.
    """
    try:
        event = event if isinstance(event, dict) else {}
        service = get_service()
        report = None
        if event.get("items"):
            if not isinstance(event["items"], list):
                raise InvalidRequest("items must be a list of requests")
            report = queueing.queue_requests(service, enumerate(event["items"], start=1))
        summary = queued_work.run(
            service, lease_owner(context), deadline_of(context), dispatch=bool(event.get("dispatch", True))
        )
        bucket = service.settings.batch_bucket
        batches = batch_files.check_open(service, BatchBucket(bucket)) if bucket else None
        return {"enqueued": report.as_dict() if report else None, "run": summary.as_dict(), "batches": batches}
    except Exception as exc:  # every failure is answered in the one error shape, never as a traceback
        return error_answer(exc)


preload()
