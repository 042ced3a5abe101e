"""Streamed answers through the API's entry points, in-process against moto server: the openai SDK's
``stream=True`` over a buffered integration (``lambda_handler``), the live stream behind a streaming integration
(``stream_handler``), the native routes' events, errors after the first event, a client that goes away."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from handler import engine as engine_module
from handler.engine import output_text
from handler.entry import api
from handler.entry.runtime import get_service
from tests.support.apigw import proxy_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

QUESTION: Any = [{"role": "user", "content": "Name three colours of the rainbow."}]


def _transport(request: httpx.Request) -> httpx.Response:
    """The HTTP request as API Gateway's buffered integration passes it, and the function's whole answer."""
    headers = {name: value for name, value in request.headers.items() if name not in ("content-length", "host")}
    body = request.content.decode("utf-8") if request.content else None
    event = proxy_event(
        request.method, request.url.path, body, content_type=headers.pop("content-type", None), headers=headers
    )
    result = api.lambda_handler(event, FakeLambdaContext())
    return httpx.Response(result["statusCode"], headers=result.get("headers"), content=result["body"].encode())


@pytest.fixture
def sdk(service_env: Table, real_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[openai.OpenAI]:
    monkeypatch.setenv("MODEL_PATH", str(real_model))
    monkeypatch.setenv("EXPECTED_PROMPT_TOKENS_PER_S", "5000")
    monkeypatch.setenv("EXPECTED_EVAL_TOKENS_PER_S", "5000")
    monkeypatch.setenv("API_BUDGET_S", "900")  # a loaded test machine is no API Gateway: no 29 s wall here
    monkeypatch.setattr(engine_module.process_engine, "engine", None)
    http = httpx.Client(transport=httpx.MockTransport(_transport))
    yield openai.OpenAI(base_url="http://api.test/v1", api_key="unused", http_client=http, max_retries=0)
    http.close()


def _served() -> str:
    return get_service().settings.model_path.name.removesuffix(".gguf")


def test_the_sdk_streams_the_same_text_it_gets_whole_and_then_from_the_table(
    sdk: openai.OpenAI, service_env: Table
) -> None:
    # WHEN the SDK asks for a stream
    chunks = list(sdk.chat.completions.create(model=_served(), messages=QUESTION, max_tokens=48, stream=True))
    # THEN the role comes first, several content chunks follow, and the last says why it ended
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(contents) > 1
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model_extra is not None
    assert chunks[-1].model_extra["llm_service"]["cached"] is False
    streamed = "".join(contents)
    # AND generated afresh without streaming (the stored item removed), the greedy text is the same
    [item] = service_env.items()
    service_env.delete(item["id"])
    whole = sdk.chat.completions.create(model=_served(), messages=QUESTION, max_tokens=48)
    assert whole.choices[0].message.content == streamed
    # AND asked again, the stream comes from the table, with the usage when asked for
    again = list(
        sdk.chat.completions.create(
            model=_served(), messages=QUESTION, max_tokens=48, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == streamed
    finish = next(c for c in again if c.choices and c.choices[0].finish_reason)
    assert finish.model_extra is not None
    assert finish.model_extra["llm_service"]["cached"] is True
    assert again[-1].choices == []
    assert again[-1].usage is not None
    assert again[-1].usage.completion_tokens > 0


def test_a_stream_whose_output_fails_its_schema_ends_with_an_error_and_nothing_is_stored(
    sdk: openai.OpenAI, service_env: Table
) -> None:
    # GIVEN a JSON schema answer cut off by max_tokens (not valid JSON)
    colours = {"type": "array", "items": {"type": "string"}, "minItems": 3}
    schema = {"type": "object", "properties": {"colours": colours}, "required": ["colours"]}
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    stream = sdk.chat.completions.create(
        model=_served(), messages=QUESTION, max_tokens=4, stream=True, response_format=response_format
    )
    # THEN the SDK raises the error event the stream ends with, and no DONE item is stored
    with pytest.raises(openai.APIError, match="not valid JSON"):
        list(stream)
    assert [item for item in service_env.items() if item["status"] == "DONE"] == []


class RecordingStream:
    """A live response stream that notes, for each write, how many tokens the engine had taken by then."""

    def __init__(self, taken: list[int], gone_after: int | None = None) -> None:
        self.taken = taken
        self.gone_after = gone_after
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.writes: list[tuple[bytes, int]] = []

    @property
    def started(self) -> bool:
        return self.status is not None

    def start(self, status_code: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status_code, headers

    def write(self, data: bytes) -> None:
        if self.gone_after is not None and len(self.writes) >= self.gone_after:
            raise BrokenPipeError("the client went away")
        self.writes.append((data, len(self.taken)))


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every token the engine takes, in order (its per-token step)."""
    seen: list[int] = []
    take = output_text.OutputText._take

    def counting(self: output_text.OutputText, token: int, piece: Any) -> bool:
        seen.append(token)
        return take(self, token, piece)

    monkeypatch.setattr(output_text.OutputText, "_take", counting)
    return seen


def _live(body: dict[str, Any], path: str, stream: RecordingStream, accept: str | None = None) -> None:
    headers = {"Accept": accept} if accept else None
    api.stream_handler(proxy_event("POST", path, body, headers=headers), FakeLambdaContext(), stream)


def test_a_live_stream_sends_its_first_chunk_before_the_generation_ends(sdk: openai.OpenAI, taken: list[int]) -> None:
    stream = RecordingStream(taken)
    body = {"model": _served(), "messages": QUESTION, "max_tokens": 48, "stream": True}
    _live(body, "/v1/chat/completions", stream)
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    first_content = next(
        count for data, count in stream.writes if b'"content":"' in data and b'"content":""' not in data
    )
    # The first text went out while the engine had taken fewer tokens than it took in all.
    assert first_content < len(taken)
    assert stream.writes[-1][0] == b"data: [DONE]\n\n"


def test_the_native_route_streams_text_events_then_the_answer(sdk: openai.OpenAI, taken: list[int]) -> None:
    stream = RecordingStream(taken)
    _live(
        {"text": "Rain falls on the hills and the rivers rise.", "options": {"max_tokens": 32}},
        "/summarize",
        stream,
        "text/event-stream",
    )
    events = [data.decode() for data, _ in stream.writes]
    texts = [json.loads(e.split("data: ", 1)[1])["text"] for e in events if e.startswith("event: text")]
    [answer] = [json.loads(e.split("data: ", 1)[1]) for e in events if e.startswith("event: answer")]
    assert len(texts) > 1
    assert "".join(texts) == answer["output"]
    assert answer["status"] == "DONE"


def test_a_client_that_goes_away_leaves_a_done_item(sdk: openai.OpenAI, taken: list[int], service_env: Table) -> None:
    # GIVEN a client that reads two events, then closes the connection
    stream = RecordingStream(taken, gone_after=2)
    body = {"model": _served(), "messages": QUESTION, "max_tokens": 48, "stream": True}
    _live(body, "/v1/chat/completions", stream)
    # THEN the generation ran to its end and is stored: asking again is answered from the table
    [item] = service_env.items()
    assert item["status"] == "DONE"
    assert len(stream.writes) == 2
