"""The API's resolver: routes registered with their checks (body first, then validation), and every error
answered in one shape (OpenAI's on /v1 routes) with a status code that says whose it is.

Route modules (handler/entry/api.py, handler/entry/api_openai.py) register on ``app`` through ``route``.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
    OpenAPIResponseValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Header

from handler.core.errors import (
    InvalidRequest,
    MalformedJson,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    describe_problems,
    field_problems,
    status_of,
)
from handler.entry.api_request_body import (
    MAX_BODY_BYTES,
    MAX_UPLOAD_BYTES,
    body_bytes,
    check_json,
    check_media_type,
    check_multipart,
)
from handler.entry.api_responses import RETRY_AFTER_S
from handler.entry.runtime import error_answer
from handler.formats import openai_chat

Prefer = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="`respond-async` (RFC 7240): queue the request and answer 202 at once, as `mode: async` does.",
    ),
]


def _cors(origins: str) -> CORSConfig | None:
    """CORS for the browser origins in CORS_ORIGIN (comma-separated); none: CORS off."""
    allowed = [origin.strip() for origin in origins.split(",") if origin.strip()]
    if not allowed:
        return None
    return CORSConfig(
        allow_origin=allowed[0],
        extra_origins=allowed[1:],
        allow_headers=["Prefer"],
        expose_headers=["Location", "Preference-Applied", "Retry-After", "Allow"],
        max_age=600,
    )


# Powertools' enable_validation=True runs request validation before every other middleware, so nothing
# could refuse an oversized or non-JSON body before it is parsed. The same validation middlewares run
# here per route instead, after _check_body. Response validation failures raise ResponseValidationError
# (an InternalError here) rather than a RequestValidationError that would read as the caller's fault.
app = APIGatewayRestResolver(cors=_cors(os.environ.get("CORS_ORIGIN", "")))
_validate_request = OpenAPIRequestValidationMiddleware()  # type: ignore[no-untyped-call]


class _JsonResponseValidation(OpenAPIResponseValidationMiddleware):
    """Powertools' response validation for JSON answers; a server-sent event stream (its body the events, or
    sent already behind a streaming integration) is no JSON document to validate against the route's type."""

    def _handle_response(self, *, route: Any, response: Response[Any]) -> Response[Any]:
        if not response.is_json():
            return response
        return super()._handle_response(route=route, response=response)  # type: ignore[no-any-return]


_validate_response = _JsonResponseValidation(has_response_validation_error=True)
#: (path pattern, method) of every route: Powertools answers a known path with another method as not found.
_ROUTE_METHODS: list[tuple[re.Pattern[str], str]] = []

F = TypeVar("F", bound=Callable[..., Any])


