"""Errors the service answers with: each one answer shape, and an HTTP status that follows from its class.

ServiceError                      every error the service answers with: {"error": {"type", "message"[, "details"]}}
├── ClientError              4xx  the caller's mistake: the same request fails until the caller changes it
│   ├── InvalidRequest       422  the event does not match any request schema
│   ├── InputTooLong         413  the prompt plus max_tokens does not fit the context window
│   ├── OutputInvalid        422  the output is not the JSON its response format asks for
│   ├── MalformedJson        400  (API) the body is not well-formed UTF-8 JSON
│   ├── PayloadTooLarge      413  (API) the body is larger than the API accepts
│   ├── UnsupportedMediaType 415  (API) the body is not declared as JSON
│   ├── NotFound             404  (API) no route, or no result, has this path
│   └── MethodNotAllowed     405  (API) the path exists, but not with this method
└── ServerError              503  the service's failure: it cannot answer now, the same request may succeed later
    ├── ConfigurationError   503  the environment settings are invalid
    ├── ModelLoadError       503  the GGUF could not be loaded
    ├── GenerationError      503  llama.cpp failed while generating
    │   └── ChunkFailed      503  a chunk of a document failed for good
    ├── DeadlineReached      503  the generation could not finish before its deadline
    └── StoreError           503  the results table could not be read or written (429 when it throttled)
        └── InputGone        503  (handler/storage/bucket.py) a batch's input file was deleted or replaced

An error that is no ServiceError is a bug: it is answered 500 without its details (``status_of``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the service reports to its caller."""

    #: The ``type`` field of the error answer.
    error_type: ClassVar[str] = "ServiceError"
    #: The HTTP status the API answers it with: a subclass whose status differs from its base's says so.
    http_status: ClassVar[HTTPStatus] = HTTPStatus.SERVICE_UNAVAILABLE

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

    def status(self) -> HTTPStatus:
        """This error's HTTP status: its class's, unless the class says it depends on the error (StoreError)."""
        return self.http_status

    def to_answer(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` answer body."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class ClientError(ServiceError):
    """The caller's mistake: the same request fails again until the caller changes it."""

    http_status = HTTPStatus.BAD_REQUEST


class ServerError(ServiceError):
    """The service's failure: it cannot answer now, and the same request may succeed later."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class InvalidRequest(ClientError):
    """The event does not match any request schema."""

    error_type = "InvalidRequest"
    http_status = HTTPStatus.UNPROCESSABLE_ENTITY


class InputTooLong(ClientError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""

    error_type = "InputTooLong"
    http_status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class OutputInvalid(ClientError):
    """The output is not the JSON its response format asks for (cut off, or off the schema)."""

    error_type = "OutputInvalid"
    http_status = HTTPStatus.UNPROCESSABLE_ENTITY


class MalformedJson(ClientError):
    """The API request body is not well-formed UTF-8 JSON."""

    error_type = "MalformedJson"


class PayloadTooLarge(ClientError):
    """The API request body is larger than the API accepts."""

    error_type = "PayloadTooLarge"
    http_status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(ClientError):
    """The API request body is not declared as JSON."""

    error_type = "UnsupportedMediaType"
    http_status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class NotFound(ClientError):
    """No API route, or no result, has this path."""

    error_type = "NotFound"
    http_status = HTTPStatus.NOT_FOUND


class Unauthenticated(ClientError):
    """The request carries no identity that a caller's own objects (files, batches) could be kept under."""

    error_type = "Unauthenticated"
    http_status = HTTPStatus.UNAUTHORIZED


class Conflict(ClientError):
    """The request does not fit the state of what it names (cancelling a batch that has ended)."""

    error_type = "Conflict"
    http_status = HTTPStatus.CONFLICT


class MethodNotAllowed(ClientError):
    """The API path exists, but not with this method."""

    error_type = "MethodNotAllowed"
    http_status = HTTPStatus.METHOD_NOT_ALLOWED


class ConfigurationError(ServerError):
    """An environment setting is missing or invalid."""

    error_type = "ConfigurationError"


class ModelLoadError(ServerError):
    """The GGUF model could not be loaded."""

    error_type = "ModelLoadError"


class GenerationError(ServerError):
    """llama.cpp failed while generating."""

    error_type = "GenerationError"


class ChunkFailed(GenerationError):
    """A chunk of a document failed for good, so the document cannot be answered either."""


class DeadlineReached(ServerError):
    """The generation could not finish before its deadline (the request is queued, not lost)."""

    error_type = "DeadlineReached"


class StoreError(ServerError):
    """The results table could not be read or written."""

    error_type = "StoreError"
    #: The status when the table refused for its capacity (``details["throttled"]``): the caller retries later.
    throttled_status: ClassVar[HTTPStatus] = HTTPStatus.TOO_MANY_REQUESTS

    @property
    def throttled(self) -> bool:
        """Whether the table refused for its capacity rather than failed."""
        return bool(self.details.get("throttled"))

    def status(self) -> HTTPStatus:
        return self.throttled_status if self.throttled else self.http_status


def status_of(exc: BaseException) -> HTTPStatus:
    """The HTTP status an error is answered with: a service error's own, 500 for any other (a bug)."""
    return exc.status() if isinstance(exc, ServiceError) else HTTPStatus.INTERNAL_SERVER_ERROR


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
