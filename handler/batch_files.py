"""Batch files in the formats callers have: native requests, OpenAI Batch input, Bedrock batch inference records.

A batch file is JSONL, one request per line, in one of three formats, decided by its first line that is a
JSON object:

- ``native``: a direct-invoke request per line (handler/schemas.py);
- ``openai``: OpenAI's Batch input, ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
  "body": <chat completion request>}``; the body means what POST /v1/chat/completions means
  (handler/openai_api.py), so it has the same request id and stored item;
- ``bedrock``: Bedrock batch inference records, ``{"recordId", "modelInput": <Anthropic Messages body>}``.

Each line is read on its own (``read_lines``): a valid line becomes the native request it means, ready
for handler.queued.enqueue; an invalid line gets a problem that names the line's fields at fault and
never what it holds, and stops nothing else. A line of another format than its file's is invalid.

The results come back joined on the caller's id (``output_records``): finished lines in the output
records, failed and invalid lines in the error records, every caller id once; lines not finished yet
are counted, in neither. ``export`` reads a file's items by id through the service's store (BatchGetItem);
nothing else here calls AWS.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from http import HTTPStatus
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from handler.engine import Engine, Tokenizer, prompt_counter
from handler.errors import (
    GenerationError,
    InputTooLong,
    InvalidRequest,
    NotFound,
    describe_problems,
    field_problems,
)
from handler.items import Status, StoredItem
from handler.openai_api import ChatCompletionCreate, completion, error_body, native_request
from handler.service import NOT_QUEUEABLE, TextService, check_request, parse_request

BatchFormat = Literal["native", "openai", "bedrock"]
FORMAT_NAMES: dict[BatchFormat, str] = {
    "native": "native requests",
    "openai": "OpenAI Batch input",
    "bedrock": "Bedrock batch records",
}
#: The one endpoint an OpenAI Batch line may name: the only one this service serves.
OPENAI_URL = "/v1/chat/completions"
OPENAI_KEYS = ("custom_id", "method", "url", "body")
BEDROCK_KEYS = ("recordId", "modelInput")
BATCH_REQUEST_PREFIX = "batch_req_"
MESSAGE_PREFIX = "msg_"

#: OpenAI chat completion fields this service refuses (they would change the output) that are named in
#: reports; another unknown field is reported as ``<unknown field>``, its name being the caller's text.
KNOWN_OPENAI_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "modalities",
        "prediction",
        "presence_penalty",
        "reasoning_effort",
        "tool_choice",
        "tools",
        "top_logprobs",
        "verbosity",
        "web_search_options",
    }
)
#: Anthropic Messages fields that do not change the output: accepted and ignored.
IGNORED_BEDROCK_FIELDS = frozenset({"anthropic_version", "metadata", "service_tier"})
#: Anthropic Messages fields refused (they would change the output), named in reports.
KNOWN_BEDROCK_FIELDS = frozenset(
    {
        "anthropic_beta",
        "container",
        "context_management",
        "mcp_servers",
        "output_config",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
    }
)
#: Fields of an Anthropic text block that do not change the output.
IGNORED_BLOCK_FIELDS = frozenset({"type", "text", "cache_control"})


# -- reading a file's lines -------------------------------------------------------------------------


@dataclass(frozen=True)
class Unreadable:
    """A line that holds no request, with the reason (never what the line holds)."""

    reason: str


def numbered_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Numbered physical lines of a file opened in binary mode, ending at LF, CRLF or CR (ends kept)."""
    number = 0
    for chunk in handle:  # binary iteration splits at LF only; splitlines also splits at CR
        for line in chunk.splitlines(keepends=True):
            number += 1
            yield number, line


def decoded(number: int, line: bytes) -> str | UnicodeDecodeError:
    """One line as text (the first may start with a UTF-8 byte order mark), or why it is not UTF-8."""
    try:
        return line.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return exc


def not_utf8(exc: UnicodeDecodeError) -> Unreadable:
    return Unreadable(f"not valid UTF-8 (invalid byte at offset {exc.start} of the line)")


