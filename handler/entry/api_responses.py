"""The responses the API declares in its OpenAPI document (handler/entry/api.py and api_openai.py register the
routes that use them), and the wait a throttled caller is told; each error's status comes from its class
(handler/core/errors.py).
"""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader
from pydantic import BaseModel

from handler.domain.answers import Answer, ErrorAnswer
from handler.entry.api_request_body import MAX_BODY_BYTES
from handler.formats.openai_chat import OpenAIErrorAnswer

#: Seconds a throttled caller is asked to wait (DynamoDB on-demand adapts within seconds).
RETRY_AFTER_S = 2


# -- OpenAPI responses ----------------------------------------------------------------------------


def _header(description: str) -> OpenAPIResponseHeader:
    # Sent with every response of its status; Powertools' TypedDict lacks the OpenAPI header's `required`.
    return cast(OpenAPIResponseHeader, {"description": description, "required": True, "schema": {"type": "string"}})


def _error_response(description: str, headers: dict[str, OpenAPIResponseHeader] | None = None) -> OpenAPIResponse:
    response: OpenAPIResponse = {"description": description, "content": {"application/json": {"model": ErrorAnswer}}}
    if headers:
        response["headers"] = headers
    return response


#: A server-sent event stream, as the OpenAPI document describes it (handler/formats/server_sent_events.py).
EVENTS_SCHEMA: dict[str, Any] = {
    "type": "string",
    "description": "Server-sent events: `data: <JSON>` lines, each event ended by an empty line.",
}


_ANSWERED: dict[int, OpenAPIResponse] = {
    200: {"description": "The result: DONE (`cached: true` when read from the table), or FAILED with `last_error`."},
    202: {
        "description": "Queued (PENDING) or in progress (RUNNING): poll `Location` until the status is DONE or FAILED.",
        "headers": {"Location": _header("The result's path, /results/{id}, below the stage prefix of the URL called.")},
    },
}
_ERRORS: dict[int, OpenAPIResponse] = {
    400: _error_response("MalformedJson: the body is empty, not UTF-8, or not valid JSON."),
    404: _error_response("NotFound: no result has this id."),
    405: _error_response("MethodNotAllowed: this path takes another method.", {"Allow": _header("The path's method.")}),
    413: _error_response(
        f"PayloadTooLarge: the body exceeds {MAX_BODY_BYTES} bytes; or InputTooLong: the prompt plus "
        "`max_tokens` exceeds the model's context window (`details` gives the token counts)."
    ),
    415: _error_response("UnsupportedMediaType: the body must be sent as `Content-Type: application/json`."),
    422: _error_response("InvalidRequest: names every bad field, its problem and the value given (`details.fields`)."),
    429: _error_response(
        "StoreError, throttled: the results table is over its capacity; retry later.",
        {"Retry-After": _header("Seconds to wait before retrying.")},
    ),
    503: _error_response(
        "The service cannot answer now: ConfigurationError, ModelLoadError, GenerationError, StoreError or "
        "DeadlineReached.",
        {"Retry-After": _header("Seconds to wait before retrying.")},
    ),
}


def responses(*codes: int) -> dict[int, OpenAPIResponse]:
    return {code: {**_ANSWERED, **_ERRORS}[code] for code in codes}


SUBMIT_RESPONSES = {
    **responses(200, 202, 400, 405, 413, 415, 422, 429, 503),
    200: {
        "description": "The result: DONE (`cached: true` when read from the table), or FAILED with `last_error`. With "
        '`Accept: text/event-stream`, `text` events ({"text"}) as the text is made, then one `answer` event '
        "(this answer) or one `error` event.",
        "content": {"application/json": {"model": Answer}, "text/event-stream": {"schema": EVENTS_SCHEMA}},
    },
}
SUBMIT_NOTE = (
    "Answered from the results table at once when it holds the result (`cached: true`, the model is not loaded). "
    "Otherwise generated within the API's time budget (200), or queued with 202 and `Location` when the request "
    "asks for it (`mode: async` or `Prefer: respond-async`) or is predicted not to finish in the budget."
)


# -- OpenAI-style routes: their answers and OpenAI's error shape ------------------------------------


def _openai_error(description: str, headers: dict[str, OpenAPIResponseHeader] | None = None) -> OpenAPIResponse:
    response: OpenAPIResponse = {
        "description": description,
        "content": {"application/json": {"model": OpenAIErrorAnswer}},
    }
    if headers:
        response["headers"] = headers
    return response


_OPENAI_ERRORS: dict[int, OpenAPIResponse] = {
    400: _openai_error(
        "invalid_request_error: a field is invalid or not supported (`param` names it), the body is not JSON, "
        "the prompt does not fit the context window (`code: context_length_exceeded`) or the output is not the "
        "JSON asked for."
    ),
    404: _openai_error("not_found_error: the model is not served here (`code: model_not_found`), or no such id."),
    405: _openai_error("invalid_request_error: this path takes another method.", {"Allow": _header("The method.")}),
    413: _openai_error(f"invalid_request_error: the body exceeds {MAX_BODY_BYTES} bytes."),
    415: _openai_error("invalid_request_error: send the body as `Content-Type: application/json`."),
    429: _openai_error(
        "rate_limit_error: the results table is over its capacity; retry later.",
        {"Retry-After": _header("Seconds to wait before retrying.")},
    ),
    503: _openai_error(
        "server_error: the service cannot answer now.", {"Retry-After": _header("Seconds to wait before retrying.")}
    ),
    401: _openai_error(
        "invalid_request_error (`code: unauthenticated`): the request carries no caller identity (API key or IAM "
        "principal) to keep files and batches under."
    ),
    409: _openai_error("invalid_request_error (`code: Conflict`): the batch has ended and cannot be cancelled."),
}


def openai_object_responses(
    answer: type[BaseModel] | None, *codes: int, changed: dict[int, OpenAPIResponse] | None = None
) -> dict[int, OpenAPIResponse]:
    """The responses of a Files or Batches route: ``answer`` as JSON for 200 (None: the route answers a file's
    bytes), OpenAI's error shape otherwise; ``changed`` replaces a code's description."""
    whole: dict[int, OpenAPIResponse] = {
        200: {"description": "The object.", "content": {"application/json": {"model": answer}}}
        if answer is not None
        else {"description": "The file's bytes.", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
        **_OPENAI_ERRORS,
        **(changed or {}),
    }
    return {code: whole[code] for code in codes}


def openai_error_response(description: str) -> OpenAPIResponse:
    return _openai_error(description)


def openai_responses(answer: type[BaseModel], *codes: int) -> dict[int, OpenAPIResponse]:
    """The responses of an OpenAI-style route: ``answer`` for 200 (and 202), OpenAI's error shape otherwise."""
    answered: dict[int, OpenAPIResponse] = {
        200: {
            "description": "The answer; with `stream: true`, `chat.completion.chunk` events as the text is made.",
            "content": {"application/json": {"model": answer}, "text/event-stream": {"schema": EVENTS_SCHEMA}},
        },
        202: {
            "description": "Queued or running: no choices yet; read `Location` (or the SDK's retrieve) until done.",
            "content": {"application/json": {"model": answer}},
            "headers": {"Location": _header("The completion's path, below the stage prefix of the URL called.")},
        },
    }
    return {code: {**answered, **_OPENAI_ERRORS}[code] for code in codes}
