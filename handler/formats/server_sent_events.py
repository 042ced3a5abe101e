"""Answers as server-sent events: OpenAI's ``chat.completion.chunk`` stream, and the native routes' events.

OpenAI's stream: the role in the first chunk's delta, the content in the chunks after it, ``finish_reason`` in
the last, then ``data: [DONE]``; with ``stream_options.include_usage`` a chunk of no choices carrying the usage
comes before ``[DONE]``. This service's fields (id, status, cached, metrics...) ride in the last chunk's
``llm_service`` extension. An error after the stream began is one event, ``{"error": {...}}`` (the SDK raises
it), and the stream ends without ``[DONE]``.

The native routes' stream (``Accept: text/event-stream``): ``event: text`` events whose data is
``{"text": <piece>}``, then one ``event: answer`` whose data is the whole answer (the native JSON), or one
``event: error`` with the error answer.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel

from handler.domain.answers import Answer
from handler.formats.openai_chat import COMPLETION_PREFIX, Usage, completion

EVENT_STREAM = "text/event-stream"
DONE = b"data: [DONE]\n\n"


def data_event(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: its JSON data on one line (JSON escapes every newline), named or not."""
    body = data.model_dump(mode="json", exclude_none=True) if isinstance(data, BaseModel) else data
    named = f"event: {event}\n" if event else ""
    return f"{named}data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """OpenAI's ``chat.completion.chunk``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    llm_service: dict[str, Any] | None = None


class CompletionChunks:
    """The chunks of one streamed chat completion, in the order OpenAI sends them."""

    def __init__(self, item_id: str, served_model: str, created: int) -> None:
        self._head = {"id": COMPLETION_PREFIX + item_id, "created": created, "model": served_model}
        self.served_model = served_model
        self.created = created

    def _chunk(self, choices: list[ChunkChoice], **extra: Any) -> bytes:
        return data_event(ChatCompletionChunk(**self._head, choices=choices, **extra))

    def role(self) -> bytes:
        return self._chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])

    def content(self, text: str) -> bytes:
        return self._chunk([ChunkChoice(delta=ChunkDelta(content=text))])

    def finish(self, answer: Answer) -> bytes:
        """The last chunk: the finish reason, and the answer's own fields (without its text) in ``llm_service``."""
        whole = completion(answer, self.served_model, created=self.created)
        reason = answer.finish_reason if answer.finish_reason in ("stop", "length") else "stop"
        return self._chunk([ChunkChoice(delta=ChunkDelta(), finish_reason=reason)], llm_service=whole.llm_service)

    def usage(self, answer: Answer) -> bytes:
        """The usage chunk (``stream_options.include_usage``): no choices."""
        return self._chunk([], usage=completion(answer, self.served_model).usage)


def text_event(text: str) -> bytes:
    """A piece of a native answer's text."""
    return data_event({"text": text}, event="text")


def answer_event(answer: Answer) -> bytes:
    """The native answer, whole, closing its stream."""
    return data_event(answer.model_dump(mode="json", exclude_none=True), event="answer")


def error_event(body: dict[str, Any], native: bool) -> bytes:
    """An error after the stream began: the route's error body, as the stream's last event."""
    return data_event(body, event="error" if native else None)
