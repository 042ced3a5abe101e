"""Answers streamed as server-sent events (handler/formats/server_sent_events.py): written to the live response stream
behind a streaming integration, or collected into one buffered body where the API buffers (``sam local
start-api``, a REST API integration without streaming): the same events either way.

Behind a streaming integration the caller waits ``STREAM_BUDGET_S`` (minutes) instead of ``API_BUDGET_S``.
Nothing is written before the request is planned and its generation begins: a request refused up front is
answered as without streaming (a JSON error), and so is one that is queued before any text (202). An error
after the first event ends the stream with an error event. A client that goes away does not stop the
generation: it runs to its end and is stored, so asking again is answered from the table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import Response

from handler.core.errors import DeadlineReached
from handler.core.settings import Settings
from handler.domain.answers import Answer, Status
from handler.domain.requests import TextRequest
from handler.entry.response_stream import ResponseStream
from handler.formats.server_sent_events import EVENT_STREAM
from handler.usecases.text_service import TextService

#: The live response stream of this invocation, when the function runs behind a streaming integration.
RESPONSE_STREAM: ContextVar[ResponseStream | None] = ContextVar("response_stream", default=None)
_HEADERS = {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache"}


def budget_s(settings: Settings) -> float:
    """How long an API caller waits for an answer in-line: minutes behind a streaming integration."""
    return settings.stream_budget_s if RESPONSE_STREAM.get() is not None else settings.api_budget_s


class _Gone:
    """A stream whose client went away: every write goes nowhere."""

    started = True

    def start(self, status_code: int, headers: dict[str, str]) -> None:
        return None

    def write(self, data: bytes) -> None:
        return None


_GONE = _Gone()


class _Events:
    """Server-sent events to the live stream, or into a buffer answered whole."""

    def __init__(self) -> None:
        self.stream: ResponseStream | None = RESPONSE_STREAM.get()
        self.buffer = bytearray()
        self.sent = False

    def send(self, data: bytes) -> None:
        self.sent = True
        if self.stream is None:
            self.buffer += data
            return
        try:
            if not self.stream.started:
                self.stream.start(HTTPStatus.OK, dict(_HEADERS))
            self.stream.write(data)
        except OSError:
            # The client went away: the generation goes on to its end and is stored; later events go nowhere.
            self.stream = _GONE

    def response(self) -> Response[Any]:
        # Sent already when live: the streaming entry point writes nothing more for it.
        body = "" if self.stream is not None else self.buffer.decode("utf-8")
        return Response(HTTPStatus.OK, EVENT_STREAM, body, {"Cache-Control": "no-cache"})


def stream_answer(
    service: TextService,
    request: TextRequest,
    deadline: float,
    *,
    opening: bytes | None,
    piece: Callable[[str], bytes],
    closing: Callable[[Answer], Iterable[bytes]],
    error: Callable[[Exception], bytes],
) -> Response[Any] | Answer:
    """Answer ``request`` as events: ``opening`` before the first piece of text, each ``piece`` as it is made
    (an answer from the table, or one generated elsewhere, as one piece at once), then ``closing``.

    The answer itself when nothing was sent and it is not DONE (queued, FAILED): the caller answers it as it
    answers without streaming.
    """
    events = _Events()

    def sink(text: str) -> None:
        if not events.sent and opening is not None:
            events.send(opening)
        events.send(piece(text))

    try:
        answer = service.answer(request, deadline, queue_if_late=True, sink=sink)
    except Exception as exc:
        if not events.sent:
            raise  # refused or failed before any event: the route's usual error answer
        events.send(error(exc))
        return events.response()
    if answer.status != Status.DONE:
        if not events.sent:
            return answer
        events.send(
            error(DeadlineReached("time ran out while generating; the request is queued: read its result later"))
        )
        return events.response()
    if not events.sent:
        sink(answer.output or "")
    for data in closing(answer):
        events.send(data)
    return events.response()
