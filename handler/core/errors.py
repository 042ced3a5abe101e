"""Errors the service answers with, each mapped to one answer shape in one place.

ServiceError
├── InvalidRequest      the event does not match any request schema
├── InputTooLong        the prompt plus max_tokens does not fit the context window
├── ConfigurationError  the environment settings are invalid
├── ModelLoadError      the GGUF could not be loaded
├── GenerationError     llama.cpp failed while generating
├── OutputInvalid       the output is not the JSON its response format asks for
├── DeadlineReached     the generation could not finish before its deadline
├── StoreError          the results table could not be read or written
└── (API only) MalformedJson, PayloadTooLarge, UnsupportedMediaType, NotFound, MethodNotAllowed
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class ServiceError(Exception):
    """Base of every error the service reports to its caller."""

    #: The ``type`` field of the error answer.
    error_type = "ServiceError"
    #: Whether the caller caused it (bad input) rather than the service.
    client_error = False

    def __init__(self, message: str, *, log_message: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self._log_message = log_message

    @property
    def log_message(self) -> str:
        """The message for the logs: like ``message`` but never quoting what the caller sent.

        User text is data that is never logged; an answer may show the caller its own value, a log line
        may not. Problems listed in ``details["fields"]`` are logged without their values; an error
        whose message quotes caller input says so with ``log_message``.
        """
        if self._log_message is not None:
            return self._log_message
        fields = self.details.get("fields")
        if isinstance(fields, list):
            return describe_problems(fields, with_values=False)
        return self.message

    def to_answer(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` answer body."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class InvalidRequest(ServiceError):
    """The event does not match any request schema."""

    error_type = "InvalidRequest"
    client_error = True


class InputTooLong(ServiceError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""

    error_type = "InputTooLong"
    client_error = True


class ConfigurationError(ServiceError):
    """An environment setting is missing or invalid."""

    error_type = "ConfigurationError"


class ModelLoadError(ServiceError):
    """The GGUF model could not be loaded."""

    error_type = "ModelLoadError"


class GenerationError(ServiceError):
    """llama.cpp failed while generating."""

    error_type = "GenerationError"


class ChunkFailed(GenerationError):
    """A chunk of a document failed for good, so the document cannot be answered either."""


class OutputInvalid(ServiceError):
    """The output is not the JSON its response format asks for (cut off, or off the schema)."""

    error_type = "OutputInvalid"
    client_error = True


class DeadlineReached(ServiceError):
    """The generation could not finish before its deadline (the request is queued, not lost)."""

    error_type = "DeadlineReached"


class StoreError(ServiceError):
    """The results table could not be read or written."""

    error_type = "StoreError"


class MalformedJson(ServiceError):
    """The API request body is not well-formed UTF-8 JSON."""

    error_type = "MalformedJson"
    client_error = True


class PayloadTooLarge(ServiceError):
    """The API request body is larger than the API accepts."""

    error_type = "PayloadTooLarge"
    client_error = True


class UnsupportedMediaType(ServiceError):
    """The API request body is not declared as JSON."""

    error_type = "UnsupportedMediaType"
    client_error = True


class NotFound(ServiceError):
    """No API route, or no result, has this path."""

    error_type = "NotFound"
    client_error = True


class MethodNotAllowed(ServiceError):
    """The API path exists, but not with this method."""

    error_type = "MethodNotAllowed"
    client_error = True


#: How a field the schema does not have is named where the caller's values are not shown (logs, reports).
UNKNOWN_FIELD = "<unknown field>"


def field_problems(errors: Iterable[Mapping[str, Any]], union_tags: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Each pydantic error as ``{"field", "problem"[, "value"][, "unknown"]}``: the value only where it is a
    scalar given; ``unknown`` marks a field the schema does not have (its name is the caller's text)."""
    problems: list[dict[str, Any]] = []
    for err in errors:
        loc = list(err["loc"])
        if loc and loc[0] in union_tags:  # a discriminated union puts the tag first; the caller never wrote it
            loc = loc[1:]
        location = ".".join(str(part) for part in loc) or "event"
        if err["type"] == "union_tag_invalid":
            unknown: dict[str, Any] = {
                "field": "task",
                "problem": f"unknown task; expected one of {', '.join(union_tags)}",
            }
            task = err["input"].get("task")
            if _is_json_scalar(task):
                unknown["value"] = task
            problems.append(unknown)
            continue
        if err["type"] == "union_tag_not_found":
            problems.append({"field": "task", "problem": f"field required; expected one of {', '.join(union_tags)}"})
            continue
        problem: dict[str, Any] = {"field": location, "problem": err["msg"]}
        if err["type"] == "extra_forbidden":
            # The field's name is the caller's own text: the answer shows it, a log line does not.
            problem["unknown"] = True
        given = err.get("input")
        if given is not None and err["type"] != "extra_forbidden":
            if isinstance(given, float) and not math.isfinite(given):
                # JSON has no Infinity or NaN: an answer quoting one would not parse.
                problem["value"] = str(given)
            elif _is_json_scalar(given):
                problem["value"] = given[:80] + "..." if isinstance(given, str) and len(given) > 80 else given
        problems.append(problem)
    return problems


def _is_json_scalar(value: Any) -> bool:
    """A value an answer can quote as JSON as it is: a string, a boolean, an integer or a finite number."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | bool | int)


def describe_problems(problems: Iterable[Mapping[str, Any]], with_values: bool = True) -> str:
    """One phrase per problem: the field path, the problem and (``with_values``) the value given.

    Without values, nothing the caller wrote is shown: an unknown field's name becomes ``<unknown field>``.
    """
    parts = []
    for problem in problems:
        field = str(problem["field"])
        if not with_values and problem.get("unknown"):
            field = ".".join([*field.split(".")[:-1], UNKNOWN_FIELD])
        part = f"{field}: {problem['problem']}"
        if with_values and "value" in problem:
            shown = repr(problem["value"])
            part += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
        parts.append(part)
    return "; ".join(parts)


def describe_validation_error(exc: Any, union_tags: tuple[str, ...] = ()) -> str:
    """One phrase per pydantic error: the field path, the problem and the value given."""
    return describe_problems(field_problems(exc.errors(include_url=False), union_tags))
