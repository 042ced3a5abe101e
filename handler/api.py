"""API Gateway front (REST API, Lambda proxy integration): routes, error answers and the OpenAPI document.

- ``POST /summarize``, ``/translate``, ``/chat``: the direct-invoke requests, ``task`` implied by the path.
  200 with the answer when the table holds it or it finishes within the API's budget; otherwise 202
  with the queued answer and ``Location: /results/{id}``.
- ``GET /results/{id}``: a request's result, in whatever state it is.
- ``POST /v1/chat/completions``, ``GET /v1/chat/completions/{id}``, ``GET /v1/models[/{model}]``: the
  OpenAI-style routes (handler/openai_api.py), answering and erring in OpenAI's shapes.

Every error is ``{"error": {"type", "message"[, "details"]}}`` (on /v1 routes OpenAI's ``{"error": {"message",
"type", "param", "code"}}``) with a status code that says whose it is.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any, Literal, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
    OpenAPIResponseValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import APIKey, SecurityScheme
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler import openai_api
from handler.api_rules import (
    MAX_BODY_BYTES,
    RETRY_AFTER_S,
    SUBMIT_NOTE,
    SUBMIT_RESPONSES,
    body_bytes,
    check_json,
    check_media_type,
    openai_responses,
    responses,
    status_of,
)
from handler.errors import (
    ConfigurationError,
    GenerationError,
    InvalidRequest,
    MalformedJson,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    describe_problems,
    field_problems,
)
from handler.items import Status
from handler.observability import logger, metrics
from handler.runtime import deadline_of, error_answer, get_service
from handler.schemas import Answer, ChatRequest, SummarizeRequest, TextRequest, TranslateRequest
from handler.service import TextService, parse_request

API_TITLE = "llm-service"
API_VERSION = "1.0.0"
RESULT_ID_PATTERN = r"^[0-9a-f]{64}$"

# -- request bodies: the shared request types, with task implied by the path ------------------------


class SummarizeBody(SummarizeRequest):
    """Summarize a text as bullet points (default) or as one paragraph."""

    task: Literal["summarize"] = "summarize"


class TranslateBody(TranslateRequest):
    """Translate a text into a language named in words (default Japanese)."""

    task: Literal["translate"] = "translate"


class ChatBody(ChatRequest):
    """Answer a conversation of system, user and assistant messages (at least one user message)."""

    task: Literal["chat"] = "chat"


Prefer = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="`respond-async` (RFC 7240): queue the request and answer 202 at once, as `mode: async` does.",
    ),
]
ResultId = Annotated[str, Path(pattern=RESULT_ID_PATTERN, description="The request's id, from its answer.")]

# -- the resolver ---------------------------------------------------------------------------------


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
_validate_response = OpenAPIResponseValidationMiddleware(has_response_validation_error=True)
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


def _route(method: str, rule: str, *, takes_body: bool, **openapi: Any) -> Callable[[F], F]:
    """Register an operation with its validation; a body is checked first where it takes one."""
    _ROUTE_METHODS.append((re.compile("^" + re.sub(r"<\w+>", "[^/]+", rule) + "$"), method))
    checks: list[Callable[..., Any]] = [_join_repeated_headers, *([_check_body] if takes_body else [])]
    return app.route(rule, method, middlewares=[*checks, _validate_request, _validate_response], **openapi)


# -- routes ---------------------------------------------------------------------------------------


@_route(
    "POST",
    "/summarize",
    takes_body=True,
    operation_id="summarize",
    summary="Summarize a text",
    description=SUBMIT_NOTE,
    responses=SUBMIT_RESPONSES,
    tags=["requests"],
)
def summarize(request: Annotated[SummarizeBody, Body()], prefer: Prefer = None) -> Response[Answer]:
    """Summarize the body's text."""
    return _submit(request, prefer)


@_route(
    "POST",
    "/translate",
    takes_body=True,
    operation_id="translate",
    summary="Translate a text",
    description=SUBMIT_NOTE,
    responses=SUBMIT_RESPONSES,
    tags=["requests"],
)
def translate(request: Annotated[TranslateBody, Body()], prefer: Prefer = None) -> Response[Answer]:
    """Translate the body's text."""
    return _submit(request, prefer)


@_route(
    "POST",
    "/chat",
    takes_body=True,
    operation_id="chat",
    summary="Answer a conversation",
    description=SUBMIT_NOTE,
    responses=SUBMIT_RESPONSES,
    tags=["requests"],
)
def chat(request: Annotated[ChatBody, Body()], prefer: Prefer = None) -> Response[Answer]:
    """Answer the body's conversation."""
    return _submit(request, prefer)


