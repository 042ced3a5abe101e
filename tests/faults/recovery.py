"""How the faults tier lets the system recover as it would on Lambda: SQS's event source delivering until its queue
is empty (redelivering what a dead or failed invocation left), the next scheduled run, a caller trying again."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.domain.requests import parse_request
from handler.entry import runtime
from handler.usecases import queueing
from scripts.local.moto_server import local_client
from tests.support.fault_proxy import COMPLETE, Fault, FaultProxy
from tests.support.function_process import FunctionProcess
from tests.support.lambda_context import FakeLambdaContext
from tests.support.ledger import Settled, settle
from tests.support.local_aws import Table
from tests.support.sqs import EventSource

WORKER = "handler.entry.worker.worker_handler"
SCHEDULE = "handler.entry.schedule.schedule_handler"
API = "handler.entry.api.lambda_handler"
#: The first run is told about its speeds, so that a short invocation claims work (the defaults assume Phi-3).
FAST_ENOUGH = {"EXPECTED_LOAD_S": "0", "EXPECTED_PROMPT_TOKENS_PER_S": "2000", "EXPECTED_EVAL_TOKENS_PER_S": "2000"}


@dataclass
class FaultyAws:
    """moto behind the fault proxy: one fresh table, work queue and batch bucket, and the clients the tests use."""

    proxy: FaultProxy
    table: Table
    queue_url: str
    bucket: str
    workdir: Path
    model: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """A client through the proxy (the event source's SQS calls can be broken too)."""
        return local_client(service, self.proxy.endpoint_url)

    def event_source(self) -> EventSource:
        return EventSource(self.client("sqs"), self.queue_url)

    def function(
        self, handler: str, event: Any, remaining_ms: int = 60_000, env: dict[str, str] | None = None
    ) -> FunctionProcess:
        """One invocation of ``handler`` in a child process of its own, its calls through the proxy."""
        return FunctionProcess(handler, event, {**self.env, **(env or {})}, self.workdir, remaining_ms)


def summaries(count: int, tag: str, max_tokens: int = 8) -> list[dict[str, Any]]:
    return [
        {
            "task": "summarize",
            "text": f"{tag} report {n}: the pump failed twice.",
            "options": {"max_tokens": max_tokens},
        }
        for n in range(count)
    ]


def enqueue(requests: list[dict[str, Any]]) -> list[str]:
    """Queue requests as the batch scripts do (items PENDING, ids on the work queue); their ids."""
    service = runtime.get_service()
    report = queueing.queue_requests(service, enumerate(requests, start=1))
    assert report.new == len(requests), report
    return [service.request_id(parse_request(request)) for request in requests]


def first_one_hit_by(fault: Fault) -> Callable[[FunctionProcess, int], None]:
    """An ``on_invoke`` that makes the first invocation the process ``fault`` kills or pauses."""

    def first(function: FunctionProcess, number: int) -> None:
        if number == 0:
            fault.process = function

    return first


def until_empty(aws: FaultyAws, invoke: Callable[[dict[str, Any], int], Any], limit_s: float = 90) -> int:
    """SQS's event source for the worker until the queue is empty: up to ten messages per invocation
    (``invoke(event, number)`` answers it, None when it died or raised), only those not reported failed deleted;
    what an invocation did not finish comes back after its visibility timeout. The number of invocations."""
    source = aws.event_source()
    invocations = 0
    ends = time.monotonic() + limit_s
    while time.monotonic() < ends:
        messages = source.receive(wait_s=1)
        if not messages:
            if source.depth() == 0:
                return invocations
            continue
        answer = invoke(source.event(messages), invocations)
        invocations += 1
        source.settle(messages, answer)
    raise AssertionError(f"the queue was not empty after {limit_s} s: {source.depth()} messages")


def deliver(
    aws: FaultyAws,
    remaining_ms: int = 6_000,
    on_invoke: Callable[[FunctionProcess, int], None] | None = None,
    env: dict[str, str] | None = None,
) -> list[FunctionProcess]:
    """SQS's event source (``until_empty``), each invocation in a fresh process; the invocations."""
    invocations: list[FunctionProcess] = []

    def in_a_process(event: dict[str, Any], number: int) -> Any:
        function = aws.function(WORKER, event, remaining_ms, env)
        if on_invoke is not None:
            on_invoke(function, number)
        invocations.append(function)
        return function.wait()

    until_empty(aws, in_a_process)
    return invocations


def scheduled_runs(
    aws: FaultyAws,
    ids: list[str],
    remaining_ms: int = 8_000,
    limit_s: float = 90,
    on_invoke: Callable[[FunctionProcess, int], None] | None = None,
    env: dict[str, str] | None = None,
) -> list[FunctionProcess]:
    """The scheduled batch run, again and again (its hourly schedule, compressed), until every item has ended."""
    runs: list[FunctionProcess] = []
    ends = time.monotonic() + limit_s
    while time.monotonic() < ends:
        unended = [item for item in aws.table.items() if item["id"] in ids and item["status"] not in ("DONE", "FAILED")]
        if not unended and runs:
            return runs
        function = aws.function(SCHEDULE, {"dispatch": False}, remaining_ms, {**FAST_ENOUGH, **(env or {})})
        if on_invoke is not None:
            on_invoke(function, len(runs))
        runs.append(function)
        function.wait()
        time.sleep(0.5)
    raise AssertionError(f"items still unended after {limit_s} s of scheduled runs")


def generations(invocations: list[FunctionProcess]) -> int:
    return sum(invocation.generations() for invocation in invocations)


def answer_of(function: FunctionProcess) -> tuple[int, dict[str, Any]] | None:
    """An API invocation's status and JSON body; None when its process died (API Gateway answers 502)."""
    result = function.wait()
    if result is None:
        return None
    return int(result["statusCode"]), json.loads(result["body"])


def deliver_here(aws: FaultyAws, remaining_ms: int = 6_000, first_remaining_ms: int | None = None) -> int:
    """SQS's event source (``until_empty``), invoking the worker in this process (one warm execution environment);
    an invocation that raises deletes nothing. The number of invocations."""
    from handler.entry.worker import worker_handler

    def here(event: dict[str, Any], number: int) -> Any:
        given = first_remaining_ms if number == 0 and first_remaining_ms is not None else remaining_ms
        try:
            return worker_handler(event, FakeLambdaContext(remaining_ms=given, function_name="worker"))
        except Exception:  # Lambda records the invocation as failed: every message comes back
            return None

    return until_empty(aws, here)


def done_once(aws: FaultyAws, ids: list[str]) -> Settled:
    """Every request DONE, whole and not held, none lost, each result written exactly once (the proxy's count of
    completions that took effect); what settled, for the ledger."""
    settled = settle(aws.table, ids)
    assert (settled.lost, settled.problems, len(settled.done)) == ([], [], len(ids)), settled
    written = aws.proxy.written(COMPLETE)
    assert written == dict.fromkeys(ids, 1), written
    return settled
