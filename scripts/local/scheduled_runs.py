"""Scheduled runs of the batch function on this machine, as EventBridge Scheduler runs it deployed.

    python -m scripts.local.scheduled_runs --every SECONDS [--handler module.function] [--timeout-s 900]

That child process is one execution environment of the batch function: it imports the handler once (its init, as
Lambda's cold start does) and then invokes it with ``{"dispatch": true}`` every ``--every`` seconds, each invocation
with a context of its own whose remaining time runs down from the function's timeout. One run at a time: a run that
outlasts the interval delays the next one, it never overlaps it (a scheduled run works through queued requests
under leases, and two at once would only compete for the one CPU). The function's logs (its JSON lines) go to
stdout, and after each run one line of its own, as Lambda reports each invocation's end: ``{"message": "scheduled
run finished", ...}``.

``ScheduledRuns`` is the parent's side (``make serve``, scripts/local/serve.py): it starts that process with the
function's environment, hands its output to the caller's reader, and starts a new one when it exits (a crash, or
the memory limit: Lambda's next invocation gets a new execution environment).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from handler.entry.streaming_runtime_client import Context
from scripts.repository import ROOT

SCHEDULE_HANDLER = "handler.entry.schedule.schedule_handler"
#: What EventBridge Scheduler sends the batch function (template.yaml's schedule): work through queued requests.
SCHEDULED_EVENT = {"dispatch": True}
#: The batch function's timeout (template.yaml): Lambda's longest invocation.
FUNCTION_TIMEOUT_S = 900
FUNCTION_NAME = "local-batch"
#: The message of the line that ends each run's output.
RUN_FINISHED = "scheduled run finished"
#: A process that exits sooner than this after its start is started again only after this long: no tight loop.
RESTART_PAUSE_S = 1.0


def run_on_schedule(handler: str, every_s: float, timeout_s: float) -> None:
    """Import ``handler`` (``module.function``), then invoke it every ``every_s`` seconds, until the process ends."""
    module_name, _, function_name = handler.rpartition(".")
    function = getattr(importlib.import_module(module_name), function_name)
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"
    next_run = time.monotonic() + every_s  # a rate schedule fires its first run one interval after it is made
    while True:
        time.sleep(max(next_run - time.monotonic(), 0.0))
        started = next_run = time.monotonic()
        next_run += every_s
        request_id = str(uuid.uuid4())
        deadline_ms = int(time.time() * 1000) + int(timeout_s * 1000)
        # The handler answers its failures in its error shape and logs them; what it answers goes nowhere, as a
        # scheduled invocation's answer does.
        function(dict(SCHEDULED_EVENT), Context(request_id, deadline_ms, arn))
        report = {"level": "INFO", "message": RUN_FINISHED, "function_request_id": request_id}
        print(
            json.dumps({**report, "duration_s": round(time.monotonic() - started, 3)}, separators=(",", ":")),
            flush=True,
        )


class ScheduledRuns:
    """The batch function run on a schedule in a supervised child process; ``restarts`` counts the new ones."""

    def __init__(
        self,
        every_s: float,
        env: dict[str, str],
        read_output: Callable[[Iterable[bytes]], None],
        *,
        quiet: bool = False,
        handler: str = SCHEDULE_HANDLER,
        timeout_s: float = FUNCTION_TIMEOUT_S,
    ) -> None:
        self.every_s = every_s
        self.handler = handler
        self.timeout_s = timeout_s
        self.quiet = quiet
        self._env = {**env, "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME}
        self._env.pop("AWS_LAMBDA_RUNTIME_API", None)  # invoked by its own loop, not through a Runtime API
        self._read_output = read_output
        self._closing = threading.Event()
        self._finished = threading.Condition()
        #: Runs finished so far (every process's).
        self.finished = 0
        self._starting = threading.Lock()  # no new process once closing has begun
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def __enter__(self) -> ScheduledRuns:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._starting:
            self._closing.set()
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _start(self) -> None:
        command = [sys.executable, "-m", __name__, "--every", str(self.every_s), "--handler", self.handler]
        command += ["--timeout-s", str(self.timeout_s)]
        process = subprocess.Popen(
            command,
            env=self._env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if self.quiet else None,
        )
        self.process = process
        assert process.stdout is not None
        threading.Thread(target=self._read_output, args=(self._counted(process.stdout),), daemon=True).start()
        threading.Thread(target=self._supervise, args=(process, time.monotonic()), daemon=True).start()

    def wait_for_runs(self, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` runs have finished in all; False when ``timeout_s`` passed first."""
        with self._finished:
            return self._finished.wait_for(lambda: self.finished >= count, timeout_s)

    def _counted(self, output: IO[bytes]) -> Iterator[bytes]:
        """The process's output lines, passed on as they come, counting the runs that finished."""
        for line in output:
            yield line
            if RUN_FINISHED.encode() in line and _message_of(line) == RUN_FINISHED:
                with self._finished:
                    self.finished += 1
                    self._finished.notify_all()

    def _supervise(self, process: subprocess.Popen[bytes], started: float) -> None:
        code = process.wait()
        if self._closing.is_set():
            return
        lived_s = time.monotonic() - started
        if lived_s < RESTART_PAUSE_S and self._closing.wait(RESTART_PAUSE_S - lived_s):
            return
        with self._starting:
            if self._closing.is_set():
                return
            self.restarts += 1
            self._start()
        if not self.quiet:
            print(f"scheduled runs' process exited (code {code}); started a new one", file=sys.stderr, flush=True)


def _message_of(line: bytes) -> object:
    """The ``message`` of a JSON log line; None for a line of another kind."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("message") if isinstance(record, dict) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, required=True, help="seconds between the starts of two runs")
    parser.add_argument("--handler", default=SCHEDULE_HANDLER, help=f"module.function (default: {SCHEDULE_HANDLER})")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=FUNCTION_TIMEOUT_S,
        help=f"each run's remaining time at its start (default: {FUNCTION_TIMEOUT_S})",
    )
    args = parser.parse_args(argv)
    if args.every <= 0 or args.timeout_s <= 0:
        parser.error("--every and --timeout-s take more than 0")
    try:
        run_on_schedule(args.handler, args.every, args.timeout_s)
    except KeyboardInterrupt:  # Ctrl-C on `make serve` reaches this process too: it stops with the parent
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
