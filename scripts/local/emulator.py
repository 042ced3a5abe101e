"""The Lambda Runtime Interface Emulator (from the aws-sam-cli wheel) running the handler as Lambda would.

Importing this module has no side effects; the emulator starts inside its context manager.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from scripts.local.moto_server import DEFAULT_REGION, DUMMY_CREDENTIALS
from scripts.repository import ROOT

INVOKE_PATH = "/2015-03-31/functions/function/invocations"

_RIE_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rie_binary() -> Path:
    """The Runtime Interface Emulator binary shipped in the aws-sam-cli wheel, made executable.

    aws-sam-cli is looked up in this interpreter (without importing it), then in the repository's
    ``.venv-sam``, where it lives when its pins clash with the service's.
    """
    machine = platform.machine().lower()
    arch = _RIE_ARCH.get(machine)
    if arch is None:
        raise RuntimeError(f"no Lambda Runtime Interface Emulator build for machine type {machine!r}")
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"the Lambda Runtime Interface Emulator binaries run on Linux only (this is {sys.platform})")
    relative = Path("local", "rapid", f"aws-lambda-rie-{arch}")
    candidates = [package / relative for package in _samcli_packages()]
    binary = next((path for path in candidates if path.is_file()), None)
    if binary is None:
        expected = candidates[0] if candidates else Path("<site-packages>", "samcli", relative)
        raise RuntimeError(
            f"Lambda Runtime Interface Emulator not found at {expected}; install requirements-dev.txt "
            "(`make setup`: aws-sam-cli, from requirements-sam.txt into .venv-sam, ships the emulator binaries)"
        )
    if not os.access(binary, os.X_OK):
        try:
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise RuntimeError(f"cannot make {binary} executable: {exc}") from exc
    return binary


def _samcli_packages() -> list[Path]:
    packages: list[Path] = []
    spec = importlib.util.find_spec("samcli")
    if spec is not None and spec.submodule_search_locations:
        packages.append(Path(next(iter(spec.submodule_search_locations))))
    packages.extend(sorted(ROOT.glob(".venv-sam/lib/python3*/site-packages/samcli")))
    return packages


class LambdaEmulatorError(RuntimeError):
    """The emulator failed to start, died, or answered something that is not a Lambda response."""


class LambdaEmulator:
    """The Lambda Runtime Interface Emulator running ``python -m awslambdaric <handler>``.

    The runtime starts on the first invoke and stays warm: later invokes reach the same Python process.
    Invocations are served one at a time (concurrent calls wait), as in one Lambda execution environment.
    """

    def __init__(
        self,
        handler: str = "handler.entry.direct.lambda_handler",
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        python: str = sys.executable,
        log_path: Path | None = None,
        timeout_s: int = 300,
        *,
        function_name: str = "function",
        memory_mb: int = 3008,
        region: str = DEFAULT_REGION,
        startup_timeout: float = 30.0,
        grace_s: float = 5.0,
    ) -> None:
        self.handler = handler
        self.cwd = Path(cwd or Path.cwd()).resolve()
        self.python = python
        self.timeout_s = timeout_s
        self.startup_timeout = startup_timeout
        self.grace_s = grace_s
        self.port = 0
        self.runtime_api_port = 0
        self._extra_env = dict(env or {})
        self._lambda_env = {
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s),
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "LAMBDA_TASK_ROOT": str(self.cwd),
            **DUMMY_CREDENTIALS,
        }
        self._log_path_given = log_path
        self.log_path: Path | None = log_path
        self._log_cache: str | None = None
        self._home: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # Proxy variables of the caller must not route loopback requests elsewhere.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._invoke_lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        """Base URL of the emulator's invoke API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def invoke_url(self) -> str:
        return self.endpoint_url + INVOKE_PATH

    def environment(self, home: str | None = None) -> dict[str, str]:
        """The emulator's complete environment (the runtime inherits it, plus the Lambda variables RIE adds)."""
        home = home or self._home or tempfile.gettempdir()
        base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": home, "LANG": "C.UTF-8"}
        return {**base, **self._lambda_env, **self._extra_env}

    def command(self) -> list[str]:
        """The emulator command line: RIE flags, then the runtime command (its last word is the handler)."""
        # No "--" separator: the RIE would take it as the command to run.
        return [
            str(rie_binary()),
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{self.port}",
            "--runtime-api-address",
            f"127.0.0.1:{self.runtime_api_port}",
            self.python,
            "-m",
            "awslambdaric",
            self.handler,
        ]

    def __enter__(self) -> LambdaEmulator:
        if not self.cwd.is_dir():
            raise LambdaEmulatorError(f"task root {self.cwd} is not a directory")
        self._home = tempfile.mkdtemp(prefix="lambda-home-")
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="lambda-emulator-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        else:
            self.log_path.write_bytes(b"")  # this run's log only
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _start(self) -> None:
        assert self.log_path is not None
        assert self._home is not None
        attempts = 3  # a free port can be taken between choosing it and the emulator binding it
        for attempt in range(1, attempts + 1):
            self.port, self.runtime_api_port = free_port(), free_port()
            while self.runtime_api_port == self.port:
                self.runtime_api_port = free_port()
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    self.command(),
                    cwd=self.cwd,
                    env=self.environment(self._home),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                for port in (self.port, self.runtime_api_port):
                    _wait_for_port(port, timeout=self.startup_timeout, alive=self._check_alive)
                return
            except LambdaEmulatorError:
                if attempt < attempts and "address already in use" in self.logs().lower():
                    self._terminate()
                    continue
                raise

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise LambdaEmulatorError(
                f"Lambda emulator exited with status {self._process.returncode}; log tail:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """Kill the emulator and its runtime at once (SIGKILL), mid-invocation or not: what happens to an
        execution environment when Lambda stops it, or its host fails."""
        process = self._process
        if process is None:
            return
        tree = _descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for pid, started in tree:
            if _start_time(pid) == started:  # the same process, not a later one given its pid
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        process.wait(timeout=self.grace_s)
        self._process = None

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # The RIE starts the runtime in a process group of its own; it kills it on SIGTERM, but a
        # wedged emulator would leave it behind, so remember the whole tree first.
        tree = _descendants(process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid, started in tree:
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def _stop(self) -> None:
        self._terminate()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None
        if self._log_path_given is None and self.log_path is not None:
            self._log_cache = self.logs()
            self.log_path.unlink(missing_ok=True)

    def logs(self) -> str:
        """Everything the emulator and the runtime wrote so far (kept after exit)."""
        if self._log_cache is not None:
            return self._log_cache
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def invoke(self, event: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Invoke the function with ``event``; returns its JSON response (a Lambda error object on failure).

        ``timeout`` (seconds) bounds the HTTP call; by default the function timeout plus a margin, so the
        emulator's own timeout answer arrives first.
        """
        with self._invoke_lock:
            return self._invoke(event, self.timeout_s + 30 if timeout is None else timeout)

    def _invoke(self, event: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        if self._process is None:
            raise LambdaEmulatorError("Lambda emulator is not running (use it as a context manager)")
        self._check_alive()
        request = urllib.request.Request(
            self.invoke_url,
            data=json.dumps(event).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            # Runtime crashes come back as 5xx with the Lambda error object as the body.
            status, body = exc.code, exc.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            self._check_alive()
            raise LambdaEmulatorError(f"invoke failed: {exc}; log tail:\n{self.log_tail()}") from exc
        return self._decode(status, body)

    def _decode(self, status: int, body: bytes) -> dict[str, Any]:
        text = body.decode("utf-8", errors="replace")
        if text.startswith("Task timed out after"):
            return {"errorType": "Sandbox.Timedout", "errorMessage": text}
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            self._check_alive()
            raise LambdaEmulatorError(
                f"emulator answered HTTP {status} with a non-JSON body {text[:500]!r}; log tail:\n{self.log_tail()}"
            ) from None
        if not isinstance(payload, dict):
            raise LambdaEmulatorError(f"handler returned {type(payload).__name__}, not a JSON object: {text[:500]}")
        return payload


def _wait_for_port(port: int, timeout: float, alive: Callable[[], None]) -> None:
    """Block until 127.0.0.1:port accepts connections; ``alive()`` raises if the server died."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise LambdaEmulatorError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


def _start_time(pid: int) -> str | None:
    """Start time of ``pid`` from /proc (tells a process from a later one that reuses its id)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[-1].split()[19]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Child processes of ``pid``, recursively, with their start times (Linux /proc; empty elsewhere)."""
    found: list[tuple[int, str]] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for children_file in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                for child in (int(word) for word in children_file.read_text().split()):
                    started = _start_time(child)
                    if started is not None:
                        found.append((child, started))
                        pending.append(child)
    return found
