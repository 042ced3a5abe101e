"""A Lambda runtime client that streams responses, run as ``python -m handler.entry.streaming_runtime_client
<module.function>``.

awslambdaric cannot stream (its issue #100). Lambda's Runtime API can: the runtime POSTs the invocation's response
with ``Lambda-Runtime-Function-Response-Mode: streaming`` and ``Transfer-Encoding: chunked``, declaring the
trailers ``Lambda-Runtime-Function-Error-Type`` and ``Lambda-Runtime-Function-Error-Body`` (base64 of the error
JSON) that report an error after the first bytes; an error before any byte goes to ``.../invocation/{id}/error``
as awslambdaric reports it, and a handler that cannot be imported to ``/runtime/init/error``. The API functions
run this (template.yaml); the others keep awslambdaric. The handler is ``handler(event, context, stream)``: it
starts the stream (the HTTP integration's prelude goes first) and writes body bytes, each sent as one chunk at
once. A write after the connection broke (the client went away) goes nowhere and never raises into the handler:
its work runs to its end.
"""

from __future__ import annotations

import base64
import http.client
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from handler.core.observability import logger
from handler.entry.response_stream import CONTENT_TYPE, http_integration_prelude

RUNTIME = "/2018-06-01/runtime"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"
StreamHandler = Callable[[Any, "Context", "RuntimeStream"], None]


class Context:
    """The invocation's context, with the attributes Powertools' LambdaContext and this service read."""

    def __init__(self, request_id: str, deadline_ms: int, function_arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0") or 0)
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def _error_json(exc: BaseException) -> dict[str, Any]:
    # The type and message only: a traceback would carry values, and it is logged where it happens.
    return {"errorMessage": str(exc)[:1000], "errorType": type(exc).__name__, "stackTrace": []}


class RuntimeStream:
    """The invocation's response, POSTed to the Runtime API in streaming mode as the handler writes it."""

    def __init__(self, api: str, request_id: str) -> None:
        self._api = api
        self._path = f"{RUNTIME}/invocation/{request_id}/response"
        self._conn: http.client.HTTPConnection | None = None
        self.client_gone = False

    @property
    def started(self) -> bool:
        return self._conn is not None

    def start(self, status_code: int, headers: dict[str, str]) -> None:
        conn = http.client.HTTPConnection(self._api)
        conn.putrequest("POST", self._path)
        conn.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.putheader("Content-Type", CONTENT_TYPE)
        conn.putheader("Trailer", f"{ERROR_TYPE}, {ERROR_BODY}")
        conn.endheaders()
        self._conn = conn
        self.write(http_integration_prelude(status_code, headers))

    def write(self, data: bytes) -> None:
        if self._conn is None:
            raise RuntimeError("write before start")
        if not data or self.client_gone:
            return
        try:
            self._conn.send(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError:
            self.client_gone = True  # nothing more reaches the client; the handler's work goes on

    def finish(self, error: BaseException | None = None) -> None:
        """The last chunk, with the error trailers when the handler failed after the first bytes."""
        assert self._conn is not None
        end = b"0\r\n"
        if error is not None:
            encoded = base64.b64encode(json.dumps(_error_json(error)).encode("utf-8"))
            end += f"{ERROR_TYPE}: {type(error).__name__}\r\n".encode() + f"{ERROR_BODY}: ".encode() + encoded + b"\r\n"
        try:
            self._conn.send(end + b"\r\n")
            self._conn.getresponse().read()
        except OSError:
            self.client_gone = True
        finally:
            self._conn.close()


def _post(api: str, path: str, body: dict[str, Any], error_type: str) -> None:
    conn = http.client.HTTPConnection(api)
    try:
        conn.request("POST", path, json.dumps(body), {ERROR_TYPE: error_type, "Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()


def serve_one(handler: StreamHandler, api: str) -> None:
    """Take the next invocation, run the handler on it, and send its response."""
    conn = http.client.HTTPConnection(api)
    try:
        conn.request("GET", f"{RUNTIME}/invocation/next")
        answer = conn.getresponse()
        event = json.loads(answer.read() or b"null")
        request_id = answer.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline_ms = int(answer.headers.get("Lambda-Runtime-Deadline-Ms") or 0)
        function_arn = answer.headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        trace = answer.headers.get("Lambda-Runtime-Trace-Id")
    finally:
        conn.close()
    if trace:
        os.environ["_X_AMZN_TRACE_ID"] = trace
    stream = RuntimeStream(api, request_id)
    try:
        handler(event, Context(request_id, deadline_ms, function_arn), stream)
    except Exception as exc:  # every failure is reported to Lambda, never lost with the process
        logger.exception("streamed invocation failed")
        if stream.started:
            stream.finish(exc)
        else:
            _post(api, f"{RUNTIME}/invocation/{request_id}/error", _error_json(exc), type(exc).__name__)
        return
    if not stream.started:
        stream.start(200, {})
    stream.finish()


def load_handler(name: str) -> StreamHandler:
    module, _, function = name.rpartition(".")
    handler: StreamHandler = getattr(importlib.import_module(module), function)
    return handler


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    api = os.environ["AWS_LAMBDA_RUNTIME_API"]
    name = args[0] if args else os.environ.get("_HANDLER", "")
    try:
        handler = load_handler(name)
    except Exception as exc:  # reported as Lambda's init error, as awslambdaric does
        _post(api, f"{RUNTIME}/init/error", _error_json(exc), "Runtime.ImportModuleError")
        return 1
    while True:
        serve_one(handler, api)


if __name__ == "__main__":
    raise SystemExit(main())
