"""One Lambda invocation in a child process of its own, as Lambda runs a function: a real process that a test can
kill with SIGKILL at any point (a timeout, out of memory, a crash), and a fresh one for the next invocation.

    python -m tests.support.function_process HANDLER EVENT_FILE RESULT_FILE REMAINING_MS

imports ``HANDLER`` (``module.function``), calls it once with the event and a context whose remaining time starts
at ``REMAINING_MS`` and runs down with the clock, and writes its answer as JSON to ``RESULT_FILE``. The function's
logs (Powertools' JSON lines) go to the child's stdout, which the parent keeps in a file.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from scripts.repository import ROOT
from tests.support.emulator import generations_in
from tests.support.lambda_context import FakeLambdaContext


class FunctionProcess:
    """A child process running one invocation of a handler; its answer, logs and fate."""

    def __init__(
        self, handler: str, event: Any, env: dict[str, str], workdir: Path, remaining_ms: int = 60_000
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        stem = f"invocation-{uuid.uuid4().hex[:8]}"
        self.event_file = workdir / f"{stem}.event.json"
        self.result_file = workdir / f"{stem}.result.json"
        self.log_file = workdir / f"{stem}.log"
        self.event_file.write_text(json.dumps(event), encoding="utf-8")
        self.killed = False
        self.started = threading.Event()
        command = [
            sys.executable,
            "-m",
            "tests.support.function_process",
            handler,
            str(self.event_file),
            str(self.result_file),
            str(remaining_ms),
        ]
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(command, env=full_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.started.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL, as Lambda ends a function that timed out or ran out of memory: no handler runs."""
        self.killed = True
        os.kill(self.process.pid, signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the process stands still (a slow generation, a stalled host) until ``resume``."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def wait(self, timeout_s: float = 120) -> Any:
        """The invocation's answer; None when the process died without one (killed, crashed)."""
        self.process.wait(timeout=timeout_s)
        if self.process.returncode != 0 or not self.result_file.is_file():
            return None
        return json.loads(self.result_file.read_text(encoding="utf-8"))

    def logs(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def generations(self) -> int:
        """Generations this invocation finished (its "generation finished" log lines)."""
        return generations_in(self.logs())


def invoke_once(handler_path: str, event_file: Path, result_file: Path, remaining_ms: int) -> None:
    module_name, _, function_name = handler_path.rpartition(".")
    handler = getattr(importlib.import_module(module_name), function_name)
    event = json.loads(event_file.read_text(encoding="utf-8"))
    context = FakeLambdaContext(function_name=module_name.rsplit(".", 1)[-1], remaining_ms=remaining_ms)
    answer = handler(event, context)
    result_file.write_text(json.dumps(answer, default=str), encoding="utf-8")


if __name__ == "__main__":
    invoke_once(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