@_route(
    "GET",
    "/results/<id>",
    takes_body=False,
    operation_id="getResult",
    summary="Read a request's result",
    description="The stored state of a request: PENDING, RUNNING, DONE or FAILED (with `last_error`).",
    responses=responses(200, 404, 405, 422, 429, 503),
    tags=["results"],
)
def get_result(id: ResultId) -> Response[Answer]:
    """The stored state of the request with this id."""
    service = get_service()
    if service.store is None:
        raise ConfigurationError("results are not stored here: TABLE_NAME is not set")
    answer = service.lookup(id)
    if answer is None:
        raise NotFound(f"no result has id {id}")
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, answer)


# -- OpenAI-style routes (handler/openai_api.py) --------------------------------------------------

CompletionId = Annotated[
    str,
    Path(pattern=r"^chatcmpl-[0-9a-f]{64}$", description="The completion's id, from its answer or Location."),
]
ModelName = Annotated[str, Path(min_length=1, max_length=256, description="A model id, as GET /v1/models lists it.")]


@_route(
    "POST",
    "/v1/chat/completions",
    takes_body=True,
    operation_id="createChatCompletion",
    summary="Create a chat completion (OpenAI-style)",
    description="OpenAI's chat completion request over the native `chat` task (the same request is the same "
    "stored item). 200 with a `chat.completion`; 202 with it (no choices yet, `llm_service.status` PENDING) "
    "and `Location: /v1/chat/completions/{id}` when it cannot finish within the API's budget. Errors in "
    "OpenAI's shape.",
    responses=openai_responses(openai_api.ChatCompletion, 200, 202, 400, 404, 405, 413, 415, 429, 503),
    tags=["openai"],
)
def create_chat_completion(
    request: Annotated[openai_api.ChatCompletionCreate, Body()], prefer: Prefer = None
) -> Response[openai_api.ChatCompletion]:
    """Answer a chat completion request from the table, by generating, or by queueing it."""
    service = get_service()
    served = service.served_model()
    native = parse_request(openai_api.native_request(request, served))
    respond_async = _prefers_async(prefer)
    deadline = deadline_of(app.lambda_context, service.settings.api_budget_s)
    answer = service.answer(native, deadline, respond_async=respond_async, queue_if_late=True)
    return _completion_response(answer, served)


@_route(
    "GET",
    "/v1/chat/completions/<completion_id>",
    takes_body=False,
    operation_id="getChatCompletion",
    summary="Read a chat completion (OpenAI-style)",
    description="A completion made or queued by POST /v1/chat/completions (or the same native chat request): "
    "200 when done, 202 while queued or running.",
    responses=openai_responses(openai_api.ChatCompletion, 200, 202, 400, 404, 405, 429, 503),
    tags=["openai"],
)
def get_chat_completion(completion_id: CompletionId) -> Response[openai_api.ChatCompletion]:
    """The completion with this id, in whatever state it is."""
    service = get_service()
    if service.store is None:
        raise ConfigurationError("results are not stored here: TABLE_NAME is not set")
    answer = service.lookup(completion_id.removeprefix(openai_api.COMPLETION_PREFIX))
    if answer is None or answer.task != "chat":
        raise NotFound(f"no chat completion has id {completion_id}", code="not_found", param="completion_id")
    return _completion_response(answer, service.served_model())


@_route(
    "GET",
    "/v1/models",
    takes_body=False,
    operation_id="listModels",
    summary="List the served model (OpenAI-style)",
    responses=openai_responses(openai_api.ModelList, 200, 405),
    tags=["openai"],
)
def list_models() -> Response[openai_api.ModelList]:
    """The one model this API serves."""
    service = get_service()
    body = openai_api.models_list(service.served_model(), _model_created(service))
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, body)


@_route(
    "GET",
    "/v1/models/<model>",
    takes_body=False,
    operation_id="retrieveModel",
    summary="Describe the served model (OpenAI-style)",
    responses=openai_responses(openai_api.ModelCard, 200, 400, 404, 405),
    tags=["openai"],
)
def retrieve_model(model: ModelName) -> Response[openai_api.ModelCard]:
    """The served model, by its id."""
    service = get_service()
    served = service.served_model()
    if model != served:
        raise NotFound(f"model {model[:100]!r} is not served here; this API serves {served!r}", code="model_not_found")
    body = openai_api.model_card(served, _model_created(service))
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, body)


def _model_created(service: TextService) -> int:
    """When the served model file was made, as OpenAI's ``created`` (seconds since the epoch)."""
    try:
        return int(service.settings.model_path.stat().st_mtime)
    except OSError:
        return 0


def _completion_response(answer: Answer, served: str) -> Response[openai_api.ChatCompletion]:
    if answer.status == Status.FAILED:
        raise GenerationError(
            f"the request failed: {answer.last_error or 'no reason recorded'}",
            log_message="a stored request failed",
            id=answer.id,
        )
    body = openai_api.completion(answer, served)
    if answer.status == Status.DONE:
        return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, body)
    location = _route_prefix() + f"/v1/chat/completions/{openai_api.COMPLETION_PREFIX}{answer.id}"
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, body, {"Location": location})


