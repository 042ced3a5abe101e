"""The local loop's API step: `sam local start-api` on a free port, and a request to every kind of answer it gives.

The table is seeded through `sam local invoke` first, so a request for a stored result is answered at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.repository import ROOT
from scripts.sam.aws import local_aws
from scripts.sam.invoke import SEED_EVENTS, sam_invoke
from scripts.sam.loop import BUILT_TEMPLATE, LOCAL_DIR, LoopError, log, sam_command, sam_environment

#: The console page and its static files: GET only, and served without the API's auth (a browser's navigation can
#: neither sign a request nor send x-api-key; the page asks for the key for its own calls).
CONSOLE_ROUTES = ("/", "/console/{asset}")
#: The paths each API mode's function serves (template.yaml's events on Api and KeyApi; tests compare them).
API_ROUTES = (
    *CONSOLE_ROUTES,
    "/summarize",
    "/translate",
    "/chat",
    "/results/{id}",
    "/v1/chat/completions",
    "/v1/chat/completions/{completion_id}",
    "/v1/models",
    "/v1/models/{model}",
    "/v1/files",
    "/v1/files/{file_id}",
    "/v1/files/{file_id}/content",
    "/v1/batches",
    "/v1/batches/{batch_id}",
    "/v1/batches/{batch_id}/cancel",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def start_api(env_file: Path, log_path: Path, template: Path = BUILT_TEMPLATE, timeout_s: float = 120) -> Iterator[str]:
    """`sam local start-api` on a free loopback port (warm containers), yielding its base URL."""
    port = free_port()
    command = [
        *sam_command(),
        "local",
        "start-api",
        "--template-file",
        str(template),
        "--env-vars",
        str(env_file),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--warm-containers",
        "LAZY",
        "--skip-pull-image",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=sam_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise LoopError(f"sam local start-api exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise LoopError(
                    f"sam local start-api does not listen after {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)  # sam stops its warm containers on Ctrl-C
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: Any
    seconds: float


def http(
    method: str,
    url: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> HttpAnswer:
    """One HTTP request (no proxies), its JSON body decoded when it is JSON."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.monotonic()
    try:
        with opener.open(request, timeout=timeout) as response:
            status, raw, got = response.status, response.read(), dict(response.headers.items())
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), dict(exc.headers.items())
    seconds = time.monotonic() - started
    try:
        decoded: Any = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        decoded = raw.decode("utf-8", errors="replace")
    return HttpAnswer(status, {key.lower(): value for key, value in got.items()}, decoded, seconds)


#: Where the Lambda base image's Runtime Interface Emulator takes invocations (port 8080 in the container).
INVOCATIONS_PATH = "/2015-03-31/functions/function/invocations"


