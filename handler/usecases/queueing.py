"""Requests queued in bulk (batch scripts, batch files, a scheduled run's inline items): each valid one a PENDING item
of the results table and a message on the work queue, those already in the table or repeated adding nothing, and a
report of what came of each (handler/usecases/queued_work.py then claims and generates them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from handler.core.errors import InputTooLong, InvalidRequest
from handler.domain.answers import Status
from handler.domain.requests import NOT_QUEUEABLE, TextRequest, parse_request
from handler.domain.stored_item import pending_fields
from handler.engine import prompt_counter
from handler.usecases.preparation import prepare
from handler.usecases.text_service import TextService


@dataclass
class QueueingReport:
    """What queueing requests in bulk (``queue_requests``) did with each of them."""

    new: int = 0
    already_done: int = 0
    already_pending: int = 0
    duplicates: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "invalid": [{"line": line, "error": error} for line, error in self.invalid]}


def queue_requests(service: TextService, requests: Iterable[tuple[int, Any]]) -> QueueingReport:
    """Queue numbered raw requests as PENDING items; ones already in the table (or repeated) add nothing."""
    table, queue = service.stored_requests.table, service.stored_requests.queue
    if table is None:
        raise InvalidRequest("queueing requests needs TABLE_NAME")
    report = QueueingReport()
    parsed: dict[str, TextRequest] = {}
    # Lines are counted in tokens where the model file is at hand (the function's image; an operator who
    # names the file); elsewhere a worker reports a line that cannot fit.
    counter = prompt_counter(service.settings) if service.settings.model_path.is_file() else None
    for number, raw in requests:
        try:
            request = parse_request(raw)
            if not request.options.store:
                raise InvalidRequest(f"options.store: {NOT_QUEUEABLE}")
            if counter is not None:
                prepare(counter, request)
        except (InvalidRequest, InputTooLong) as exc:
            # Reported to whoever runs the batch, maybe not the author of the line: no value it holds.
            report.invalid.append((number, exc.log_message))
            continue
        item_id = service.request_id(request)
        if item_id in parsed:
            report.duplicates += 1
            continue
        parsed[item_id] = request
    existing = table.items.statuses(list(parsed))
    for status in existing.values():
        if status == Status.DONE:
            report.already_done += 1
        else:
            report.already_pending += 1
    new = [(item_id, pending_fields(request)) for item_id, request in parsed.items() if item_id not in existing]
    report.new = table.items.put_pending_batch(new)
    if queue is not None and new:
        queue.send(item_id for item_id, _ in new)
    return report