def _submit(request: TextRequest, prefer: str | None) -> Response[Answer]:
    """Answer from the table, queue, or generate within the API's budget (the service decides which)."""
    service = get_service()
    respond_async = _prefers_async(prefer)
    deadline = deadline_of(app.lambda_context, service.settings.api_budget_s)
    answer = service.answer(request, deadline, respond_async=respond_async, queue_if_late=True)
    # A done result is answered from the table whatever the preference; otherwise the preference was applied.
    applied = {"Preference-Applied": "respond-async"} if respond_async and not answer.cached else None
    return _answer(answer, applied)


def _answer(answer: Answer, headers: dict[str, str] | None = None) -> Response[Answer]:
    """200 for a final answer (DONE, FAILED); 202 with the result's Location while it is queued or running."""
    if answer.status in (Status.DONE, Status.FAILED):
        return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, answer, headers)
    headers = {**(headers or {}), "Location": _result_location(answer.id)}
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, answer, headers)


def _result_location(item_id: str) -> str:
    """The result's path as the caller addresses it."""
    return f"{_route_prefix()}/results/{item_id}"


def _route_prefix() -> str:
    """What the caller's URL has before the route: execute-api URLs carry the stage."""
    event = app.current_event
    called = (event.raw_event.get("requestContext") or {}).get("path") or event.path
    return called[: -len(event.path)] if event.path and called.endswith(event.path) else ""


def _prefers_async(prefer: str | None) -> bool:
    """Whether a Prefer header (RFC 7240, comma-separated preferences) asks for an asynchronous answer."""
    if not prefer:
        return False
    names = (preference.split(";")[0].split("=")[0].strip().lower() for preference in prefer.split(","))
    return "respond-async" in names


# -- errors ---------------------------------------------------------------------------------------


def _error(exc: Exception, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    status = status_of(exc)
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_S)}
    body = error_answer(exc)  # logged here, whatever shape the answer takes
    if app.current_event.path.startswith("/v1/"):
        status, body = openai_api.error_body(exc, status)
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


# -- entry point and OpenAPI document -------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Answer an API Gateway REST API proxy event; anything else is answered 400 in the one error shape."""
    if not (
        isinstance(event, dict) and isinstance(event.get("httpMethod"), str) and isinstance(event.get("path"), str)
    ):
        problem = InvalidRequest("the API handler takes an API Gateway REST proxy event (httpMethod and path)")
        return {
            "statusCode": HTTPStatus.BAD_REQUEST,
            "headers": {"Content-Type": content_types.APPLICATION_JSON},
            "body": json.dumps(error_answer(problem)),
            "isBase64Encoded": False,
        }
    return app.resolve(event, context)


_DESCRIPTION = f"""\
Summaries, translations and chat answers from a quantized LLM on AWS Lambda, every result kept in DynamoDB.

A request's id is the sha256 of its task, inputs, output-changing options, the model and the prompt version:
the same request always has the same id, and a finished result is served from the table (`cached: true`)
without loading the model. A request that cannot finish within the API's time budget (API Gateway's REST API
waits 29 s) is queued and answered with 202 and `Location: /results/{{id}}`; poll it until DONE or FAILED.

Bodies are JSON (`Content-Type: application/json`), at most {MAX_BODY_BYTES} bytes. Every error is
`{{"error": {{"type", "message"[, "details"]}}}}`.

Authorization is the deployment's: IAM (requests signed with SigV4) by default, or an API key of the stack's
usage plan in `x-api-key`; API Gateway refuses unauthorized requests (403) before they reach this function.
"""

_SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    "sigv4": APIKey.model_validate(
        {
            "type": "apiKey",
            "name": "Authorization",
            "in": "header",
            "description": "IAM: requests signed with AWS Signature Version 4 (the default deployment).",
            "x-amazon-apigateway-authtype": "awsSigv4",
        }
    ),
    "apiKey": APIKey.model_validate(
        {
            "type": "apiKey",
            "name": "x-api-key",
            "in": "header",
            "description": "An API key of the stack's usage plan (deployments with API key authorization).",
        }
    ),
}


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, generated from the routes and the request and answer types."""
    document: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(
            title=API_TITLE,
            version=API_VERSION,
            description=_DESCRIPTION,
            security_schemes=_SECURITY_SCHEMES,
            security=[{"sigv4": []}, {"apiKey": []}],
        )
    )
    return _without_unused_schemas(document)


def _without_unused_schemas(document: dict[str, Any]) -> dict[str, Any]:
    # Powertools always adds its own validation error schemas; this API answers errors as ErrorAnswer.
    schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
    used: set[str] = set()
    pending = [{key: value for key, value in document.items() if key != "components"}]
    while pending:
        refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(pending.pop()))) - used
        used |= refs
        pending.extend(schemas[name] for name in refs if name in schemas)
    for name in set(schemas) - used:
        del schemas[name]
    return document
