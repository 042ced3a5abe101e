"""A batch file's results, joined on the caller's ids, in the file's format: output and error records.

Finished lines are output records, failed and invalid lines error records, every caller id once; lines not
finished yet are counted, in neither. ``export`` reads a file's lines again (request ids are deterministic)
and their items by id through the store (BatchGetItem, never a scan).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from http import HTTPStatus
from typing import Any

from handler.core.errors import GenerationError, InputTooLong
from handler.domain.answers import Status
from handler.domain.requests import parse_request
from handler.domain.stored_item import StoredItem
from handler.engine import prompt_counter
from handler.formats.batch_lines import BatchFormat, read_lines
from handler.formats.batch_record import BatchLine
from handler.formats.openai_chat import completion, error_body
from handler.usecases.preparation import Counter, prepare
from handler.usecases.stored_requests import StoredRequests

BATCH_REQUEST_PREFIX = "batch_req_"
MESSAGE_PREFIX = "msg_"


def refuse_unfit(lines: list[BatchLine], numbers: set[int], counter: Counter) -> list[BatchLine]:
    """The lines, those numbered in ``numbers`` refused when their prompt cannot fit the context window,
    as handler.usecases.queueing.queue_requests refuses them (so a line it never queued is reported, not
    awaited)."""
    checked = []
    for line in lines:
        if line.request is not None and line.number in numbers:
            try:
                prepare(counter, parse_request(line.request))
            except InputTooLong as exc:
                line = replace(
                    line,
                    request=None,
                    problem=exc.log_message,
                    code="context_length_exceeded",
                    status=HTTPStatus.BAD_REQUEST,
                    param="messages",
                )
        checked.append(line)
    return checked


@dataclass
class Exported:
    """The output and error records of a batch file, and what came of its lines."""

    output: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    invalid: int = 0
    #: Queued, not finished yet (PENDING, or RUNNING).
    unfinished: int = 0
    #: Valid, but not in the table: never queued (or expired).
    not_queued: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "done": self.done,
            "failed": self.failed,
            "invalid": self.invalid,
            "unfinished": self.unfinished,
            "not_queued": self.not_queued,
        }


@dataclass(frozen=True)
class Unanswered:
    """Why lines that will not be answered (a batch cancelled or expired) are errors: OpenAI's ``error``."""

    code: str
    message: str


def output_records(
    fmt: BatchFormat,
    lines: Iterable[BatchLine],
    items_by_line: Mapping[int, StoredItem],
    served_model: str,
    unanswered: Unanswered | None = None,
) -> Exported:
    """Output and error records, in the file's format, in line order, joined on the caller's id.

    ``items_by_line`` holds each valid line's stored item (by line number), read by its request id.
    DONE lines are output records; FAILED and invalid lines are error records; the others are counted, and with
    ``unanswered`` (OpenAI format) each is an error record too.
    """
    exported = Exported()
    for line in lines:
        if line.problem is not None:
            exported.invalid += 1
            exported.errors.append(_invalid_record(fmt, line))
            continue
        item = items_by_line.get(line.number)
        if unanswered is not None and (item is None or item.status not in (Status.DONE, Status.FAILED)):
            error = {"code": unanswered.code, "message": unanswered.message}
            exported.errors.append(
                {"id": batch_request_id(line), "custom_id": line.caller_id, "response": None, "error": error}
            )
        if item is None:
            exported.not_queued += 1
        elif item.status == Status.DONE:
            exported.done += 1
            exported.output.append(_done_record(fmt, line, item, served_model))
        elif item.status == Status.FAILED:
            exported.failed += 1
            exported.errors.append(_failed_record(fmt, line, item))
        else:
            exported.unfinished += 1
    return exported


def batch_request_id(line: BatchLine) -> str:
    """The OpenAI output line's own id: one per line of the input file, the same on every export."""
    digest = hashlib.sha256(f"{line.number}\n{line.caller_id}".encode()).hexdigest()
    return BATCH_REQUEST_PREFIX + digest[:32]


def _model_input(line: BatchLine) -> Any:
    return line.original.get("modelInput") if isinstance(line.original, dict) else None


