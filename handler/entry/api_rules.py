"""The API's HTTP rules that need no resolver: body checks before parsing, each error's status code, and
the responses the OpenAPI document declares (handler/entry/api.py registers the routes that use them).
"""

from __future__ import annotations

import base64
import binascii
import json
from http import HTTPStatus
from typing import Any, cast

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic import BaseModel

from handler.core.errors import (
    InputTooLong,
    InvalidRequest,
    MalformedJson,
    MethodNotAllowed,
    NotFound,
    OutputInvalid,
    PayloadTooLarge,
    ServiceError,
    StoreError,
    UnsupportedMediaType,
)
from handler.formats.openai_chat import OpenAIErrorAnswer
from handler.formats.schemas import Answer, ErrorAnswer

#: Largest request body accepted, checked before the body is parsed (API Gateway itself allows 10 MB): a
#: queued request is stored whole, and its item, with the result added later, must stay under DynamoDB's 400 KB.
MAX_BODY_BYTES = 256 * 1024
#: Seconds a throttled caller is asked to wait (DynamoDB on-demand adapts within seconds).
RETRY_AFTER_S = 2


# -- body checks ----------------------------------------------------------------------------------


def body_bytes(event: BaseProxyEvent) -> bytes:
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedJson("the request body is marked base64-encoded but is not valid base64") from exc
    return body.encode("utf-8", errors="surrogatepass")


def check_media_type(content_type: str | None) -> None:
    if not content_type:
        raise UnsupportedMediaType("send the body with Content-Type: application/json")
    media_type, *parameters = content_type.split(";")
    if media_type.strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {media_type.strip()[:100]!r}",
            log_message="Content-Type is not application/json",
            content_type=content_type[:200],
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {"utf-8", "utf8"}:
            raise UnsupportedMediaType(
                "JSON is UTF-8: send charset=utf-8 or no charset", content_type=content_type[:200]
            )


def check_json(body: bytes) -> None:
    if not body.strip():
        raise MalformedJson("the request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"the request body is not UTF-8 (invalid byte at offset {exc.start})") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
        # A "\ud800" escape parses into a lone surrogate, which is no text: the model and the table refuse it.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        raise MalformedJson(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            line=exc.lineno,
            column=exc.colno,
        ) from exc
    except UnicodeEncodeError as exc:
        raise MalformedJson("the request body has a \\u escape of an unpaired UTF-16 surrogate") from exc
    except RecursionError as exc:
        raise MalformedJson("the request body is nested too deeply") from exc
    except ValueError as exc:  # int() refuses numbers of more than 4300 digits
        raise MalformedJson("the request body has a number too long to read") from exc
    if isinstance(value, list):
        # One request per body: an array would otherwise be read as its first element, the rest dropped unsaid.
        problem = f"Input should be a valid dictionary: one request per body, got an array of {len(value)}"
        raise InvalidRequest(f"body: {problem}", fields=[{"field": "body", "problem": problem}])


def _reject_constant(name: str) -> Any:
    raise MalformedJson(f"the request body is not valid JSON: {name} is not a JSON number")


# -- status codes ---------------------------------------------------------------------------------

_STATUS: dict[type[ServiceError], HTTPStatus] = {
    MalformedJson: HTTPStatus.BAD_REQUEST,
    NotFound: HTTPStatus.NOT_FOUND,
    MethodNotAllowed: HTTPStatus.METHOD_NOT_ALLOWED,
    PayloadTooLarge: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    InputTooLong: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaType: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    InvalidRequest: HTTPStatus.UNPROCESSABLE_ENTITY,
    OutputInvalid: HTTPStatus.UNPROCESSABLE_ENTITY,
}


def status_of(exc: Exception) -> HTTPStatus:
    if not isinstance(exc, ServiceError):
        return HTTPStatus.INTERNAL_SERVER_ERROR
    if isinstance(exc, StoreError) and exc.details.get("throttled"):
        return HTTPStatus.TOO_MANY_REQUESTS
    # Anything else the service reports is on its side: configuration, model, generation, table.
    return next((_STATUS[cls] for cls in type(exc).__mro__ if cls in _STATUS), HTTPStatus.SERVICE_UNAVAILABLE)


# -- OpenAPI responses ----------------------------------------------------------------------------


def _header(description: str) -> OpenAPIResponseHeader:
    # Sent with every response of its status; Powertools' TypedDict lacks the OpenAPI header's `required`.
    return cast(OpenAPIResponseHeader, {"description": description, "required": True, "schema": {"type": "string"}})


def _error_response(description: str, headers: dict[str, OpenAPIResponseHeader] | None = None) -> OpenAPIResponse:
    response: OpenAPIResponse = {"description": description, "content": {"application/json": {"model": ErrorAnswer}}}
    if headers:
        response["headers"] = headers
    return response


#: A server-sent event stream, as the OpenAPI document describes it (handler/formats/event_stream.py).
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
        "DeadlineReached."
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
    503: _openai_error("server_error: the service cannot answer now."),
}


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
