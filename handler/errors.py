"""Errors the service answers with, each mapped to one answer shape in one place.

ServiceError
├── InvalidRequest      the event does not match any request schema
├── InputTooLong        the prompt plus max_tokens does not fit the context window
├── ConfigurationError  the environment settings are invalid
├── ModelLoadError      the GGUF could not be loaded
├── GenerationError     llama.cpp failed while generating
├── DeadlineReached     the generation could not finish before its deadline
├── StoreError          the results table could not be read or written
└── (API only) MalformedJson, PayloadTooLarge, UnsupportedMediaType, NotFound, MethodNotAllowed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class ServiceError(Exception):
    """Base of every error the service reports to its caller."""

    #: The ``type`` field of the error answer.
    error_type = "ServiceError"
    #: Whether the caller caused it (bad input) rather than the service.
    client_error = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

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


def field_problems(errors: Iterable[Mapping[str, Any]], union_tags: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Each pydantic error as ``{"field", "problem"[, "value"]}``: the value only where it is a scalar given."""
    problems: list[dict[str, Any]] = []
    for err in errors:
        loc = list(err["loc"])
        if loc and loc[0] in union_tags:  # a discriminated union puts the tag first; the caller never wrote it
            loc = loc[1:]
        location = ".".join(str(part) for part in loc) or "event"
        if err["type"] == "union_tag_invalid":
            task = err["input"].get("task")
            problems.append(
                {"field": "task", "problem": f"unknown task {task!r}; expected one of {', '.join(union_tags)}"}
            )
            continue
        if err["type"] == "union_tag_not_found":
            problems.append({"field": "task", "problem": f"field required; expected one of {', '.join(union_tags)}"})
            continue
        problem: dict[str, Any] = {"field": location, "problem": err["msg"]}
        given = err.get("input")
        if given is not None and not isinstance(given, dict | list) and err["type"] != "extra_forbidden":
            problem["value"] = given[:80] + "..." if isinstance(given, str) and len(given) > 80 else given
        problems.append(problem)
    return problems


def describe_problems(problems: Iterable[Mapping[str, Any]]) -> str:
    """One phrase per problem: the field path, the problem and the value given."""
    parts = []
    for problem in problems:
        part = f"{problem['field']}: {problem['problem']}"
        if "value" in problem:
            shown = repr(problem["value"])
            part += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
        parts.append(part)
    return "; ".join(parts)


def describe_validation_error(exc: Any, union_tags: tuple[str, ...] = ()) -> str:
    """One phrase per pydantic error: the field path, the problem and the value given."""
    return describe_problems(field_problems(exc.errors(include_url=False), union_tags))
