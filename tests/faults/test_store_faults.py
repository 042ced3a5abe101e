"""DynamoDB answering throttling (ProvisionedThroughputExceededException, ThrottlingException) and 500s at each of
the service's calls: put, claim, complete, release and query. A few failed calls are absorbed by the SDK's retries;
more than its retries surface as the service's StoreError, and the request waits for its next try (the caller's 429
or 503 with Retry-After, SQS's redelivery, the next scheduled run). Afterwards every request has ended, once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from handler.entry import api, schedule
from tests.faults.recovery import FAST_ENOUGH, FaultyAws, deliver_here, enqueue, summaries
from tests.support import apigw
from tests.support.fault_proxy import CLAIM, COMPLETE, RELEASE, Action, Fault
from tests.support.lambda_context import FakeLambdaContext
from tests.support.ledger import Ledger, settle

#: Calls the SDK retries: botocore's standard mode with max_attempts 5 (handler/storage/dynamo_table.py) makes one
#: call and five retries, so six failed calls in a row reach the service's code.
WITHIN_RETRIES = 2
PAST_RETRIES = 6
KINDS: list[Action] = ["throttle", "throttling", "error-500"]


@dataclass(frozen=True)
class Call:
    """One of the service's table calls: the operation, the piece of its body that names it, who makes it."""

    operation: str
    contains: str
    where: str


CALLS = {
    "put": Call("PutItem", "", "API, Prefer: respond-async"),
    "claim": Call("UpdateItem", CLAIM, "worker"),
    "complete": Call("UpdateItem", COMPLETE, "worker"),
    "release": Call("UpdateItem", RELEASE, "worker, deadline reached"),
    "query": Call("Query", "", "scheduled run"),
}
CASES = [(call, kind, WITHIN_RETRIES) for call in CALLS for kind in KINDS] + [
    (call, "throttle", PAST_RETRIES) for call in CALLS
]


@pytest.mark.parametrize(("call", "kind", "times"), CASES)
def test_the_table_failing_at_each_call_loses_nothing(
    aws: FaultyAws, ledger: Ledger, monkeypatch: pytest.MonkeyPatch, call: str, kind: Action, times: int
) -> None:
    for key, value in FAST_ENOUGH.items():
        monkeypatch.setenv(key, value)
    fault = Fault("dynamodb", CALLS[call].operation, kind, contains=CALLS[call].contains, times=times)
    ids, tries = SCENARIOS[call](aws, fault)
    assert fault.hits == times, f"{fault.hits} of {times} faults injected ({fault.seen} matching calls)"
    if times < PAST_RETRIES:
        # The SDK's retries absorbed the faults: no invocation, run or caller had to try again.
        assert tries == (2 if call == "release" else 1)
    settled = settle(aws.table, ids)
    assert (settled.lost, settled.problems, len(settled.done)) == ([], [], len(ids))
    written = aws.proxy.written(COMPLETE)
    assert written == dict.fromkeys(ids, 1)
    ledger.record(
        f"DynamoDB {kind} x{times}",
        f"{call} ({CALLS[call].where})",
        times,
        settled,
        aws.proxy.written(COMPLETE),
        "SDK retries" if times < PAST_RETRIES else RECOVERIES[call],
    )


def _worker(aws: FaultyAws, fault: Fault, first_remaining_ms: int | None = None) -> tuple[list[str], int]:
    ids = enqueue(summaries(3, f"{fault.operation} {fault.contains} {fault.action} {fault.times}"))
    aws.proxy.add(fault)
    return ids, deliver_here(aws, first_remaining_ms=first_remaining_ms)


def _released(aws: FaultyAws, fault: Fault) -> tuple[list[str], int]:
    # The first invocation has no time left once its margin is kept: each generation stops at once and is released.
    return _worker(aws, fault, first_remaining_ms=1_000)


def _async_api(aws: FaultyAws, fault: Fault) -> tuple[list[str], int]:
    aws.proxy.add(fault)
    event = apigw.post("summarize", apigw.sample("summarize", max_tokens=8), headers={"Prefer": "respond-async"})
    answers: list[tuple[int, dict[str, str], Any]] = []
    while not answers or answers[-1][0] != 202:
        assert len(answers) < 5, answers
        result = apigw.decode(api.lambda_handler(event, FakeLambdaContext(remaining_ms=30_000, function_name="api")))
        answers.append((result.status, result.headers, result.body))
        if result.status != 202:
            # Refused for now, never a 500: the caller is told when to come back.
            assert result.status in (429, 503), answers
            assert "Retry-After" in result.headers, answers
    deliver_here(aws)
    return [str(answers[-1][2]["id"])], len(answers)


def _scheduled(aws: FaultyAws, fault: Fault) -> tuple[list[str], int]:
    ids = enqueue(summaries(3, f"scheduled {fault.action} {fault.times}"))
    aws.event_source().sqs.purge_queue(QueueUrl=aws.queue_url)  # the scheduled run alone does the work
    aws.proxy.add(fault)
    runs: list[dict[str, Any]] = []
    while len(runs) < 3 and any(item["status"] != "DONE" for item in aws.table.items()):
        runs.append(
            schedule.schedule_handler({"dispatch": False}, FakeLambdaContext(remaining_ms=30_000, function_name="run"))
        )
    assert all(item["status"] == "DONE" for item in aws.table.items()), json.dumps(runs)[:2000]
    return ids, len(runs)


SCENARIOS = {
    "put": _async_api,
    "claim": _worker,
    "complete": _worker,
    "release": _released,
    "query": _scheduled,
}
RECOVERIES = {
    "put": "the caller's 429/503 with Retry-After; its retry is queued",
    "claim": "the item waits (deferred); SQS redelivers its message",
    "complete": "the item waits (deferred) until its lease expires; SQS redelivers; generated again",
    "release": "the item waits (deferred) until its lease expires; SQS redelivers",
    "query": "the run answers its error; the next scheduled run does the work",
}
