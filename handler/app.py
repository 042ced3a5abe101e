"""Lambda entry points: Powertools decorators, then one call each. Errors become one answer shape.

- ``lambda_handler``: direct invocations (``sam local invoke``, the SDK) with a request event;
- ``worker_handler``: SQS batches of queued request ids (partial batch failures reported);
- ``schedule_handler``: scheduled batch runs (EventBridge Scheduler), optionally with inline items; then the
  open batch files' progress and, for finished ones, their output files (handler/batch_bucket.py);
- ``batch_file_handler``: S3 events of batch files put under ``input/`` in the batch bucket;
- ``api.lambda_handler``: API Gateway (see handler/api.py).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler import batch_bucket, queued
from handler.config import get_settings
from handler.engine import get_engine
from handler.errors import InvalidRequest, ServiceError, StoreError
from handler.observability import logger, metrics
from handler.runtime import deadline_of, error_answer, get_service
from handler.service import parse_request


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Answer a direct-invoke request: ``{"task": "summarize" | "translate" | "chat", ...}``."""
    try:
        request = parse_request(event)
        return get_service().answer(request, deadline_of(context)).model_dump(mode="json")
    except Exception as exc:  # every failure is answered in the one error shape, never as a traceback
        return error_answer(exc)


class QueuedWorkFailed(Exception):
    """A queued request was not finished in this invocation; SQS delivers it again."""


def _owner(context: LambdaContext) -> str:
    """Who holds a lease: this invocation."""
    return f"{context.function_name}:{context.aws_request_id}"


def _queued_id(record: SQSRecord) -> str:
    raw = record.raw_event.get("body")
    try:
        body = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise QueuedWorkFailed(f"message {record.message_id} carries no request id")
    return str(body["id"])


#: Every failed message is reported in batchItemFailures, also when all failed: raising instead would
#: answer the caller with a traceback, and SQS redelivers exactly the reported messages either way.
_REPORT_EVERY_FAILURE = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def _sqs_event_problem(event: Any) -> str | None:
    """Why ``event`` is not an SQS batch this worker can report on (every record needs its messageId)."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        return "the worker takes an SQS event: an object whose Records is a list of messages"
    if not all(isinstance(record, dict) and isinstance(record.get("messageId"), str) for record in records):
        return "every SQS record must be an object with a messageId"
    return None


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def worker_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Process an SQS batch of queued request ids, decoded together; failures are reported per message."""
    problem = _sqs_event_problem(event)
    if problem is not None:
        return error_answer(InvalidRequest(problem))
    ids = []
    for record in event.get("Records", []):
        # A message without a request id is reported as that message's failure below.
        with contextlib.suppress(ValueError, QueuedWorkFailed):
            ids.append(_queued_id(SQSRecord(record)))
    outcomes = (
        queued.process_many(get_service(), ids, owner=_owner(context), deadline=deadline_of(context)) if ids else {}
    )

    def record_outcome(record: SQSRecord) -> str:
        item_id = _queued_id(record)
        outcome = outcomes[item_id].outcome
        logger.info("queued request processed", id=item_id, outcome=outcome)
        if outcome == "requeued":
            raise QueuedWorkFailed(f"request {item_id} was requeued")
        return outcome

    return process_partial_response(  # type: ignore[return-value]
        event=event, record_handler=record_outcome, processor=_REPORT_EVERY_FAILURE, context=context
    )


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
            report = queued.enqueue(service, enumerate(event["items"], start=1))
        summary = queued.run(service, _owner(context), deadline_of(context), dispatch=bool(event.get("dispatch", True)))
        bucket = service.settings.batch_bucket
        batches = batch_bucket.check_open(service, batch_bucket.BatchBucket(bucket)) if bucket else None
        return {"enqueued": report.as_dict() if report else None, "run": summary.as_dict(), "batches": batches}
    except Exception as exc:  # every failure is answered in the one error shape, never as a traceback
        return error_answer(exc)


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def batch_file_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Queue the requests of each batch file an S3 event names (``input/*.jsonl`` in the batch bucket).

    A file that cannot be read is raised, so that S3's asynchronous invocation tries again; one bad line
    is only that line's error.
    """
    try:
        records = event.get("Records") if isinstance(event, dict) else None
        if not isinstance(records, list):
            raise InvalidRequest("the batch-files handler takes an S3 event: an object whose Records is a list")
        service = get_service()
        files = []
        for record in S3Event(event).records:
            key = unquote_plus(record.s3.get_object.key)
            if not (key.startswith(batch_bucket.INPUT_PREFIX) and key.endswith(batch_bucket.INPUT_SUFFIX)):
                logger.info("not a batch file; skipped", key_prefix=key.split("/", 1)[0])
                continue
            bucket = batch_bucket.BatchBucket(record.s3.bucket.name)
            files.append(batch_bucket.receive(service, bucket, key, record.s3.get_object.etag))
        return {"files": files}
    except StoreError:
        raise  # S3 or the table could not be reached: the invocation is retried
    except Exception as exc:  # every other failure is answered in the one error shape, never as a traceback
        return error_answer(exc)


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
