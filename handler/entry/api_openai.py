"""The API's OpenAI-style routes (handler/formats/openai_chat.py): chat completions and the served model,
answering and erring in OpenAI's shapes. Registered on the resolver when handler/entry/api.py imports this module.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Annotated, Any, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Path

from handler.core.errors import ConfigurationError, GenerationError, NotFound, status_of
from handler.domain.answers import Answer, Status
from handler.domain.requests import TextRequest, parse_request
from handler.entry.api_resolver import Prefer, app, prefers_async, route, route_prefix
from handler.entry.api_responses import openai_responses
from handler.entry.api_streamed_answers import budget_s, stream_answer
from handler.entry.runtime import deadline_of, error_answer, get_service
from handler.formats import openai_chat, server_sent_events
from handler.usecases.text_service import TextService

CompletionId = Annotated[
    str,
    Path(pattern=r"^chatcmpl-[0-9a-f]{64}$", description="The completion's id, from its answer or Location."),
]
ModelName = Annotated[str, Path(min_length=1, max_length=256, description="A model id, as GET /v1/models lists it.")]


@route(
    "POST",
    "/v1/chat/completions",
    takes_body=True,
    operation_id="createChatCompletion",
    summary="Create a chat completion (OpenAI-style)",
    description="OpenAI's chat completion request over the native `chat` task (the same request is the same "
    "stored item). 200 with a `chat.completion`; 202 with it (no choices yet, `llm_service.status` PENDING) "
    "and `Location: /v1/chat/completions/{id}` when it cannot finish within the API's budget. Errors in "
    "OpenAI's shape.",
    responses=openai_responses(openai_chat.ChatCompletion, 200, 202, 400, 404, 405, 413, 415, 429, 503),
    tags=["openai"],
)
def create_chat_completion(
    request: Annotated[openai_chat.ChatCompletionCreate, Body()], prefer: Prefer = None
) -> Response[openai_chat.ChatCompletion]:
    """Answer a chat completion request from the table, by generating, or by queueing it; streamed as
    ``chat.completion.chunk`` events with ``stream: true``."""
    service = get_service()
    served = service.served_model()
    native = parse_request(openai_chat.native_request(request, served))
    respond_async = prefers_async(prefer)
    deadline = deadline_of(app.lambda_context, budget_s(service.settings))
    if request.stream and not respond_async:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        streamed = _streamed(service, native, served, deadline, include_usage)
        if not isinstance(streamed, Answer):
            return cast(Response[openai_chat.ChatCompletion], streamed)  # events: not validated as JSON
        answer = streamed  # queued before any text, or FAILED: answered as without streaming
    else:
        answer = service.answer(native, deadline, respond_async=respond_async, queue_if_late=True)
    return _completion_response(answer, served)


def _streamed(
    service: TextService, native: TextRequest, served: str, deadline: float, include_usage: bool
) -> Response[Any] | Answer:
    chunks = server_sent_events.CompletionChunks(service.request_id(native), served, int(time.time()))

    def closing(answer: Answer) -> list[bytes]:
        usage = [chunks.usage(answer)] if include_usage else []
        return [chunks.finish(answer), *usage, server_sent_events.DONE]

    def error(exc: Exception) -> bytes:
        error_answer(exc)  # logged as every error is
        _, body = openai_chat.error_body(exc, status_of(exc))
        return server_sent_events.error_event(body, native=False)

    return stream_answer(
        service, native, deadline, opening=chunks.role(), piece=chunks.content, closing=closing, error=error
    )


@route(
    "GET",
    "/v1/chat/completions/<completion_id>",
    takes_body=False,
    operation_id="getChatCompletion",
    summary="Read a chat completion (OpenAI-style)",
    description="A completion made or queued by POST /v1/chat/completions (or the same native chat request): "
    "200 when done, 202 while queued or running.",
    responses=openai_responses(openai_chat.ChatCompletion, 200, 202, 400, 404, 405, 429, 503),
    tags=["openai"],
)
def get_chat_completion(completion_id: CompletionId) -> Response[openai_chat.ChatCompletion]:
    """The completion with this id, in whatever state it is."""
    service = get_service()
    if service.stored_requests.table is None:
        raise ConfigurationError("results are not stored here: TABLE_NAME is not set")
    answer = service.lookup(completion_id.removeprefix(openai_chat.COMPLETION_PREFIX))
    if answer is None or answer.task != "chat":
        raise NotFound(f"no chat completion has id {completion_id}", code="not_found", param="completion_id")
    return _completion_response(answer, service.served_model())


@route(
    "GET",
    "/v1/models",
    takes_body=False,
    operation_id="listModels",
    summary="List the served model (OpenAI-style)",
    responses=openai_responses(openai_chat.ModelList, 200, 405),
    tags=["openai"],
)
def list_models() -> Response[openai_chat.ModelList]:
    """The one model this API serves."""
    service = get_service()
    body = openai_chat.models_list(service.served_model(), _model_created(service))
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, body)


@route(
    "GET",
    "/v1/models/<model>",
    takes_body=False,
    operation_id="retrieveModel",
    summary="Describe the served model (OpenAI-style)",
    responses=openai_responses(openai_chat.ModelCard, 200, 400, 404, 405),
    tags=["openai"],
)
def retrieve_model(model: ModelName) -> Response[openai_chat.ModelCard]:
    """The served model, by its id."""
    service = get_service()
    served = service.served_model()
    if model != served:
        # The name is the caller's path: answered, never logged.
        raise NotFound(
            f"model {model[:100]!r} is not served here; this API serves {served!r}",
            log_message="the model asked for is not the one served here",
            code="model_not_found",
        )
    body = openai_chat.model_card(served, _model_created(service))
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, body)


def _model_created(service: TextService) -> int:
    """When the served model file was made, as OpenAI's ``created`` (seconds since the epoch)."""
    try:
        return int(service.settings.model_path.stat().st_mtime)
    except OSError:
        return 0


def _completion_response(answer: Answer, served: str) -> Response[openai_chat.ChatCompletion]:
    if answer.status == Status.FAILED:
        raise GenerationError(
            f"the request failed: {answer.last_error or 'no reason recorded'}",
            log_message="a stored request failed",
            id=answer.id,
        )
    body = openai_chat.completion(answer, served)
    if answer.status == Status.DONE:
        return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, body)
    location = route_prefix() + f"/v1/chat/completions/{openai_chat.COMPLETION_PREFIX}{answer.id}"
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, body, {"Location": location})
