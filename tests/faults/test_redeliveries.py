"""SQS delivering a message twice at once, and again after its visibility timeout while the first worker still
generates; SQS failing on send and on delete. A request is generated and stored once whoever receives it."""

from __future__ import annotations

import contextlib
import time

import pytest
from botocore.exceptions import ClientError

from handler.entry import api, schedule
from tests.faults.recovery import (
    FAST_ENOUGH,
    WORKER,
    FaultyAws,
    deliver,
    done_once,
    enqueue,
    generations,
    summaries,
)
from tests.support import apigw
from tests.support.fault_proxy import COMPLETE, Fault
from tests.support.lambda_context import FakeLambdaContext
from tests.support.ledger import Ledger


def test_the_same_message_delivered_twice_at_once_is_generated_once(aws: FaultyAws, ledger: Ledger) -> None:
    # GIVEN a queued request whose message SQS holds twice (at-least-once delivery)
    [item_id] = enqueue(summaries(1, "twice"))
    source = aws.event_source()
    source.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=f'{{"id": "{item_id}"}}')

    # WHEN both copies go to two workers at the same time
    copies = [source.receive(most=1), source.receive(most=1)]
    assert all(len(copy) == 1 for copy in copies)
    workers = [aws.function(WORKER, source.event(copy)) for copy in copies]
    for worker, copy in zip(workers, copies, strict=True):
        source.settle(copy, worker.wait())
    invocations = workers + deliver(aws)  # and whatever they gave back, until the queue is empty

    # THEN one generated and stored it; the other's copy came back and found it done
    settled = done_once(aws, [item_id])
    assert generations(invocations) == 1
    ledger.record(
        "SQS delivers one message twice at once",
        "two workers",
        1,
        settled,
        aws.proxy.written(COMPLETE),
        "the claim is a conditional write: one wins; the other's message fails while the item is held",
    )


def test_a_message_delivered_again_while_its_first_worker_still_works_is_stored_once(
    aws: FaultyAws, ledger: Ledger
) -> None:
    # GIVEN a worker that generated a request and then stands still before storing it (a stalled host), its
    # invocation's time and its lease running out meanwhile
    [item_id] = enqueue(summaries(1, "stalled"))
    source = aws.event_source()
    first_copy = source.receive()
    pause = aws.proxy.add(Fault("dynamodb", "UpdateItem", "pause-before", contains=COMPLETE))
    stalled = aws.function(WORKER, source.event(first_copy), remaining_ms=4_000)
    pause.process = stalled
    ends = time.monotonic() + 60
    while pause.hits == 0:
        assert time.monotonic() < ends, stalled.logs()[-2000:]
        assert stalled.process.poll() is None, stalled.logs()[-2000:]
        time.sleep(0.05)

    # WHEN the message becomes visible again and SQS delivers it until another worker finished the request
    later = deliver(aws)

    # AND the stalled worker goes on, and its result's write reaches the table
    stalled.resume()
    pause.released.set()
    stalled_answer = stalled.wait()

    # THEN the later worker waited for the stalled one's lease to expire, then generated and stored the result;
    # the stalled worker's late write failed its condition: one output, the later one
    settled = done_once(aws, [item_id])
    assert "lease lost before the result was written" in stalled.logs()
    assert stalled_answer == {"batchItemFailures": []}
    assert generations(later) == 1
    assert stalled.generations() == 1
    ledger.record(
        "SQS delivers again after the visibility timeout while the first worker still works",
        "two workers",
        1,
        settled,
        aws.proxy.written(COMPLETE),
        "the message fails until the lease expires; the stalled worker's late write fails its condition",
    )


def test_sqs_refusing_to_send_leaves_the_request_to_the_scheduled_run(
    aws: FaultyAws, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in FAST_ENOUGH.items():
        monkeypatch.setenv(key, value)
    # GIVEN the work queue refusing every send (past the SDK's retries)
    fault = aws.proxy.add(Fault("sqs", "SendMessageBatch", "error-500", times=10))
    event = apigw.post("translate", apigw.sample("translate", max_tokens=8), headers={"Prefer": "respond-async"})

    # WHEN a caller asks for an asynchronous answer, and tries again after the 503
    first = apigw.decode(api.lambda_handler(event, FakeLambdaContext(remaining_ms=30_000, function_name="api")))
    again = apigw.decode(api.lambda_handler(event, FakeLambdaContext(remaining_ms=30_000, function_name="api")))

    # THEN it was told to come back, then that its request is queued (the item was written before the send)
    assert (first.status, "Retry-After" in first.headers) == (503, True), first
    assert (again.status, again.body["status"]) == (202, "PENDING"), again
    item_id = again.body["id"]
    # AND the next scheduled run finds the item without a message, and finishes it
    run = schedule.schedule_handler({"dispatch": False}, FakeLambdaContext(remaining_ms=30_000, function_name="run"))
    assert run["run"]["done"] == 1, run
    settled = done_once(aws, [item_id])
    ledger.record(
        "SQS send fails past the SDK's retries",
        "API, Prefer: respond-async",
        fault.hits,
        settled,
        aws.proxy.written(COMPLETE),
        "the caller's 503 with Retry-After; the item is PENDING; the scheduled run lists and does it",
    )


def test_sqs_refusing_to_delete_redelivers_messages_of_finished_requests_without_generating_again(
    aws: FaultyAws, ledger: Ledger
) -> None:
    # GIVEN three queued requests, and the event source's first deletes refused (past the SDK's retries)
    ids = enqueue(summaries(3, "undeleted"))
    fault = aws.proxy.add(Fault("sqs", "DeleteMessageBatch", "error-500", times=5))
    source = aws.event_source()
    messages = source.receive()
    first = aws.function(WORKER, source.event(messages))
    answer = first.wait()
    with contextlib.suppress(ClientError):  # the event source could not delete: the messages come back
        source.settle(messages, answer)

    # WHEN SQS delivers them again until its queue is empty
    later = deliver(aws)

    # THEN the requests were generated once, by the first worker; the redeliveries found them done
    assert fault.hits == 5
    assert answer == {"batchItemFailures": []}
    settled = done_once(aws, ids)
    assert first.generations() == 3
    assert generations(later) == 0
    ledger.record(
        "SQS delete fails past the SDK's retries",
        "the worker's event source",
        fault.hits,
        settled,
        aws.proxy.written(COMPLETE),
        "redelivered messages find their items DONE and are deleted",
    )