def json_value(line: str) -> Any:
    """A line's JSON value, or why it has none (never the line's content).

    As handler/api_rules.check_json does for API bodies: a \\u escape of a lone surrogate is no text
    (the request id and the table refuse it), and nesting or numbers too deep or long to read are refused.
    """
    try:
        value = json.loads(line)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        return Unreadable(f"not JSON: {exc.msg} at column {exc.colno}")
    except UnicodeEncodeError:
        return Unreadable("has a \\u escape of an unpaired UTF-16 surrogate (not text)")
    except RecursionError:
        return Unreadable("not JSON this script reads: nested too deeply")
    except ValueError:  # int() refuses numbers of more than 4300 digits
        return Unreadable("not JSON this script reads: a number too long to read")
    return value


def jsonl_values(handle: BinaryIO) -> Iterator[tuple[int, Any]]:
    """Numbered JSON values of a JSONL file (blank lines skipped); a line that has none is ``Unreadable``."""
    for number, raw in numbered_lines(handle):
        line = decoded(number, raw)
        if isinstance(line, UnicodeDecodeError):
            yield number, not_utf8(line)
        elif line.strip():
            yield number, json_value(line)


# -- reading requests -------------------------------------------------------------------------------


def detect_format(value: Any) -> BatchFormat:
    """A line's format from its keys: OpenAI's (custom_id, method, url, body) first, then Bedrock's
    (recordId, modelInput); anything else is a native request."""
    if isinstance(value, dict):
        if any(key in value for key in OPENAI_KEYS):
            return "openai"
        if any(key in value for key in BEDROCK_KEYS):
            return "bedrock"
    return "native"


