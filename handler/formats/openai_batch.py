"""OpenAI Batch input lines: ``{"custom_id", "method": "POST", "url", "body": <chat completion request>}``.

The body means what POST /v1/chat/completions means (handler/formats/openai_chat.py), so it is refused as
that route refuses it and, when valid, has the same request id and stored item.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import ValidationError

from handler.core.errors import InvalidRequest, NotFound, field_problems
from handler.domain.requests import parse_request
from handler.formats.batch_record import BatchLine, Fault, line_of, read_caller_id, refused
from handler.formats.openai_chat import ChatCompletionCreate, native_request

#: The one endpoint an OpenAI Batch line may name: the only one this service serves.
OPENAI_URL = "/v1/chat/completions"
OPENAI_KEYS = ("custom_id", "method", "url", "body")

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


def openai_line(number: int, value: dict[str, Any], served_model: str, seen: dict[str, int]) -> BatchLine:
    caller_id, faults = read_caller_id(value, "custom_id", number, seen)
    if "method" not in value:
        faults.append(Fault("method: required", "missing_method"))
    elif value["method"] != "POST":
        faults.append(Fault("method: must be POST", "invalid_method"))
    if "url" not in value:
        faults.append(Fault("url: required", "missing_url"))
    elif value["url"] != OPENAI_URL:
        faults.append(Fault(f"url: only {OPENAI_URL} is served here", "invalid_url"))
    request: dict[str, Any] | None = None
    if "body" not in value:
        faults.append(Fault("body: required", "missing_body"))
    elif not isinstance(value["body"], dict):
        faults.append(Fault("body: must be a JSON object (a chat completion request)", "invalid_body"))
    else:
        request, body_faults = _openai_request(value["body"], served_model)
        faults.extend(body_faults)
    return line_of(number, caller_id, request, faults, value)


def _openai_request(body: dict[str, Any], served_model: str) -> tuple[dict[str, Any] | None, list[Fault]]:
    """The native request a chat completion body means, or how POST /v1/chat/completions refuses it."""
    try:
        parsed = ChatCompletionCreate.model_validate(body)
    except ValidationError as exc:
        return None, [refused(field_problems(exc.errors(include_url=False)), _openai_field)]
    if parsed.stream:
        # A batch's answers are written whole into its output file: there is nothing to stream them to.
        problem = "not supported in a batch: its answers are written whole to the output file; send false"
        return None, [refused([{"field": "stream", "problem": problem, "value": True}], _openai_field)]
    try:
        request = native_request(parsed, served_model)
    except NotFound:
        message = f"body.model: not the model served here, {served_model!r} (GET /v1/models)"
        return None, [Fault(message, "model_not_found", HTTPStatus.NOT_FOUND, "model")]
    except InvalidRequest as exc:
        problems = [
            {
                key: item
                for key, item in problem.items()
                if key != "unknown" or problem["field"] not in KNOWN_OPENAI_FIELDS
            }
            for problem in exc.details.get("fields") or [{"field": "body", "problem": exc.log_message}]
        ]
        return None, [refused(problems, _openai_field)]
    try:
        parse_request(request)
    except InvalidRequest as exc:
        return None, [
            refused(exc.details.get("fields") or [{"field": "body", "problem": exc.log_message}], _openai_field)
        ]
    return request, []


def _openai_field(native_field: str) -> str:
    """A native request's field as the OpenAI line names it: options are top-level fields of the body."""
    if native_field == "event":  # the request as a whole
        return "body"
    return "body." + native_field.removeprefix("options.")