def _check_body(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Refuse, before parsing, a body that is too large, not declared as JSON, or not well-formed JSON."""
    event = app.current_event
    body = body_bytes(event)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"the request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES} bytes",
            size_bytes=len(body),
            limit_bytes=MAX_BODY_BYTES,
        )
    check_media_type(event.headers.get("content-type"))
    check_json(body)
    # Media types are case-insensitive, but Powertools parses a body as JSON only for a lowercase one.
    headers = event.raw_event.get("headers") or {}
    for name in headers:
        if name.lower() == "content-type":
            headers[name] = "application/json"
    return next_middleware(app)


def _check_upload(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Refuse, before parsing, an upload that is too large or not multipart/form-data with a boundary."""
    event = app.current_event
    body = body_bytes(event)
    if len(body) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(
            f"the upload is {len(body)} bytes; the limit is {MAX_UPLOAD_BYTES} bytes (split the batch into files "
            "of fewer lines)",
            size_bytes=len(body),
            limit_bytes=MAX_UPLOAD_BYTES,
        )
    check_multipart(event.headers.get("content-type"))
    if not event.is_base64_encoded:
        # Without the binary media type, API Gateway hands the body over as UTF-8 text; Powertools' multipart parser
        # reads such a body as Latin-1. Handed over as bytes, the upload is read as it was sent.
        event.raw_event["body"] = base64.b64encode(body).decode("ascii")
        event.raw_event["isBase64Encoded"] = True
    return next_middleware(app)


def _join_repeated_headers(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """A header sent more than once is one header whose values are joined with commas (RFC 9110 5.3).

    API Gateway keeps every value in ``multiValueHeaders``, which Powertools validates against the declared
    type: a repeated ``Prefer`` would otherwise be refused as "not a valid string".
    """
    headers = app.current_event.raw_event.get("multiValueHeaders") or {}
    for name, values in headers.items():
        if isinstance(values, list) and len(values) > 1:
            headers[name] = [", ".join(str(value) for value in values)]
    return next_middleware(app)


def route(method: str, rule: str, *, takes_body: bool, takes_upload: bool = False, **openapi: Any) -> Callable[[F], F]:
    """Register an operation with its validation; a body (JSON, or a multipart upload) is checked first where it
    takes one."""
    _ROUTE_METHODS.append((re.compile("^" + re.sub(r"<\w+>", "[^/]+", rule) + "$"), method))
    body_check = [_check_body] if takes_body else [_check_upload] if takes_upload else []
    checks: list[Callable[..., Any]] = [_join_repeated_headers, *body_check]
    return app.route(rule, method, middlewares=[*checks, _validate_request, _validate_response], **openapi)


def route_prefix() -> str:
    """What the caller's URL has before the route: execute-api URLs carry the stage."""
    event = app.current_event
    called = (event.raw_event.get("requestContext") or {}).get("path") or event.path
    return called[: -len(event.path)] if event.path and called.endswith(event.path) else ""


def prefers_async(prefer: str | None) -> bool:
    """Whether a Prefer header (RFC 7240, comma-separated preferences) asks for an asynchronous answer."""
    if not prefer:
        return False
    names = (preference.split(";")[0].split("=")[0].strip().lower() for preference in prefer.split(","))
    return "respond-async" in names


# -- errors ---------------------------------------------------------------------------------------


def _error(exc: Exception, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    status = status_of(exc)
    if status in (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE):
        # Both say "not now": the caller is told when to come back (RFC 9110, 10.2.3), as SDKs' retries read it.
        headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_S)}
    body = error_answer(exc)  # logged here, whatever shape the answer takes
    if app.current_event.path.startswith("/v1/"):
        status, body = openai_chat.error_body(exc, status)
    return Response(status, content_types.APPLICATION_JSON, body, headers)


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def _invalid_request(exc: RequestValidationError) -> Response[dict[str, Any]]:
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):  # _check_body parses first; kept for safety
        return _error(MalformedJson("the request body is not valid JSON"))
    # Powertools prefixes where each error is (body, path, header); the caller named only the field.
    problems = field_problems({**err, "loc": tuple(err["loc"])[1:] or tuple(err["loc"])} for err in errors)
    return _error(InvalidRequest(describe_problems(problems), fields=problems))


@app.exception_handler(ServiceError)  # type: ignore[untyped-decorator]
def _service_error(exc: ServiceError) -> Response[dict[str, Any]]:
    return _error(exc)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def _unexpected(exc: Exception) -> Response[dict[str, Any]]:
    return _error(exc)  # logged with its traceback, answered without it


@app.not_found
def _not_found(exc: NotFoundError) -> Response[dict[str, Any]]:
    event = app.current_event
    path, method = event.path, event.http_method.upper()
    allowed = sorted({m for pattern, m in _ROUTE_METHODS if pattern.match(path)})
    # With the right method, the path only looked like a route (a segment Powertools does not match).
    if allowed and method not in allowed:
        error = MethodNotAllowed(
            f"{method} is not allowed on {path[:200]}; use {', '.join(allowed)}",
            log_message=f"{method} is not allowed on a route of {', '.join(allowed)}",
            allowed=allowed,
        )
        return _error(error, {"Allow": ", ".join(allowed)})
    # The path is the caller's text (it may hold an id, a name, a secret): answered, never logged.
    return _error(
        NotFound(
            f"no route {method[:20]} {path[:200]}; see the API's OpenAPI document",
            log_message=f"no route {method[:20]} (a path of {len(path)} characters)",
        )
    )