@dataclass(frozen=True)
class BatchLine:
    """One line of a batch file, read.

    ``request`` is the native request the line means (None when the line is invalid); ``problem`` says
    why the line is invalid, naming its fields, never quoting what they hold. ``caller_id`` is the
    line's ``custom_id`` or ``recordId`` (one filled in for a Bedrock record without one, as Bedrock
    does), and None for native lines and for lines whose id is missing, not a string, or repeats an
    earlier line's: a caller id is reported once. ``code``, ``status`` and ``param`` type the problem:
    ``status`` is the HTTP status the endpoint answers for a request it refuses (the body's fault),
    None when the line itself is not a request of its format.
    """

    number: int
    caller_id: str | None
    request: dict[str, Any] | None
    problem: str | None = None
    original: Any = None
    code: str | None = None
    status: int | None = None
    param: str | None = None

    @property
    def valid(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class _Fault:
    """One thing wrong with a line: the fields and problem (no value), typed as ``BatchLine`` types it."""

    message: str
    code: str
    status: int | None = None
    param: str | None = None


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
            lines.append(_native_line(number, value, decided_by))
        elif not isinstance(value, dict):
            problem = f"not a JSON object: each line of {FORMAT_NAMES[fmt]} is one"
            lines.append(BatchLine(number, None, None, problem, value, "invalid_json_line"))
        elif detect_format(value) != fmt:
            lines.append(_other_format(number, value, fmt, decided_by))
        elif fmt == "openai":
            lines.append(_openai_line(number, value, served_model, seen))
        else:
            lines.append(_bedrock_line(number, value, seen, given_ids))
    return fmt, lines


def _other_format(number: int, value: Any, fmt: BatchFormat, decided_by: int) -> BatchLine:
    problem = (
        f"a line of {FORMAT_NAMES[detect_format(value)]}, but this file is {FORMAT_NAMES[fmt]} "
        f"(from its line {decided_by}); a file holds one format"
    )
    return BatchLine(number, None, None, problem, value, "mixed_formats")


def _line(
    number: int, caller_id: str | None, request: dict[str, Any] | None, faults: list[_Fault], value: Any
) -> BatchLine:
    if not faults:
        return BatchLine(number, caller_id, request, None, value)
    # The line's own faults come first: a body refused as a request is the endpoint's answer only when
    # the line around it is sound.
    first = next((fault for fault in faults if fault.status is None), faults[0])
    problem = "; ".join(fault.message for fault in faults)
    return BatchLine(number, caller_id, None, problem, value, first.code, first.status, first.param)


def _native_line(number: int, value: Any, decided_by: int) -> BatchLine:
    if isinstance(value, dict) and detect_format(value) != "native":
        return _other_format(number, value, "native", decided_by)
    try:
        request = parse_request(value)
        if not request.options.store:
            raise InvalidRequest(f"options.store: {NOT_QUEUEABLE}")
    except InvalidRequest as exc:
        # As handler.queued.enqueue reports it: the fields and problems, no value.
        status = HTTPStatus.UNPROCESSABLE_ENTITY  # as the native API answers it
        return BatchLine(number, None, None, exc.log_message, value, "invalid_request", status)
    return BatchLine(number, None, value, None, value)


def _caller_id(value: dict[str, Any], name: str, number: int, seen: dict[str, int]) -> tuple[str | None, list[_Fault]]:
    """The line's id, registered as seen; or the fault with it (a repeated id is the later line's fault)."""
    given = value.get(name)
    if name not in value:
        return None, [_Fault(f"{name}: required", f"missing_{_snake(name)}")]
    if not isinstance(given, str) or not given:
        return None, [_Fault(f"{name}: must be a non-empty string", f"invalid_{_snake(name)}")]
    if given in seen:
        message = f"{name}: repeats the one of line {seen[given]} (each line's {name} must be unique in a file)"
        return None, [_Fault(message, f"duplicate_{_snake(name)}")]
    seen[given] = number
    return given, []


def _snake(name: str) -> str:
    return "".join(f"_{char.lower()}" if char.isupper() else char for char in name)


def _openai_line(number: int, value: dict[str, Any], served_model: str, seen: dict[str, int]) -> BatchLine:
    caller_id, faults = _caller_id(value, "custom_id", number, seen)
    if "method" not in value:
        faults.append(_Fault("method: required", "missing_method"))
    elif value["method"] != "POST":
        faults.append(_Fault("method: must be POST", "invalid_method"))
    if "url" not in value:
        faults.append(_Fault("url: required", "missing_url"))
    elif value["url"] != OPENAI_URL:
        faults.append(_Fault(f"url: only {OPENAI_URL} is served here", "invalid_url"))
    request: dict[str, Any] | None = None
    if "body" not in value:
        faults.append(_Fault("body: required", "missing_body"))
    elif not isinstance(value["body"], dict):
        faults.append(_Fault("body: must be a JSON object (a chat completion request)", "invalid_body"))
    else:
        request, body_faults = _openai_request(value["body"], served_model)
        faults.extend(body_faults)
    return _line(number, caller_id, request, faults, value)


def _openai_request(body: dict[str, Any], served_model: str) -> tuple[dict[str, Any] | None, list[_Fault]]:
    """The native request a chat completion body means, or how POST /v1/chat/completions refuses it."""
    try:
        parsed = ChatCompletionCreate.model_validate(body)
    except ValidationError as exc:
        return None, [_refused(field_problems(exc.errors(include_url=False)), _openai_field)]
    try:
        request = native_request(parsed, served_model)
    except NotFound:
        message = f"body.model: not the model served here, {served_model!r} (GET /v1/models)"
        return None, [_Fault(message, "model_not_found", HTTPStatus.NOT_FOUND, "model")]
    except InvalidRequest as exc:
        problems = [
            {
                key: item
                for key, item in problem.items()
                if key != "unknown" or problem["field"] not in KNOWN_OPENAI_FIELDS
            }
            for problem in exc.details.get("fields") or [{"field": "body", "problem": exc.log_message}]
        ]
        return None, [_refused(problems, _openai_field)]
    try:
        parse_request(request)
    except InvalidRequest as exc:
        return None, [
            _refused(exc.details.get("fields") or [{"field": "body", "problem": exc.log_message}], _openai_field)
        ]
    return request, []


def _openai_field(native_field: str) -> str:
    """A native request's field as the OpenAI line names it: options are top-level fields of the body."""
    if native_field == "event":  # the request as a whole
        return "body"
    return "body." + native_field.removeprefix("options.")


def _refused(problems: list[dict[str, Any]], rename: Callable[[str], str]) -> _Fault:
    """A request refused for its fields: 400, the problems named as the line names them, without values."""
    renamed = [{**problem, "field": rename(str(problem["field"]))} for problem in problems]
    # The first field, as the body names it; an unknown field's name is the caller's text, not shown.
    first = renamed[0] if renamed else {"field": "", "unknown": True}
    param = None if first.get("unknown") else str(first["field"]).partition(".")[2] or None
    # The code POST /v1/chat/completions answers with (handler/openai_api.error_body).
    return _Fault(
        describe_problems(renamed, with_values=False), InvalidRequest.error_type, HTTPStatus.BAD_REQUEST, param
    )


# -- Bedrock: Anthropic's Messages body --------------------------------------------------------------


class AnthropicMessage(BaseModel):
    """One turn of the conversation: text, or a list of text blocks."""

    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: Any


class AnthropicMessagesInput(BaseModel):
    """Anthropic's Messages request body, as Bedrock's InvokeModel takes it (the fields this service reads)."""

    model_config = ConfigDict(extra="allow")

    messages: list[AnthropicMessage] = Field(min_length=1)
    max_tokens: int = Field(description="Required, as Anthropic's Messages API requires it.")
    system: Any = None
    temperature: float | None = Field(None, ge=0.0, le=1.0, description="Anthropic's range; default 0 (greedy).")
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None


def _bedrock_line(number: int, value: dict[str, Any], seen: dict[str, int], given_ids: set[str]) -> BatchLine:
    if "recordId" in value:
        caller_id, faults = _caller_id(value, "recordId", number, seen)
    else:
        # Bedrock adds an id in its output for a record without one: the line number, 11 digits.
        caller_id, faults = _filled_record_id(number, given_ids), []
        seen[caller_id] = number
    request: dict[str, Any] | None = None
    if "modelInput" not in value:
        faults.append(_Fault("modelInput: required", "missing_model_input"))
    elif not isinstance(value["modelInput"], dict):
        faults.append(
            _Fault("modelInput: must be a JSON object (an Anthropic Messages request)", "invalid_model_input")
        )
    else:
        request, input_faults = _bedrock_request(value["modelInput"])
        faults.extend(input_faults)
    return _line(number, caller_id, request, faults, value)


def _filled_record_id(number: int, given_ids: set[str]) -> str:
    filled, suffix = f"{number:011d}", 0
    while filled in given_ids:
        suffix += 1
        filled = f"{number:011d}R{suffix}"
    return filled


def _bedrock_request(model_input: dict[str, Any]) -> tuple[dict[str, Any] | None, list[_Fault]]:
    """The native chat request an Anthropic Messages body means; refuses what would change the output."""
    try:
        body = AnthropicMessagesInput.model_validate(model_input)
    except ValidationError as exc:
        return None, [_refused(field_problems(exc.errors(include_url=False)), lambda name: f"modelInput.{name}")]
    problems: list[dict[str, Any]] = []
    for name in sorted(set(body.model_extra or {}) - IGNORED_BEDROCK_FIELDS):
        unknown = {"unknown": True} if name not in KNOWN_BEDROCK_FIELDS else {}
        problems.append({"field": name, "problem": "not supported: it would change the output", **unknown})
    if body.stream:
        problems.append({"field": "stream", "problem": "not supported: a batch answers whole; send false"})
    messages: list[dict[str, Any]] = []
    if body.system is not None:
        system = _text(body.system, "system", problems)
        if system:
            messages.append({"role": "system", "content": system})
    for index, message in enumerate(body.messages):
        for name in sorted(message.model_extra or {}):
            problems.append({"field": f"messages.{index}.{name}", "problem": "not supported", "unknown": True})
        messages.append(
            {"role": message.role, "content": _text(message.content, f"messages.{index}.content", problems)}
        )
    if problems:
        return None, [_refused(problems, lambda name: f"modelInput.{name}")]
    options: dict[str, Any] = {"max_tokens": body.max_tokens}
    for name, value in (("temperature", body.temperature), ("top_p", body.top_p), ("stop", body.stop_sequences)):
        if value is not None:
            options[name] = value
    request = {"task": "chat", "messages": messages, "options": options}
    has_system = bool(messages) and messages[0]["role"] == "system"
    try:
        parse_request(request)
    except InvalidRequest as exc:
        fields = exc.details.get("fields") or [{"field": "modelInput", "problem": exc.log_message}]
        return None, [_refused(fields, lambda name: _bedrock_field(name, has_system))]
    return request, []


def _text(content: Any, where: str, problems: list[dict[str, Any]]) -> str:
    """The text of a string or a list of text blocks; anything else is a problem (images, tools, ...)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        problems.append({"field": where, "problem": "must be a string or a list of text blocks"})
        return ""
    texts = []
    for index, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            problems.append({"field": f"{where}.{index}", "problem": "only text blocks ({type: text, text}) are read"})
            continue
        for name in sorted(set(block) - IGNORED_BLOCK_FIELDS):
            problems.append({"field": f"{where}.{index}.{name}", "problem": "not supported", "unknown": True})
        texts.append(block["text"])
    return "".join(texts)


def _bedrock_field(native_field: str, has_system: bool) -> str:
    """A native request's field as the Bedrock record names it (a system message is ``system``)."""
    if native_field == "event":  # the request as a whole
        return "modelInput"
    parts = native_field.split(".")
    if parts[0] == "options" and len(parts) > 1:
        parts = [{"stop": "stop_sequences"}.get(parts[1], parts[1]), *parts[2:]]
    elif parts[0] == "messages" and len(parts) > 1 and parts[1].isdigit():
        index = int(parts[1]) - (1 if has_system else 0)
        parts = ["system"] if index < 0 else ["messages", str(index), *parts[2:]]
    return "modelInput." + ".".join(parts)


def refuse_unfit(lines: list[BatchLine], numbers: set[int], counter: Engine | Tokenizer) -> list[BatchLine]:
    """The lines, those numbered in ``numbers`` refused when their prompt cannot fit the context window,
    as handler.queued.enqueue refuses them (so a line it never queued is reported, not awaited)."""
    checked = []
    for line in lines:
        if line.request is not None and line.number in numbers:
            try:
                check_request(counter, parse_request(line.request))
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


# -- writing results ----------------------------------------------------------------------------------


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


def output_records(
    fmt: BatchFormat, lines: Iterable[BatchLine], items_by_line: Mapping[int, StoredItem], served_model: str
) -> Exported:
    """Output and error records, in the file's format, in line order, joined on the caller's id.

    ``items_by_line`` holds each valid line's stored item (by line number), read by its request id.
    DONE lines are output records; FAILED and invalid lines are error records; the others are counted.
    """
    exported = Exported()
    for line in lines:
        if line.problem is not None:
            exported.invalid += 1
            exported.errors.append(_invalid_record(fmt, line))
            continue
        item = items_by_line.get(line.number)
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
    service: TextService, served_model: str, numbered_values: Iterable[tuple[int, Any]]
) -> tuple[BatchFormat, Exported]:
    """A batch file's output and error records: its lines read again (request ids are deterministic), their
    items read by id (BatchGetItem, never a scan), the results joined on the caller's ids."""
    assert service.store is not None
    fmt, lines = read_lines(numbered_values, served_model)
    ids = {line.number: service.request_id(parse_request(line.request)) for line in lines if line.request is not None}
    items = service.store.get_many(sorted(set(ids.values())))
    by_line = {number: items[item_id] for number, item_id in ids.items() if item_id in items}
    never_queued = set(ids) - set(by_line)
    if never_queued and service.settings.model_path.is_file():
        # enqueue refuses the lines whose prompt cannot fit: they are errors, not awaited.
        lines = refuse_unfit(lines, never_queued, prompt_counter(service.settings))
    return fmt, output_records(fmt, lines, by_line, served_model)
