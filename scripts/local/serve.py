"""Serve the API on 127.0.0.1 through the function's own streaming runtime: `make serve`, to see answers stream.

    python -m scripts.local.serve --model models/x.gguf [--port 3000]

What a deployed stack does, on one machine: HTTP requests become API Gateway proxy events; the function runs as
Lambda runs it (its streaming runtime client, handler/entry/streaming_runtime_client.py, against a local Runtime API,
scripts/local/runtime_api.py) with a local results table (moto); its streamed response (a JSON prelude, 8 NUL
bytes, then the body as it comes) goes back to the client as it comes, chunked. The openai SDK pointed at
``http://127.0.0.1:3000/v1`` streams with ``stream=True``. One execution environment: requests are served one at
a time. `sam local start-api` serves the same routes buffered (its emulator reads a response whole).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from scripts.local.moto_server import DEFAULT_REGION, DUMMY_CREDENTIALS, MotoDynamoDB, create_table_from_template
from scripts.local.runtime_api import Invocation, RuntimeApi
from scripts.repository import ROOT, TEMPLATE

STREAM_HANDLER = "handler.entry.api.stream_handler"
DELIMITER = b"\0" * 8
TABLE = "llm-results-local"


def proxy_event(method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The API Gateway REST proxy event of an HTTP request (stage ``local``)."""
    url = urlsplit(target)
    query = parse_qs(url.query)
    return {
        "resource": url.path,
        "path": url.path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "path": url.path,
            "stage": "local",
            "httpMethod": method,
            "resourcePath": url.path,
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": body.decode("utf-8") if body else None,
        "isBase64Encoded": False,
    }


class LocalApi:
    """The function (a child process running its streaming runtime) behind an HTTP front on 127.0.0.1."""

    def __init__(self, model: Path, port: int = 0, env: dict[str, str] | None = None, timeout_s: float = 900) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self._env = env or {}
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()  # one execution environment: one invocation at a time
        self.runtime = RuntimeApi()
        self._front = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._front.daemon_threads = True
        self.function: subprocess.Popen[bytes] | None = None
        self.table_endpoint = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._front.server_address[1]}"

    def __enter__(self) -> LocalApi:
        moto = self._stack.enter_context(MotoDynamoDB())
        self.table_endpoint = moto.endpoint_url
        create_table_from_template(moto.endpoint_url, TABLE, TEMPLATE)
        self._stack.enter_context(self.runtime)
        env = {
            **os.environ,
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": DEFAULT_REGION,
            "AWS_LAMBDA_RUNTIME_API": self.runtime.address,
            "AWS_LAMBDA_FUNCTION_NAME": "local-api",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240",
            "MODEL_PATH": str(self.model),
            "TABLE_NAME": TABLE,
            "AWS_ENDPOINT_URL_DYNAMODB": moto.endpoint_url,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            **self._env,
        }
        command = [sys.executable, "-m", "handler.entry.streaming_runtime_client", STREAM_HANDLER]
        self.function = subprocess.Popen(command, env=env, cwd=ROOT)
        self._stack.callback(self._stop_function)
        threading.Thread(target=self._front.serve_forever, daemon=True).start()
        self._stack.callback(self._front.server_close)
        self._stack.callback(self._front.shutdown)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _stop_function(self) -> None:
        if self.function is not None and self.function.poll() is None:
            self.function.terminate()
            try:
                self.function.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.function.kill()

    def invoke(self, event: dict[str, Any]) -> Invocation:
        return self.runtime.submit(event, self.timeout_s)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        local = self

        class Front(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                print(f"{self.command} {urlsplit(self.path).path}", file=sys.stderr, flush=True)

            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name: value for name, value in self.headers.items() if name.lower() != "content-length"}
                with local._lock:
                    invocation = local.invoke(proxy_event(self.command, self.path, headers, body))
                    self._relay(invocation.chunks(), invocation)

            def _relay(self, chunks: Iterator[bytes], invocation: Invocation) -> None:
                """The function's response to the client: its prelude as status and headers, its body as it comes."""
                head = b""
                for chunk in chunks:
                    head += chunk
                    if DELIMITER in head:
                        break
                prelude_text, _, rest = head.partition(DELIMITER)
                if not invocation.streaming:  # a classic proxy result (or an error before any byte)
                    for chunk in chunks:
                        prelude_text += chunk
                    self._whole(prelude_text, invocation)
                    return
                prelude = json.loads(prelude_text or b"{}")
                self.send_response(int(prelude.get("statusCode", 200)))
                for name, value in (prelude.get("headers") or {}).items():
                    self.send_header(name, str(value))
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client went away: the function goes on
                    self._send_chunk(rest)
                    for piece in chunks:
                        self._send_chunk(piece)
                    self.wfile.write(b"0\r\n\r\n")
                for _ in chunks:  # what is left after a disconnect
                    pass

            def _send_chunk(self, piece: bytes) -> None:
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()

            def _whole(self, data: bytes, invocation: Invocation) -> None:
                error_type, error = invocation.end
                if error_type is not None:
                    result: dict[str, Any] = {"statusCode": 502, "body": json.dumps({"error": error})}
                else:
                    result = json.loads(data or b"{}")
                payload = str(result.get("body") or "").encode("utf-8")
                self.send_response(int(result.get("statusCode", 502)))
                for name, value in (result.get("headers") or {}).items():
                    self.send_header(name, str(value))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Front


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="GGUF model file")
    parser.add_argument("--port", type=int, default=3000, help="port on 127.0.0.1 (default: 3000)")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"model file not found: {args.model}")
    with LocalApi(args.model.resolve(), args.port) as local:
        print(f"serving {local.base_url} (openai SDK: base_url={local.base_url}/v1); Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
