"""Errors the service answers with, each mapped to one answer shape in one place.

ServiceError
├── InvalidRequest      the event does not match any request schema
├── InputTooLong        the prompt plus max_tokens does not fit the context window
├── ConfigurationError  the environment settings are invalid
├── ModelLoadError      the GGUF could not be loaded
├── GenerationError     llama.cpp failed while generating
├── DeadlineReached     the generation could not finish before its deadline
└── StoreError          the results table could not be read or written
"""

from __future__ import annotations

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


def describe_validation_error(exc: Any, union_tags: tuple[str, ...] = ()) -> str:
    """One phrase per pydantic error: the field path, the problem and the value given."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        if loc and loc[0] in union_tags:  # a discriminated union puts the tag first; the caller never wrote it
            loc = loc[1:]
        location = ".".join(str(part) for part in loc) or "event"
        if err["type"] == "union_tag_invalid":
            problem = f"task: unknown task {err['input'].get('task')!r}; expected one of {', '.join(union_tags)}"
        elif err["type"] == "union_tag_not_found":
            problem = f"task: field required; expected one of {', '.join(union_tags)}"
        else:
            problem = f"{location}: {err['msg']}"
            given = err.get("input")
            if given is not None and not isinstance(given, dict | list) and err["type"] != "extra_forbidden":
                shown = repr(given)
                problem += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
        parts.append(problem)
    return "; ".join(parts)
