"""A local Lambda Runtime API that takes streamed responses: the function's side of `make serve`.

The Runtime Interface Emulator reads a response whole; Lambda itself passes a streamed response on as it comes.
This stand-in does what Lambda does for one execution environment: it hands invocations to the runtime client
(``GET .../invocation/next``), and reads each response as it is posted, in streaming mode (chunked, with the
error trailers ``Lambda-Runtime-Function-Error-Type`` and ``-Body``) or buffered (one body), passing every
chunk on at once. Invocations are served one at a time, as one execution environment serves them.

The runtime client may die (killed, crashed) and a new one take its place, as Lambda starts a new execution
environment: an invocation is handed only to a client whose connection is still open (one that died waiting
for it never takes it), and ``abandon_running`` ends the invocations a dead client held with Lambda's error.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import queue
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
#: How often a waiting ``/next`` call looks whether its client is still there.
CLIENT_CHECK_S = 0.2
#: What ends an invocation's output: the error trailers' type and body (None when it succeeded).
End = tuple[str | None, dict[str, Any] | None]


@dataclass
class Invocation:
    """One event, and the output its function sends back: bytes chunks as they come, then an End."""

    event: dict[str, Any]
    timeout_s: float
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    output: queue.Queue[bytes | End] = field(default_factory=queue.Queue)
    streaming: bool = False

    def chunks(self) -> Iterator[bytes]:
        """The response's bytes as they arrive; the end (and its error, if any) is in ``self.end``.

        An invocation that outlives its timeout ends as Lambda ends it, with ``Sandbox.Timedout``: a caller
        never waits for ever on a function that went silent.
        """
        while True:
            try:
                item = self.output.get(timeout=self.timeout_s + 60)
            except queue.Empty:
                self.end = ("Sandbox.Timedout", {"errorMessage": f"Task timed out after {self.timeout_s:.0f} seconds"})
                return
            if isinstance(item, tuple):
                self.end = item
                return
            yield item

    def fail(self, error_type: str, message: str) -> None:
        """End the invocation with an error that Lambda itself reports (the function could not)."""
        self.output.put((error_type, {"errorType": error_type, "errorMessage": message}))

    end: End = (None, None)


class RuntimeApi:
    """The Runtime API on a loopback port, serving queued invocations to one runtime client."""

    def __init__(self, function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:local-api") -> None:
        self.function_arn = function_arn
        self._pending: collections.deque[Invocation] = collections.deque()
        self._running: dict[str, Invocation] = {}
        self._lock = threading.Lock()
        self._submitted = threading.Condition(self._lock)
        #: ``/next`` calls waiting for an invocation (a dead client's among them until it is noticed).
        self.waiting_clients = 0
        self.init_error: dict[str, Any] | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """What the runtime client takes as AWS_LAMBDA_RUNTIME_API."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RuntimeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def submit(self, event: dict[str, Any], timeout_s: float) -> Invocation:
        invocation = Invocation(event, timeout_s)
        with self._submitted:
            self._pending.append(invocation)
            self._submitted.notify()
        return invocation

    def abandon_running(self, error_type: str, message: str) -> int:
        """End every invocation handed out and not answered (its client died) with ``error_type``; how many."""
        with self._lock:
            abandoned = list(self._running.values())
            self._running.clear()
        for invocation in abandoned:
            invocation.fail(error_type, message)
        return len(abandoned)

    def abandon_pending(self, error_type: str, message: str) -> int:
        """End every invocation not handed out yet (no client can start) with ``error_type``; how many."""
        with self._lock:
            abandoned = list(self._pending)
            self._pending.clear()
        for invocation in abandoned:
            invocation.fail(error_type, message)
        return len(abandoned)

    def _next(self, client: socket.socket) -> Invocation | None:
        """The next invocation, for a client still connected; None when the client went away while waiting."""
        with self._submitted:
            self.waiting_clients += 1
            try:
                while not self._pending:
                    self._submitted.wait(CLIENT_CHECK_S)
                    if not self._pending and _closed(client):
                        return None
            finally:
                self.waiting_clients -= 1
            invocation = self._pending.popleft()
            self._running[invocation.request_id] = invocation
        if _closed(client):  # it died as the invocation came: the next client takes it
            self._hand_back(invocation)
            return None
        return invocation

    def _hand_back(self, invocation: Invocation) -> None:
        """Put an invocation that never reached its client first in line again (unless it was abandoned)."""
        with self._submitted:
            if self._running.pop(invocation.request_id, None) is not None:
                self._pending.appendleft(invocation)
                self._submitted.notify()

    def _finish(self, request_id: str) -> Invocation | None:
        with self._lock:
            return self._running.pop(request_id, None)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None  # the front prints what a user needs

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    self._reply(404, {"errorMessage": "not found"})
                    return
                invocation = api._next(self.connection)
                if invocation is None:
                    self.close_connection = True  # its client is gone: nothing to answer
                    return
                body = json.dumps(invocation.event).encode("utf-8")
                try:
                    self.send_response(200)
                    self.send_header("Lambda-Runtime-Aws-Request-Id", invocation.request_id)
                    deadline_ms = int((time.time() + invocation.timeout_s) * 1000)
                    self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
                    self.send_header("Lambda-Runtime-Invoked-Function-Arn", api.function_arn)
                    trace = f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}"
                    self.send_header("Lambda-Runtime-Trace-Id", trace)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:
                    api._hand_back(invocation)  # it never reached the client
                    self.close_connection = True

            def do_POST(self) -> None:
                if self.path == f"{PREFIX}/init/error":
                    api.init_error = json.loads(self._body() or b"{}")
                    self._reply(202, {"status": "OK"})
                    return
                parts = self.path.removeprefix(f"{PREFIX}/invocation/").split("/")
                invocation = api._finish(parts[0]) if len(parts) == 2 else None
                if invocation is None:
                    self._reply(404, {"errorMessage": "unknown invocation"})
                    return
                if parts[1] == "error":
                    error = json.loads(self._body() or b"{}")
                    invocation.output.put((self.headers.get("Lambda-Runtime-Function-Error-Type", "Error"), error))
                elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    invocation.streaming = (
                        self.headers.get("Lambda-Runtime-Function-Response-Mode", "").lower() == "streaming"
                    )
                    trailers = self._read_chunks(invocation)
                    error_type = trailers.get("lambda-runtime-function-error-type")
                    encoded = trailers.get("lambda-runtime-function-error-body")
                    error_body = json.loads(base64.b64decode(encoded)) if encoded else None
                    invocation.output.put((error_type, error_body))
                else:
                    invocation.output.put(self._body())
                    invocation.output.put((None, None))
                self._reply(202, {"status": "OK"})

            def _read_chunks(self, invocation: Invocation) -> dict[str, str]:
                """Pass each chunk on as it arrives; the trailers after the last one."""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        break
                    invocation.output.put(self.rfile.read(size))
                    self.rfile.readline()  # the CRLF after the chunk
                trailers = {}
                while (line := self.rfile.readline().strip()) != b"":
                    name, _, value = line.decode("latin-1").partition(":")
                    trailers[name.strip().lower()] = value.strip()
                return trailers

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(data)

        return Handler


def _closed(client: socket.socket) -> bool:
    """Whether the peer of a connection closed it (its process exited): readable with nothing to read."""
    try:
        readable, _, _ = select.select([client], [], [], 0)
        return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
