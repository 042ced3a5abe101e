"""Bedrock batch inference records: ``{"recordId", "modelInput": <Anthropic Messages body>}``.

The Messages body becomes the native chat request it means; a field that would change the output and that
this service cannot honour is refused, named; fields that change nothing are accepted and ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from handler.core.errors import InvalidRequest, field_problems
from handler.domain.requests import parse_request
from handler.formats.batch_record import BatchLine, Fault, line_of, read_caller_id, refused

BEDROCK_KEYS = ("recordId", "modelInput")
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


def bedrock_line(number: int, value: dict[str, Any], seen: dict[str, int], given_ids: set[str]) -> BatchLine:
    if "recordId" in value:
        caller_id, faults = read_caller_id(value, "recordId", number, seen)
    else:
        # Bedrock adds an id in its output for a record without one: the line number, 11 digits.
        caller_id, faults = _filled_record_id(number, given_ids), []
        seen[caller_id] = number
    request: dict[str, Any] | None = None
    if "modelInput" not in value:
        faults.append(Fault("modelInput: required", "missing_model_input"))
    elif not isinstance(value["modelInput"], dict):
        faults.append(Fault("modelInput: must be a JSON object (an Anthropic Messages request)", "invalid_model_input"))
    else:
        request, input_faults = _bedrock_request(value["modelInput"])
        faults.extend(input_faults)
    return line_of(number, caller_id, request, faults, value)


def _filled_record_id(number: int, given_ids: set[str]) -> str:
    filled, suffix = f"{number:011d}", 0
    while filled in given_ids:
        suffix += 1
        filled = f"{number:011d}R{suffix}"
    return filled


def _bedrock_request(model_input: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Fault]]:
    """The native chat request an Anthropic Messages body means; refuses what would change the output."""
    try:
        body = AnthropicMessagesInput.model_validate(model_input)
    except ValidationError as exc:
        return None, [refused(field_problems(exc.errors(include_url=False)), lambda name: f"modelInput.{name}")]
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
        return None, [refused(problems, lambda name: f"modelInput.{name}")]
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
        return None, [refused(fields, lambda name: _bedrock_field(name, has_system))]
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
