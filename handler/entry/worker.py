"""The SQS worker: batches of queued request ids, decoded together, each message's failure reported on its own."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.core.errors import InvalidRequest
from handler.core.observability import logger, metrics
from handler.entry.runtime import deadline_of, error_answer, get_service, lease_owner, preload
from handler.usecases import queued_work


class QueuedWorkFailed(Exception):
    """A queued request was not finished in this invocation; SQS delivers it again."""


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
        queued_work.process_many(get_service(), ids, owner=lease_owner(context), deadline=deadline_of(context))
        if ids
        else {}
    )

    def record_outcome(record: SQSRecord) -> str:
        item_id = _queued_id(record)
        outcome = outcomes[item_id].outcome
        logger.info("queued request processed", id=item_id, outcome=outcome)
        if outcome in queued_work.NOT_ENDED:
            # Requeued, held by another invocation (which may have died holding it), or not written now: SQS
            # delivers the message again after its visibility timeout, when that lease has expired or the item ended.
            raise QueuedWorkFailed(f"request {item_id} has not ended ({outcome})")
        return outcome

    return process_partial_response(  # type: ignore[return-value]
        event=event, record_handler=record_outcome, processor=_REPORT_EVERY_FAILURE, context=context
    )


preload()
