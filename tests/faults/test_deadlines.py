"""The function's deadline (the Lambda context's remaining time, less the safety margin) reached mid-generation: the
cut-off generation is dropped, never stored half-made; the request goes back to the queue and a later invocation
with time for it finishes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.entry import api
from tests.faults.recovery import FAST_ENOUGH, WORKER, FaultyAws, deliver, done_once, enqueue, summaries
from tests.support import apigw
from tests.support.fault_proxy import COMPLETE
from tests.support.lambda_context import FakeLambdaContext
from tests.support.ledger import Ledger


def test_a_worker_whose_deadline_comes_mid_generation_gives_the_request_back_for_the_next_invocation(
    aws: FaultyAws, ledger: Ledger, slow_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a long request on the slow model, and a worker invocation with three seconds left
    monkeypatch.setenv("MODEL_PATH", str(slow_model))
    [item_id] = enqueue(summaries(1, "deadline", max_tokens=3000))
    source = aws.event_source()
    messages = source.receive()
    short = aws.function(WORKER, source.event(messages), remaining_ms=3_000, env={"MODEL_PATH": str(slow_model)})
    answer = short.wait()
    source.settle(messages, answer)

    # THEN its generation stopped at the deadline: nothing stored, the item PENDING again, the message failed
    assert answer == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    [item] = [item for item in aws.table.items() if item["id"] == item_id]
    assert (item["status"], "output" in item) == ("PENDING", False)
    assert "did not finish within one invocation" in item["error"]

    # WHEN SQS delivers it again to an invocation with time for it
    deliver(aws, remaining_ms=60_000, env={"MODEL_PATH": str(slow_model)})

    # THEN it is DONE, stored once, after two attempts
    settled = done_once(aws, [item_id])
    [item] = [item for item in aws.table.items() if item["id"] == item_id]
    assert item["attempts"] == 2
    ledger.record(
        "deadline reached mid-generation",
        "worker (3 s left, slow model)",
        1,
        settled,
        aws.proxy.written(COMPLETE),
        "the cut-off generation is dropped; the item goes back PENDING; SQS redelivers",
    )


def test_an_api_call_whose_budget_ends_mid_generation_answers_202_and_a_worker_finishes_it(
    aws: FaultyAws, ledger: Ledger, slow_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the API with a two-second budget (three, less the margin), and a request predicted to fit it, on the
    # slow model (the aws fixture left this process without an engine: the first generation loads this one)
    monkeypatch.setenv("MODEL_PATH", str(slow_model))
    monkeypatch.setenv("API_BUDGET_S", "3")
    for key, value in FAST_ENOUGH.items():
        monkeypatch.setenv(key, value)
    event = apigw.post("summarize", apigw.sample("summarize", max_tokens=3000))

    # WHEN its generation runs past the budget
    answer = apigw.decode(api.lambda_handler(event, FakeLambdaContext(remaining_ms=30_000, function_name="api")))

    # THEN the caller gets 202 with where to look, and the request is queued, not half-stored
    assert answer.status == 202, answer
    assert answer.body["status"] == "PENDING"
    assert answer.headers["Location"].endswith(answer.body["id"])
    item_id = answer.body["id"]
    # AND a worker finishes it
    deliver(aws, remaining_ms=60_000, env={"MODEL_PATH": str(slow_model)})
    settled = done_once(aws, [item_id])
    ledger.record(
        "deadline reached mid-generation",
        "API function (3 s budget, slow model)",
        1,
        settled,
        aws.proxy.written(COMPLETE),
        "202 with Location; the cut-off generation is dropped; the item is queued; a worker finishes it",
    )
