"""Batch files in the formats callers have: native requests, OpenAI Batch input, Bedrock batch inference records.

A batch file is JSONL, one request per line, in one of three formats, decided by its first line that is a
JSON object:

- ``native``: a direct-invoke request per line (handler/domain/requests.py);
- ``openai``: OpenAI's Batch input, ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
  "body": <chat completion request>}``; the body means what POST /v1/chat/completions means
  (handler/formats/openai_chat.py), so it has the same request id and stored item;
- ``bedrock``: Bedrock batch inference records, ``{"recordId", "modelInput": <Anthropic Messages body>}``.

Each line is read on its own (``read_lines``): a valid line becomes the native request it means, ready
for handler.usecases.queueing.queue_requests; an invalid line gets a problem that names the line's fields at
fault and never what it holds, and stops nothing else. A line of another format than its file's is invalid.

The results come back joined on the caller's id, in the file's format (handler/usecases/batch_export.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Literal

from handler.core.errors import InvalidRequest
from handler.domain.requests import NOT_QUEUEABLE, parse_request
from handler.formats.batch_record import BatchLine
from handler.formats.bedrock_batch import BEDROCK_KEYS, bedrock_line
from handler.formats.jsonl import Unreadable
from handler.formats.openai_batch import OPENAI_KEYS, openai_line

BatchFormat = Literal["native", "openai", "bedrock"]
FORMAT_NAMES: dict[BatchFormat, str] = {
    "native": "native requests",
    "openai": "OpenAI Batch input",
    "bedrock": "Bedrock batch records",
}


def detect_format(value: Any) -> BatchFormat:
    """A line's format from its keys: OpenAI's (custom_id, method, url, body) first, then Bedrock's
    (recordId, modelInput); anything else is a native request."""
    if isinstance(value, dict):
        if any(key in value for key in OPENAI_KEYS):
            return "openai"
        if any(key in value for key in BEDROCK_KEYS):
            return "bedrock"
    return "native"


def read_lines(numbered_values: Iterable[tuple[int, Any]], served_model: str) -> tuple[BatchFormat, list[BatchLine]]:
    """The file's format and each line read as a request of that format.

    ``numbered_values`` are the lines' JSON values (``Unreadable`` for a line that has none), as
    ``jsonl_values`` reads them; ``served_model`` is the model id OpenAI bodies must name.
    """
    values = list(numbered_values)
    first = next(((number, value) for number, value in values if isinstance(value, dict)), None)
    fmt: BatchFormat = detect_format(first[1]) if first is not None else "native"
    decided_by = first[0] if first is not None else 0
    # Ids Bedrock records give themselves: a filled-in id is never one of them.
    given_ids = {
        value["recordId"] for _, value in values if isinstance(value, dict) and isinstance(value.get("recordId"), str)
    }
    seen: dict[str, int] = {}
    lines = []
    for number, value in values:
        if isinstance(value, Unreadable):
            lines.append(BatchLine(number, None, None, value.reason, None, "invalid_json_line"))
        elif fmt == "native":
            lines.append(_nativeline_of(number, value, decided_by))
        elif not isinstance(value, dict):
            problem = f"not a JSON object: each line of {FORMAT_NAMES[fmt]} is one"
            lines.append(BatchLine(number, None, None, problem, value, "invalid_json_line"))
        elif detect_format(value) != fmt:
            lines.append(_other_format(number, value, fmt, decided_by))
        elif fmt == "openai":
            lines.append(openai_line(number, value, served_model, seen))
        else:
            lines.append(bedrock_line(number, value, seen, given_ids))
    return fmt, lines


def _other_format(number: int, value: Any, fmt: BatchFormat, decided_by: int) -> BatchLine:
    problem = (
        f"a line of {FORMAT_NAMES[detect_format(value)]}, but this file is {FORMAT_NAMES[fmt]} "
        f"(from its line {decided_by}); a file holds one format"
    )
    return BatchLine(number, None, None, problem, value, "mixed_formats")


def _nativeline_of(number: int, value: Any, decided_by: int) -> BatchLine:
    if isinstance(value, dict) and detect_format(value) != "native":
        return _other_format(number, value, "native", decided_by)
    try:
        request = parse_request(value)
        if not request.options.store:
            raise InvalidRequest(f"options.store: {NOT_QUEUEABLE}")
    except InvalidRequest as exc:
        # As handler.usecases.queueing.queue_requests reports it: the fields and problems, no value.
        status = HTTPStatus.UNPROCESSABLE_ENTITY  # as the native API answers it
        return BatchLine(number, None, None, exc.log_message, value, "invalid_request", status)
    return BatchLine(number, None, value, None, value)
