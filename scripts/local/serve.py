"""Serve the API on 127.0.0.1 through the function's own streaming runtime: `make serve`, to see answers stream.

    python -m scripts.local.serve --model models/x.gguf [--port 3000]

What a deployed stack does, on one machine: HTTP requests become API Gateway proxy events; the function runs as
Lambda runs it (its streaming runtime client, handler/entry/streaming_runtime_client.py, against a local Runtime API,
scripts/local/runtime_api.py) with a local results table (moto); its streamed response (a JSON prelude, 8 NUL
bytes, then the body as it comes) goes back to the client as it comes, chunked. The openai SDK pointed at
``http://127.0.0.1:3000/v1`` streams with ``stream=True``. `sam local start-api` serves the same routes buffered
(its emulator reads a response whole).

What API Gateway does in front of the function, as the template declares it:
- ``BinaryMediaTypes: multipart/form-data``: an upload (``POST /v1/files``) reaches the function base64-encoded,
  ``isBase64Encoded: true``; other bodies as text.
- API-key mode: ``requestContext.identity.apiKeyId`` names the caller's key, here an id derived from it (the
  ``x-api-key`` header, else the token of ``Authorization: Bearer``, what the openai SDK sends as its api_key), so
  two keys are two owners of files and batches. Without a key the event has no ``apiKeyId``. The key is never logged.

What the rest of the stack does: the batch bucket is moto's too (``BATCH_BUCKET``, ``AWS_ENDPOINT_URL_S3``), and the
batch function runs on a schedule (``--schedule-every``, scripts/local/scheduled_runs.py) as EventBridge Scheduler
runs it, in a child process of its own with the function's environment: with no work queue here, each run generates
the queued requests itself and advances the open batches (their counts, output files, cancels).

What a deployed API does at its concurrency limit, and when its function dies:
- One execution environment: one invocation runs at a time, and at most ``max_waiting`` requests wait for their
  turn (``--max-waiting``). A request that finds the line full is answered 429 at once, one that waited
  ``max_wait_s`` (the API's budget, 29 s) 503; both with ``Retry-After`` and the API's error shape (OpenAI's on
  /v1/ paths), as API Gateway answers a throttled function. No request waits without bound.
- The function's process is supervised: when it exits (killed, crashed), the invocation it held is answered 502
  (as API Gateway answers a crashed Lambda) and a new process serves the next request (Lambda's new execution
  environment). ``function_pid`` and ``restarts`` say which process runs and how many were started after the first.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import enum
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from handler.domain.answers import ErrorAnswer, ErrorInfo
from handler.formats.openai_chat import OpenAIError, OpenAIErrorAnswer
from handler.formats.server_sent_events import EVENT_STREAM, error_event
from scripts.local.moto_server import (
    DEFAULT_REGION,
    DUMMY_CREDENTIALS,
    MotoDynamoDB,
    create_bucket,
    create_table_from_template,
)
from scripts.local.runtime_api import Invocation, RuntimeApi
from scripts.local.scheduled_runs import ScheduledRuns
from scripts.repository import ROOT, TEMPLATE

STREAM_HANDLER = "handler.entry.api.stream_handler"
DELIMITER = b"\0" * 8
TABLE = "llm-results-local"
#: The batch bucket (files, batches, manifests), in moto beside the table.
BUCKET = "llm-batches-local"
#: Request bodies API Gateway hands the function base64-encoded (template.yaml's ``BinaryMediaTypes``).
BINARY_MEDIA_TYPES = frozenset({"multipart/form-data"})
#: How often ``make serve`` runs the batch function, in seconds (0: never).
DEFAULT_SCHEDULE_EVERY_S = 10.0
#: Requests that may wait for the one execution environment (``--max-waiting``).
DEFAULT_MAX_WAITING = 8
#: How long a request waits for its turn: the API's budget (API Gateway's REST API waits 29 s).
DEFAULT_MAX_WAIT_S = 29.0
#: The message of the function's log line that says one generation ended (handler/usecases/generation_result.py).
GENERATION_FINISHED = "generation finished"
#: A function that exits sooner than this after its start is started again only after this long: no tight loop.
RESTART_PAUSE_S = 1.0


def header(headers: dict[str, str], name: str) -> str | None:
    """The value of the header ``name``, whatever the case the client wrote it in."""
    return next((value for key, value in headers.items() if key.lower() == name), None)


def api_key_id(headers: dict[str, str]) -> str | None:
    """The id API Gateway would give the caller's API key: one per key, never the key itself; None without a key.

    The key is the ``x-api-key`` header (API Gateway's), else the token of ``Authorization: Bearer`` (the openai
    SDK's api_key)."""
    key = header(headers, "x-api-key")
    if not key:
        scheme, _, token = (header(headers, "authorization") or "").strip().partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if not key:
        return None
    return "local-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


def is_binary(headers: dict[str, str]) -> bool:
    """Whether API Gateway hands this request's body over base64-encoded: its media type is a binary one."""
    media_type = (header(headers, "content-type") or "").partition(";")[0].strip().lower()
    return media_type in BINARY_MEDIA_TYPES


def proxy_event(method: str, target: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The API Gateway REST proxy event of an HTTP request (stage ``local``, API-key mode, binary uploads)."""
    url = urlsplit(target)
    query = parse_qs(url.query)
    identity = {"sourceIp": "127.0.0.1"}
    key_id = api_key_id(headers)
    if key_id is not None:
        identity["apiKeyId"] = key_id
    binary = is_binary(headers)
    text = (base64.b64encode(body).decode("ascii") if binary else body.decode("utf-8")) if body else None
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
            "identity": identity,
        },
        "body": text,
        "isBase64Encoded": binary,
    }


class Turn(enum.Enum):
    """What a request that arrives gets from the admission control."""

    ADMITTED = "admitted"
    LINE_FULL = "line full"
    WAITED_TOO_LONG = "waited too long"


class Admission:
    """One invocation at a time, and a bounded line of requests waiting for their turn, first come first served."""

    def __init__(self, max_waiting: int, max_wait_s: float) -> None:
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        self._turns = threading.Condition()
        self._busy = False
        self._line: collections.deque[object] = collections.deque()
        self._typical_s = 1.0  # an invocation's usual length, to say when to come back

    @property
    def waiting(self) -> int:
        return len(self._line)

    def enter(self) -> Turn:
        """Wait for this request's turn; LINE_FULL at once when the line is full, WAITED_TOO_LONG after max_wait_s."""
        with self._turns:
            if not self._busy and not self._line:
                self._busy = True
                return Turn.ADMITTED
            if len(self._line) >= self.max_waiting:
                return Turn.LINE_FULL
            ticket = object()
            self._line.append(ticket)
            give_up_at = time.monotonic() + self.max_wait_s
            while self._busy or self._line[0] is not ticket:
                remaining_s = give_up_at - time.monotonic()
                if remaining_s <= 0:
                    self._line.remove(ticket)
                    self._turns.notify_all()  # the one behind may be first now
                    return Turn.WAITED_TOO_LONG
                self._turns.wait(remaining_s)
            self._line.popleft()
            self._busy = True
            return Turn.ADMITTED

    def leave(self, seconds: float) -> None:
        """The admitted request is answered after ``seconds``: the next in line goes."""
        with self._turns:
            self._typical_s = 0.8 * self._typical_s + 0.2 * seconds
            self._busy = False
            self._turns.notify_all()

    def retry_after_s(self) -> int:
        """Whole seconds until the line has likely moved on: everyone in it and the one running, at the usual pace."""
        with self._turns:
            return min(max(math.ceil((len(self._line) + 1) * self._typical_s), 1), 60)


@dataclass(frozen=True)
class FrontError:
    """An answer the front gives itself, as API Gateway does: its status and its error in the API's two shapes."""

    status: HTTPStatus
    error_type: str
    openai_type: str
    openai_code: str

    def body(self, path: str, message: str) -> dict[str, Any]:
        """The error answer of a request to ``path``: OpenAI's shape on /v1/ routes, the API's own elsewhere."""
        if path.startswith("/v1/"):
            openai = OpenAIError(message=message, type=self.openai_type, param=None, code=self.openai_code)
            return OpenAIErrorAnswer(error=openai).model_dump(mode="json")
        return ErrorAnswer(error=ErrorInfo(type=self.error_type, message=message)).model_dump(
            mode="json", exclude_none=True
        )


LINE_FULL = FrontError(HTTPStatus.TOO_MANY_REQUESTS, "TooManyRequests", "rate_limit_error", "rate_limit_exceeded")
WAITED_TOO_LONG = FrontError(HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailable", "server_error", "unavailable")
FUNCTION_FAILED = FrontError(HTTPStatus.BAD_GATEWAY, "InternalError", "server_error", "internal_error")
FUNCTION_TIMED_OUT = FrontError(HTTPStatus.GATEWAY_TIMEOUT, "DeadlineReached", "server_error", "timeout")


class FrontServer(ThreadingHTTPServer):
    """The HTTP front: a thread per connection, and room for many callers connecting at once."""

    daemon_threads = True
    # socketserver's default listen backlog (5) makes the sixth simultaneous caller wait a TCP retransmit (a second
    # or more) before it is even accepted: every caller is accepted at once and then admitted, queued or refused.
    request_queue_size = 128


class LocalApi:
    """The function (a supervised child process running its streaming runtime) behind an HTTP front on 127.0.0.1."""

    def __init__(
        self,
        model: Path,
        port: int = 0,
        env: dict[str, str] | None = None,
        timeout_s: float = 900,
        *,
        max_waiting: int = DEFAULT_MAX_WAITING,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        quiet: bool = False,
        table_name: str = TABLE,
        bucket_name: str = BUCKET,
        schedule_every_s: float = 0,
    ) -> None:
        self.model = model
        #: The results table's name: moto keeps one state per Python process, so two APIs in one need two names.
        self.table_name = table_name
        #: The batch bucket's name: a scheduled run reads every open batch in it, so two APIs need two buckets too.
        self.bucket_name = bucket_name
        #: Seconds between scheduled runs of the batch function; 0: none (batches then never advance).
        self.schedule_every_s = schedule_every_s
        self.scheduled_runs: ScheduledRuns | None = None
        self.timeout_s = timeout_s
        #: Without the request log and the function's output (a load run prints its own figures).
        self.quiet = quiet
        self.admission = Admission(max_waiting, max_wait_s)
        self._env = env or {}
        self._function_env: dict[str, str] = {}
        self._stack = contextlib.ExitStack()
        self.runtime = RuntimeApi()
        self._front = FrontServer(("127.0.0.1", port), self._handler())
        self.function: subprocess.Popen[bytes] | None = None
        #: Function processes started after the first (each after one exited).
        self.restarts = 0
        self._closing = threading.Event()
        self._generations_lock = threading.Lock()
        self._generations: collections.Counter[str] = collections.Counter()
        self.table_endpoint = ""
        #: moto's endpoint for S3 (the same server as the table's, until the caller routes the table elsewhere).
        self.bucket_endpoint = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._front.server_address[1]}"

    @property
    def function_pid(self) -> int | None:
        """The process id of the function running now."""
        return self.function.pid if self.function is not None else None

    def generations(self) -> collections.Counter[str]:
        """How many generations finished, by request id, as the function's log says (every process so far)."""
        with self._generations_lock:
            return collections.Counter(self._generations)

    def __enter__(self) -> LocalApi:
        moto = self._stack.enter_context(MotoDynamoDB())
        self.table_endpoint = self.bucket_endpoint = moto.endpoint_url
        create_table_from_template(moto.endpoint_url, self.table_name, TEMPLATE)
        create_bucket(moto.endpoint_url, self.bucket_name)
        self._stack.enter_context(self.runtime)
        self._function_env = {
            **os.environ,
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": DEFAULT_REGION,
            "AWS_LAMBDA_RUNTIME_API": self.runtime.address,
            "AWS_LAMBDA_FUNCTION_NAME": "local-api",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240",
            "MODEL_PATH": str(self.model),
            "TABLE_NAME": self.table_name,
            "AWS_ENDPOINT_URL_DYNAMODB": moto.endpoint_url,
            "BATCH_BUCKET": self.bucket_name,
            "AWS_ENDPOINT_URL_S3": moto.endpoint_url,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            **self._env,
        }
        self._start_function()
        self._stack.callback(self._stop_function)
        if self.schedule_every_s > 0:
            runs = ScheduledRuns(self.schedule_every_s, self._function_env, self._read_log, quiet=self.quiet)
            self.scheduled_runs = self._stack.enter_context(runs)
        threading.Thread(target=self._front.serve_forever, daemon=True).start()
        self._stack.callback(self._front.server_close)
        self._stack.callback(self._front.shutdown)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start_function(self) -> None:
        command = [sys.executable, "-m", "handler.entry.streaming_runtime_client", STREAM_HANDLER]
        self.runtime.init_error = None
        process = subprocess.Popen(
            command,
            env=self._function_env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if self.quiet else None,
        )
        self.function = process
        assert process.stdout is not None
        threading.Thread(target=self._read_log, args=(process.stdout,), daemon=True).start()
        threading.Thread(target=self._supervise, args=(process, time.monotonic()), daemon=True).start()

    def _read_log(self, output: Iterable[bytes]) -> None:
        """Pass a function's log on (unless quiet), counting the generations it reports (the API's, the runs')."""
        for raw in output:
            line = raw.decode("utf-8", "replace")
            if not self.quiet:
                sys.stdout.write(line)
                sys.stdout.flush()
            if GENERATION_FINISHED not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("message") == GENERATION_FINISHED:
                    with self._generations_lock:
                        self._generations[str(record.get("id"))] += 1

    def _supervise(self, process: subprocess.Popen[bytes], started: float) -> None:
        """When the function's process exits: 502 for what it held, and a new process for the next request."""
        code = process.wait()
        if self._closing.is_set():
            return
        self.runtime.abandon_running(
            "Runtime.ExitError", f"the function's process exited (code {code}) while answering; try again"
        )
        if self.runtime.init_error is not None:  # a new process would fail the same way: tell who waits for it
            message = str(self.runtime.init_error.get("errorMessage") or "the handler could not be loaded")
            self.runtime.abandon_pending("Runtime.ImportModuleError", message)
        lived_s = time.monotonic() - started
        if lived_s < RESTART_PAUSE_S and self._closing.wait(RESTART_PAUSE_S - lived_s):
            return
        self.restarts += 1
        self._start_function()
        if not self.quiet:
            print(f"function exited (code {code}); started a new one (pid {self.function_pid})", file=sys.stderr)

    def _stop_function(self) -> None:
        self._closing.set()
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
                if not local.quiet:
                    print(f"{self.command} {urlsplit(self.path).path}", file=sys.stderr, flush=True)

            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def do_DELETE(self) -> None:
                self._forward()

            # The API answers the methods a route does not take (405) itself, as it does deployed.
            def do_PUT(self) -> None:
                self._forward()

            def do_PATCH(self) -> None:
                self._forward()

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name: value for name, value in self.headers.items() if name.lower() != "content-length"}
                turn = local.admission.enter()
                if turn is not Turn.ADMITTED:
                    self._refuse(turn)
                    return
                began = time.monotonic()
                try:
                    invocation = local.invoke(proxy_event(self.command, self.path, headers, body))
                    with contextlib.suppress(OSError):  # the client went away: the function's answer goes nowhere
                        self._relay(invocation.chunks(), invocation)
                finally:
                    local.admission.leave(time.monotonic() - began)

            def _refuse(self, turn: Turn) -> None:
                """429 when the line is full, 503 after waiting too long: when to come back, in the API's shape."""
                if turn is Turn.LINE_FULL:
                    error = LINE_FULL
                    message = f"too many requests: one runs and {local.admission.max_waiting} wait; retry later"
                else:
                    error = WAITED_TOO_LONG
                    message = f"no turn came within {local.admission.max_wait_s:g} s; retry later"
                retry_after = {"Retry-After": str(local.admission.retry_after_s())}
                self._send_whole(error.status, error.body(self.path, message), retry_after)

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
                headers = prelude.get("headers") or {}
                self.send_response(int(prelude.get("statusCode", 200)))
                for name, value in headers.items():
                    self.send_header(name, str(value))
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    self._send_chunk(rest)
                    for piece in chunks:
                        self._send_chunk(piece)
                    events = any(
                        name.lower() == "content-type" and str(value).startswith(EVENT_STREAM)
                        for name, value in headers.items()
                    )
                    if invocation.end[0] is not None and events:
                        self._send_chunk(self._error_event(invocation))
                    self.wfile.write(b"0\r\n\r\n")
                finally:
                    for _ in chunks:  # what is left after a disconnect
                        pass

            def _error_event(self, invocation: Invocation) -> bytes:
                """The stream's last event when the function failed after its first bytes (its process died)."""
                error, message = self._function_error(invocation)
                return error_event(error.body(self.path, message), native=not self.path.startswith("/v1/"))

            def _send_chunk(self, piece: bytes) -> None:
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()

            def _whole(self, data: bytes, invocation: Invocation) -> None:
                if invocation.end[0] is not None:
                    error, message = self._function_error(invocation)
                    self._send_whole(error.status, error.body(self.path, message))
                    return
                result = json.loads(data or b"{}")
                payload = str(result.get("body") or "").encode("utf-8")
                self.send_response(int(result.get("statusCode", 502)))
                for name, value in (result.get("headers") or {}).items():
                    self.send_header(name, str(value))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            @staticmethod
            def _function_error(invocation: Invocation) -> tuple[FrontError, str]:
                """What API Gateway answers for a function that failed: 504 when it timed out, 502 otherwise."""
                error_type, error = invocation.end
                if error_type == "Sandbox.Timedout":
                    return FUNCTION_TIMED_OUT, "the function did not answer in time; try again"
                if error_type is not None and error_type.startswith("Runtime."):
                    return FUNCTION_FAILED, str((error or {}).get("errorMessage") or error_type)
                # A handler's own exception: its message is the function's, not the caller's to read.
                return FUNCTION_FAILED, f"the function failed ({error_type}); try again"

            def _send_whole(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(body).encode("utf-8")
                with contextlib.suppress(OSError):  # the client went away
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

        return Front


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="GGUF model file")
    parser.add_argument("--port", type=int, default=3000, help="port on 127.0.0.1 (default: 3000)")
    parser.add_argument(
        "--max-waiting",
        type=int,
        default=DEFAULT_MAX_WAITING,
        help=f"requests that may wait for their turn; more are answered 429 (default: {DEFAULT_MAX_WAITING})",
    )
    parser.add_argument(
        "--max-wait-s",
        type=float,
        default=DEFAULT_MAX_WAIT_S,
        help=f"seconds a request waits for its turn before 503 (default: {DEFAULT_MAX_WAIT_S:g})",
    )
    parser.add_argument(
        "--schedule-every",
        type=float,
        default=DEFAULT_SCHEDULE_EVERY_S,
        metavar="SECONDS",
        help="run the batch function (scheduled runs: queued requests, batches) every SECONDS; 0: never "
        f"(default: {DEFAULT_SCHEDULE_EVERY_S:g})",
    )
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"model file not found: {args.model}")
    if args.max_waiting < 0 or args.max_wait_s <= 0:
        parser.error("--max-waiting takes 0 or more, --max-wait-s more than 0")
    if args.schedule_every < 0:
        parser.error("--schedule-every takes 0 (never) or more")
    with LocalApi(
        args.model.resolve(),
        args.port,
        max_waiting=args.max_waiting,
        max_wait_s=args.max_wait_s,
        schedule_every_s=args.schedule_every,
    ) as local:
        print(f"serving {local.base_url} (openai SDK: base_url={local.base_url}/v1); Ctrl-C stops", flush=True)
        print(f"results table {local.table_name} at {local.table_endpoint}", flush=True)
        print(f"batch bucket {local.bucket_name} at {local.bucket_endpoint}", flush=True)
        if local.schedule_every_s > 0:
            print(f"scheduled batch runs every {local.schedule_every_s:g} s", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
