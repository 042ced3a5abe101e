"""API Gateway front (REST API, Lambda proxy integration): routes, error answers and the OpenAPI document.

- ``POST /summarize``, ``/translate``, ``/chat``: the direct-invoke requests, ``task`` implied by the path.
  200 with the answer when the table holds it or it finishes within the API's budget; otherwise 202
  with the queued answer and ``Location: /results/{id}``.
- ``GET /results/{id}``: a request's result, in whatever state it is.
- ``POST /v1/chat/completions``, ``GET /v1/chat/completions/{id}``, ``GET /v1/models[/{model}]``: the
  OpenAI-style routes (handler/formats/openai_chat.py), answering and erring in OpenAI's shapes.
- ``/v1/files`` and ``/v1/batches``: OpenAI's Files and Batches API over the batch machinery
  (handler/entry/api_batches.py), each caller's own objects only.

Every error is ``{"error": {"type", "message"[, "details"]}}`` (on /v1 routes OpenAI's ``{"error": {"message",
"type", "param", "code"}}``) with a status code that says whose it is.
"""

from __future__ import annotations

import base64
import json
import re
from http import HTTPStatus
from typing import Annotated, Any, Literal, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.models import APIKey, SecurityScheme
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.core.errors import ConfigurationError, InvalidRequest, NotFound
from handler.core.observability import logger, metrics
from handler.domain.answers import Answer, Status
from handler.domain.requests import ChatRequest, SummarizeRequest, TextRequest, TranslateRequest

# The OpenAI-style routes and the console's register on the resolver when their modules are imported, before any
# event is resolved.
from handler.entry import api_batches, api_console, api_openai  # noqa: F401
from handler.entry.api_request_body import MAX_BODY_BYTES
from handler.entry.api_resolver import Prefer, app, prefers_async, route, route_prefix
from handler.entry.api_responses import SUBMIT_NOTE, SUBMIT_RESPONSES, responses
from handler.entry.api_streamed_answers import RESPONSE_STREAM, budget_s, stream_answer
from handler.entry.response_stream import ResponseStream
from handler.entry.runtime import deadline_of, error_answer, get_service
from handler.formats import server_sent_events

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


ResultId = Annotated[str, Path(pattern=RESULT_ID_PATTERN, description="The request's id, from its answer.")]

# -- routes ---------------------------------------------------------------------------------------


@route(
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


@route(
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


@route(
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


@route(
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
    if service.stored_requests.table is None:
        raise ConfigurationError("results are not stored here: TABLE_NAME is not set")
    answer = service.lookup(id)
    if answer is None:
        raise NotFound(f"no result has id {id}")
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, answer)


def _submit(request: TextRequest, prefer: str | None) -> Response[Answer]:
    """Answer from the table, queue, or generate within the API's budget (the service decides which)."""
    service = get_service()
    respond_async = prefers_async(prefer)
    deadline = deadline_of(app.lambda_context, budget_s(service.settings))
    if _wants_events(app.current_event.headers.get("accept")) and not respond_async:
        streamed = stream_answer(
            service,
            request,
            deadline,
            opening=None,
            piece=server_sent_events.text_event,
            closing=lambda answer: [server_sent_events.answer_event(answer)],
            error=lambda exc: server_sent_events.error_event(error_answer(exc), native=True),
        )
        if not isinstance(streamed, Answer):
            return cast(Response[Answer], streamed)  # events: not validated as JSON (api_resolver.py)
        return _answer(streamed)  # queued before any text, or FAILED: answered as without events
    answer = service.answer(request, deadline, respond_async=respond_async, queue_if_late=True)
    # A done result is answered from the table whatever the preference; otherwise the preference was applied.
    applied = {"Preference-Applied": "respond-async"} if respond_async and not answer.cached else None
    return _answer(answer, applied)


def _wants_events(accept: str | None) -> bool:
    """Whether the caller's Accept header asks for server-sent events (the text as it is made)."""
    return any(
        part.split(";")[0].strip().lower() == server_sent_events.EVENT_STREAM for part in (accept or "").split(",")
    )


def _answer(answer: Answer, headers: dict[str, str] | None = None) -> Response[Answer]:
    """200 for a final answer (DONE, FAILED); 202 with the result's Location while it is queued or running."""
    if answer.status in (Status.DONE, Status.FAILED):
        return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, answer, headers)
    headers = {**(headers or {}), "Location": _result_location(answer.id)}
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, answer, headers)


def _result_location(item_id: str) -> str:
    """The result's path as the caller addresses it."""
    return f"{route_prefix()}/results/{item_id}"


# -- entry point and OpenAPI document -------------------------------------------------------------


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Answer an API Gateway REST API proxy event; anything else is answered 400 in the one error shape.

    Server-sent events are answered whole here (a buffered integration, ``sam local start-api``).
    """
    return _resolve(event, context)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def stream_handler(event: Any, context: LambdaContext, stream: ResponseStream) -> None:
    """The same, behind a streaming integration (handler/entry/streaming_runtime_client.py runs it): server-sent events
    go out as they are made and the caller waits STREAM_BUDGET_S; every other answer goes out whole."""
    token = RESPONSE_STREAM.set(stream)
    try:
        result = _resolve(event, context)
    finally:
        RESPONSE_STREAM.reset(token)
    if stream.started:
        return  # streamed as it was made
    headers = {str(name): str(value) for name, value in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(value) for value in values)
    body = result.get("body") or ""
    data = base64.b64decode(body) if result.get("isBase64Encoded") else str(body).encode("utf-8")
    stream.start(int(result["statusCode"]), headers)
    if data:
        stream.write(data)


def _resolve(event: Any, context: LambdaContext) -> dict[str, Any]:
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
