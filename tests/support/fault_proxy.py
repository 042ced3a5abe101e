"""A proxy in front of moto server that breaks chosen AWS calls on purpose: throttling, 5xx answers, dropped
connections, and the death of the calling process before or after the call reached the service.

Every process under test (the tests themselves, the functions' child processes) is pointed at the proxy with
``AWS_ENDPOINT_URL`` and sees a real HTTP endpoint: its SDK's own error parsing and retries run as they would
against AWS, and nothing of the service's own code is replaced. A fault names the call it breaks by service,
operation and a piece of the request's body (an UpdateItem's expression tells a claim from a completion), how many
matching calls it lets through first and how many it breaks, and counts what it did.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

Action = Literal[
    "throttle",
    "throttling",
    "error-500",
    "drop",
    "kill-before",
    "kill-after",
    "hold",
    "pause-before",
    "pause-after",
    "error-500-after",
]


class Signalled(Protocol):
    """The process a kill or pause fault acts on (tests/support/function_process.py)."""

    def kill(self) -> None: ...

    def pause(self) -> None: ...


#: Pieces of an UpdateItem's body that tell the service's writes apart (handler/storage/leases.py).
CLAIM = "ADD attempts :one"
COMPLETE = "SET #status = :done"
RELEASE = "SET #status = :status"

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_DYNAMODB_ERROR = "com.amazonaws.dynamodb.v20120810#"


@dataclass
class Fault:
    """One way to break calls: which calls (service, operation, a piece of the body), when, and how."""

    service: str
    operation: str
    action: Action
    contains: str = ""
    times: int = 1
    skip: int = 0
    #: What a kill or pause acts on: may be set after the fault is added (the call waits for it a while).
    process: Signalled | None = None
    #: Set while a call is held ("hold", "pause-before"); the test sets ``released`` to let it go on to the service,
    #: or clears ``forward_held`` first to drop it unanswered (its sender died: nothing it sent may land after).
    held: threading.Event = field(default_factory=threading.Event, repr=False)
    released: threading.Event = field(default_factory=threading.Event, repr=False)
    forward_held: bool = True
    #: Matching calls seen, and calls broken.
    seen: int = 0
    hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def takes(self, service: str, operation: str, path: str, body: bytes) -> bool:
        """Whether this fault breaks this call (counting it): ``contains`` is looked for in its path and body."""
        if service != self.service or operation != self.operation:
            return False
        if self.contains and self.contains not in path and self.contains.encode() not in body:
            return False
        with self._lock:
            self.seen += 1
            if self.seen <= self.skip or self.hits >= self.times:
                return False
            self.hits += 1
            return True

    def signal(self, kill: bool) -> None:
        """Kill or pause the process under test, once it is known."""
        deadline = time.monotonic() + 30
        while self.process is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.process is not None, f"the {self.action} fault on {self.operation} has no process"
        if kill:
            self.process.kill()
        else:
            self.process.pause()


class FaultProxy:
    """A loopback HTTP proxy to an upstream moto server that applies the faults it holds."""

    def __init__(self, upstream: str = "") -> None:
        #: moto's endpoint (``route_to`` sets it when moto starts after the proxy, as inside ``make serve``).
        self.upstream = urlsplit(upstream)
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str]] = []
        #: The calls that reached moto: service, operation, moto's status, the request's body.
        self.answered: list[tuple[str, str, int, bytes]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def route_to(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    @contextlib.contextmanager
    def breaking(self, *faults: Fault) -> Iterator[list[Fault]]:
        """The faults applied inside the block, removed after it."""
        for fault in faults:
            self.add(fault)
        try:
            yield list(faults)
        finally:
            with self._lock:
                for fault in faults:
                    self.faults.remove(fault)

    def operations(self, service: str) -> list[str]:
        """The operations called on ``service`` so far, in order."""
        return [operation for called, operation in self.calls if called == service]

    def _fault_for(self, service: str, operation: str, path: str, body: bytes) -> Fault | None:
        with self._lock:
            self.calls.append((service, operation))
            faults = list(self.faults)
        return next((fault for fault in faults if fault.takes(service, operation, path, body)), None)

    def written(self, marker: str) -> dict[str, int]:
        """How many DynamoDB UpdateItems whose body holds ``marker`` (CLAIM, COMPLETE, RELEASE) succeeded, by item id:
        the table's own count of claims, results and releases that took effect."""
        counts: dict[str, int] = {}
        with self._lock:
            answered = list(self.answered)
        for service, operation, status, body in answered:
            if service == "dynamodb" and operation == "UpdateItem" and status == 200 and marker.encode() in body:
                item_id = json.loads(body)["Key"]["id"]["S"]
                counts[item_id] = counts.get(item_id, 0) + 1
        return counts

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        connection = http.client.HTTPConnection(self.upstream.netloc, timeout=60)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests read what the proxy counted instead."""

            def do_GET(self) -> None:
                self._serve()

            def do_PUT(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def do_DELETE(self) -> None:
                self._serve()

            def do_HEAD(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = dict(self.headers.items())
                service = service_of(headers)
                operation = operation_of(service, self.command, self.path, headers)
                fault = proxy._fault_for(service, operation, self.path, body)
                if fault is not None and fault.action in ("kill-before", "drop"):
                    if fault.action == "kill-before":
                        fault.signal(kill=True)
                    self.close_connection = True
                    return
                if fault is not None and fault.action in ("hold", "pause-before"):
                    # The call waits (its process standing still too, for "pause-before") until the test says.
                    if fault.action == "pause-before":
                        fault.signal(kill=False)
                    fault.held.set()
                    fault.released.wait(timeout=300)
                    if not fault.forward_held:
                        self.close_connection = True
                        return
                if fault is not None and fault.action in ("throttle", "throttling", "error-500"):
                    self._answer(*error_response(service, fault.action))
                    return
                forwarded = {name: value for name, value in headers.items() if name.lower() != "expect"}
                status, answer_headers, answer = proxy._forward(self.command, self.path, forwarded, body)
                with proxy._lock:
                    proxy.answered.append((service, operation, status, body))
                if fault is not None and fault.action == "kill-after":
                    fault.signal(kill=True)
                    self.close_connection = True
                    return
                if fault is not None and fault.action == "pause-after":
                    fault.signal(kill=False)  # the answer waits in the socket until the process resumes
                if fault is not None and fault.action == "error-500-after":
                    # The call took effect; its caller is told it failed (a lost answer) and tries again.
                    self._answer(*error_response(service, "error-500"))
                    return
                skipped = {"content-length", "transfer-encoding", "connection"}
                self._answer(status, [(k, v) for k, v in answer_headers if k.lower() not in skipped], answer)

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return Handler


def service_of(headers: dict[str, str]) -> str:
    """The AWS service a signed request is for, from its credential scope."""
    found = _SCOPE.search(headers.get("Authorization", ""))
    return found.group(1) if found else "unknown"


def operation_of(service: str, method: str, path: str, headers: dict[str, str]) -> str:
    """The API operation of a request: its X-Amz-Target (JSON protocols), else S3's REST shape."""
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if service == "s3":
        url = urlsplit(path)
        has_key = len([part for part in url.path.split("/") if part]) > 1
        if method == "GET":
            return "GetObject" if has_key else "ListObjects"
        return {"PUT": "PutObject", "DELETE": "DeleteObject", "HEAD": "HeadObject"}.get(method, method)
    return method


def error_response(service: str, action: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The service's own answer for a throttled or failed call, as its SDK parses it."""
    if service == "s3":
        code, status = ("SlowDown", 503) if action != "error-500" else ("InternalError", 500)
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message></Error>'
        return status, [("Content-Type", "application/xml")], body.encode()
    if service == "dynamodb":
        code, status = {
            "throttle": ("ProvisionedThroughputExceededException", 400),
            "throttling": ("ThrottlingException", 400),
            "error-500": ("InternalServerError", 500),
        }[action]
        body = json.dumps({"__type": _DYNAMODB_ERROR + code, "message": "injected"})
        return status, [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", "injected")], body.encode()
    code, status = {
        "throttle": ("RequestThrottled", 400),
        "throttling": ("ThrottlingException", 400),
        "error-500": ("InternalFailure", 500),
    }[action]
    body = json.dumps({"__type": code, "message": "injected"})
    headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-query-error", f"{code};Sender")]
    return status, headers, body.encode()
