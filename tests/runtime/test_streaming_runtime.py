"""The streaming runtime client against Lambda's Runtime API protocol (a local Runtime API that records what it
gets, chunk by chunk): the prelude, 8 NUL bytes and the body; one chunk per write, sent at once; error trailers
after the first bytes; the error route before them; the buffered bytes; a connection that breaks mid-stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from handler.entry import streaming_runtime_client
from handler.entry.response_stream import DELIMITER, CollectedResponse, ResponseStream
from scripts.local.runtime_api import Invocation, RuntimeApi


@pytest.fixture
def api() -> Iterator[RuntimeApi]:
    with RuntimeApi() as running:
        yield running


def _serve(api: RuntimeApi, handler: Any) -> threading.Thread:
    thread = threading.Thread(target=streaming_runtime_client.serve_one, args=(handler, api.address), daemon=True)
    thread.start()
    return thread


def _prelude_and_body(data: bytes) -> tuple[dict[str, Any], bytes]:
    prelude, delimiter, body = data.partition(DELIMITER)
    assert delimiter == DELIMITER
    return json.loads(prelude), body


def test_the_prelude_8_nul_bytes_and_each_write_go_out_as_they_are_written(api: RuntimeApi) -> None:
    first_received = threading.Event()

    def handler(event: Any, context: Any, stream: ResponseStream) -> None:
        stream.start(200, {"Content-Type": "text/event-stream"})
        stream.write(b"data: one\n\n")
        # The next write waits until the first reached the Runtime API: it was sent, not kept back.
        assert first_received.wait(timeout=60)
        stream.write(b"data: two\n\n")

    invocation: Invocation = api.submit({"path": "/"}, timeout_s=60)
    thread = _serve(api, handler)
    chunks = invocation.chunks()
    received = [next(chunks)]
    while DELIMITER not in b"".join(received) or not b"".join(received).endswith(b"one\n\n"):
        received.append(next(chunks))
    first_received.set()
    received.extend(chunks)
    thread.join(timeout=60)

    assert invocation.streaming
    assert invocation.end == (None, None)
    prelude, body = _prelude_and_body(b"".join(received))
    assert prelude["statusCode"] == 200
    assert prelude["headers"] == {"Content-Type": "text/event-stream"}
    assert body == b"data: one\n\ndata: two\n\n"
    assert received[-1] == b"data: two\n\n"  # its own chunk


def test_an_error_after_the_first_bytes_is_reported_in_the_trailers(api: RuntimeApi) -> None:
    def handler(event: Any, context: Any, stream: ResponseStream) -> None:
        stream.start(200, {})
        stream.write(b"partial")
        raise ValueError("the model failed")

    invocation = api.submit({}, timeout_s=60)
    _serve(api, handler).join(timeout=60)
    _, body = _prelude_and_body(b"".join(invocation.chunks()))
    assert body == b"partial"
    error_type, error = invocation.end
    assert error_type == "ValueError"
    assert error == {"errorMessage": "the model failed", "errorType": "ValueError", "stackTrace": []}


def test_an_error_before_any_byte_goes_to_the_error_route(api: RuntimeApi) -> None:
    def handler(event: Any, context: Any, stream: ResponseStream) -> None:
        raise KeyError("no")

    invocation = api.submit({}, timeout_s=60)
    _serve(api, handler).join(timeout=60)
    assert list(invocation.chunks()) == []
    assert invocation.end[0] == "KeyError"
    assert not invocation.streaming


def test_the_context_carries_the_request_id_and_the_time_left(api: RuntimeApi) -> None:
    seen: dict[str, Any] = {}

    def handler(event: Any, context: Any, stream: ResponseStream) -> None:
        seen.update(id=context.aws_request_id, left=context.get_remaining_time_in_millis(), event=event)

    invocation = api.submit({"hello": "world"}, timeout_s=60)
    _serve(api, handler).join(timeout=60)
    list(invocation.chunks())
    assert seen["id"] == invocation.request_id
    assert 0 < seen["left"] <= 60_000
    assert seen["event"] == {"hello": "world"}


def test_invoked_without_streaming_the_same_bytes_come_back_whole(api: RuntimeApi) -> None:
    def handler(event: Any, context: Any, stream: ResponseStream) -> None:
        stream.start(201, {"X-Kind": "test"})
        for piece in (b"a", b"bc", b"def"):
            stream.write(piece)

    invocation = api.submit({}, timeout_s=60)
    _serve(api, handler).join(timeout=60)
    streamed = b"".join(invocation.chunks())
    collected = CollectedResponse()
    handler({}, None, collected)
    assert bytes(collected.data) == streamed


def test_a_broken_connection_makes_later_writes_go_nowhere_and_the_handler_runs_to_its_end(api: RuntimeApi) -> None:
    finished = threading.Event()

    def handler(event: Any, context: Any, stream: Any) -> None:
        stream.start(200, {})
        stream.write(b"first")
        stream._conn.sock.close()  # the connection breaks, as when the client goes away
        stream.write(b"second")  # no exception
        assert stream.client_gone
        finished.set()

    api.submit({}, timeout_s=5)
    _serve(api, handler).join(timeout=60)
    assert finished.is_set()