def _invalid_record(fmt: BatchFormat, line: BatchLine) -> dict[str, Any]:
    message = f"line {line.number}: {line.problem}"
    if fmt == "openai":
        if line.status is None:
            # Not a request of the Batch API: OpenAI's ``error``, for failures that are no HTTP answer.
            error = {"code": line.code, "message": message}
            return {"id": batch_request_id(line), "custom_id": line.caller_id, "response": None, "error": error}
        kind = "not_found_error" if line.status == HTTPStatus.NOT_FOUND else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": line.param, "code": line.code}}
        response = {"status_code": int(line.status), "request_id": None, "body": body}
        return {"id": batch_request_id(line), "custom_id": line.caller_id, "response": response, "error": None}
    if fmt == "bedrock":
        failure = {"errorCode": int(line.status or HTTPStatus.BAD_REQUEST), "errorMessage": message}
        return {"recordId": line.caller_id, "modelInput": _model_input(line), "error": failure}
    return {"line": line.number, "id": None, "error": {"type": "InvalidRequest", "message": message}}


def _failed_record(fmt: BatchFormat, line: BatchLine, item: StoredItem) -> dict[str, Any]:
    message = f"the request failed: {item.error or 'no reason recorded'}"
    if fmt == "openai":
        status, body = error_body(GenerationError(message), HTTPStatus.INTERNAL_SERVER_ERROR)
        response = {"status_code": int(status), "request_id": item.id, "body": body}
        return {"id": batch_request_id(line), "custom_id": line.caller_id, "response": response, "error": None}
    if fmt == "bedrock":
        failure = {"errorCode": int(HTTPStatus.INTERNAL_SERVER_ERROR), "errorMessage": message}
        return {"recordId": line.caller_id, "modelInput": _model_input(line), "error": failure}
    # The native API answers a FAILED request with its answer: status FAILED and last_error.
    return {"line": line.number, **item.to_answer(cached=True).model_dump(mode="json", exclude_none=True)}


def _done_record(fmt: BatchFormat, line: BatchLine, item: StoredItem, served_model: str) -> dict[str, Any]:
    answer = item.to_answer(cached=True)
    if fmt == "openai":
        body = completion(answer, served_model, created=_created(item)).model_dump(mode="json")
        response = {"status_code": int(HTTPStatus.OK), "request_id": item.id, "body": body}
        return {"id": batch_request_id(line), "custom_id": line.caller_id, "response": response, "error": None}
    if fmt == "bedrock":
        return {
            "recordId": line.caller_id,
            "modelInput": _model_input(line),
            "modelOutput": _message(item, served_model),
        }
    return {"line": line.number, **answer.model_dump(mode="json", exclude_none=True)}


def _message(item: StoredItem, served_model: str) -> dict[str, Any]:
    """Anthropic's Messages response for a finished item, as Bedrock's InvokeModel answers it."""
    metrics = item.metrics
    return {
        "id": MESSAGE_PREFIX + item.id,
        "type": "message",
        "role": "assistant",
        "model": served_model,
        "content": [{"type": "text", "text": item.output or ""}],
        # The service's "stop" is the model's end of turn or a stop string; which one is not recorded.
        "stop_reason": "max_tokens" if item.finish_reason == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": metrics.prompt_tokens if metrics else 0,
            "output_tokens": metrics.completion_tokens if metrics else 0,
        },
    }


def _created(item: StoredItem) -> int:
    """When the item was finished, in seconds since the epoch (0 when it does not say)."""
    for stamp in (item.updated_at, item.created_at):
        if stamp:
            try:
                return int(datetime.fromisoformat(stamp).timestamp())
            except ValueError:
                continue
    return 0


def export(
    stored_requests: StoredRequests,
    served_model: str,
    numbered_values: Iterable[tuple[int, Any]],
    unanswered: Unanswered | None = None,
) -> tuple[BatchFormat, Exported]:
    """A batch file's output and error records: its lines read again (request ids are deterministic), their
    items read by id (BatchGetItem, never a scan), the results joined on the caller's ids."""
    table = stored_requests.table
    assert table is not None
    fmt, lines = read_lines(numbered_values, served_model)
    ids = {
        line.number: stored_requests.request_id(parse_request(line.request))
        for line in lines
        if line.request is not None
    }
    items = table.items.get_many(sorted(set(ids.values())))
    by_line = {number: items[item_id] for number, item_id in ids.items() if item_id in items}
    never_queued = set(ids) - set(by_line)
    if never_queued and stored_requests.settings.model_path.is_file():
        # queue_requests refuses the lines whose prompt cannot fit: they are errors, not awaited.
        lines = refuse_unfit(lines, never_queued, prompt_counter(stored_requests.settings))
    return fmt, output_records(fmt, lines, by_line, served_model, unanswered)