@dataclass
class EntryPoint:
    """A running container of a function image, served by its own Runtime Interface Emulator."""

    name: str
    url: str

    def logs(self) -> str:
        """The container's log so far: the emulator's lines and the function's, in one text."""
        out = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, check=False)
        return out.stdout + out.stderr

    def invoke(self, body: str, wait_s: float, poll_s: float, timeout: float = 900) -> HttpAnswer:
        """One invocation, sent again every ``poll_s`` while the emulator is not yet listening, for ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return http("POST", self.url, body, {"Content-Type": "application/json"}, timeout)
            except (urllib.error.URLError, ConnectionError):  # the emulator is not listening yet
                if time.monotonic() > deadline:
                    raise LoopError(f"the emulator of {self.name} does not answer after {wait_s:.0f} s") from None
                time.sleep(poll_s)


@contextlib.contextmanager
def entry_point(
    image: str,
    env: Mapping[str, str] | None = None,
    platform: str | None = None,
    prefix: str = "llm-service-entrypoint",
) -> Iterator[EntryPoint]:
    """``docker run`` of the image's own entry point on a free local port; the container is removed afterwards.

    Without AWS_LAMBDA_RUNTIME_API, the base image's /lambda-entrypoint.sh puts the Runtime Interface Emulator in
    front of the function; it starts the function's init with the first invocation.
    """
    port = free_port()
    name = f"{prefix}-{port}"
    command = ["docker", "run", "--detach", "--rm", "--name", name, "--publish", f"127.0.0.1:{port}:8080"]
    if platform:
        command += ["--platform", platform]
    for key, value in (env or {}).items():
        command += ["--env", f"{key}={value}"]
    subprocess.run([*command, image], check=True, capture_output=True)
    try:
        yield EntryPoint(name, f"http://127.0.0.1:{port}{INVOCATIONS_PATH}")
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)


def request_body(event: str) -> str:
    """A seed event as an API body (the route implies the task)."""
    return json.dumps(json.loads((ROOT / event).read_text(encoding="utf-8")))


def api(args: argparse.Namespace) -> int:
    failures = 0

    def expect(label: str, answer: HttpAnswer, status: int, check: str | None = None) -> None:
        nonlocal failures
        ok = answer.status == status and check is None
        shown = json.dumps(answer.body)[:300]
        print(f"{'ok  ' if ok else 'FAIL'} {label}: HTTP {answer.status} ({answer.seconds:.1f} s) {shown}")
        if not ok:
            failures += 1
            print(f"     expected HTTP {status}{'; ' + check if check else ''}", file=sys.stderr)

    with local_aws(LOCAL_DIR / "api-env.json") as aws:
        log(f"DynamoDB and SQS (moto): {aws.endpoint_url}, table {aws.table}")
        # A result in the table first, as a batch run would leave it: the API answers it at once.
        seeded = sam_invoke("GenerateFunction", ROOT / SEED_EVENTS[0], aws.env_file)
        log(f"seeded the table with {SEED_EVENTS[0]} through sam local invoke ({seeded.seconds:.1f} s)")
        with start_api(aws.env_file, LOCAL_DIR / "start-api.log") as url:
            log(f"sam local start-api: {url} (log {LOCAL_DIR / 'start-api.log'})")
            json_type = {"Content-Type": "application/json"}
            cached = http("POST", f"{url}/summarize", request_body(SEED_EVENTS[0]), json_type)
            expect(
                "POST /summarize (in the table)",
                cached,
                200,
                None if cached.body and cached.body.get("cached") is True else "cached true",
            )
            queued = http(
                "POST", f"{url}/translate", request_body(SEED_EVENTS[1]), {**json_type, "Prefer": "respond-async"}
            )
            location = queued.headers.get("location", "")
            expect(
                "POST /translate (Prefer: respond-async)",
                queued,
                202,
                None if location.startswith("/") else "a Location header",
            )
            chat = http("POST", f"{url}/chat", request_body(SEED_EVENTS[2]), {**json_type, "Prefer": "respond-async"})
            expect("POST /chat (Prefer: respond-async)", chat, 202)
            if location:
                pending = http("GET", f"{url}{location}")
                expect(
                    f"GET {location}",
                    pending,
                    200,
                    None if pending.body and pending.body.get("status") == "PENDING" else "status PENDING",
                )
            done = http("GET", f"{url}/results/{seeded.response.get('id')}")
            expect(
                "GET /results/{id} (done)",
                done,
                200,
                None if done.body and done.body.get("status") == "DONE" else "status DONE",
            )
            expect("GET /results/<unknown id>", http("GET", f"{url}/results/{'0' * 64}"), 404)
            expect("POST /summarize, malformed JSON", http("POST", f"{url}/summarize", "{", json_type), 400)
            expect("POST /summarize, no text", http("POST", f"{url}/summarize", "{}", json_type), 422)
            expect(
                "POST /summarize, text/plain",
                http("POST", f"{url}/summarize", "hello", {"Content-Type": "text/plain"}),
                415,
            )
            expect("GET /summarize", http("GET", f"{url}/summarize"), 405)
        messages = aws.receive()
        print(f"work queue: {len(messages)} message(s) queued by the API")
    if failures:
        print(f"{failures} API check(s) failed", file=sys.stderr)
        return 1
    return 0
