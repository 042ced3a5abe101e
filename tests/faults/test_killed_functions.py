"""Functions killed with SIGKILL (Lambda's timeout, out of memory, a crash) at each point of a request's life: before
the claim's write, after it, mid-generation, and between the result's write and the queue message's deletion.
Lambda recovers by running the function again (SQS redelivers, the next scheduled run, the caller tries again);
afterwards every request is DONE with one output, none lost, none stuck RUNNING."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.recovery import (
    API,
    FAST_ENOUGH,
    FaultyAws,
    answer_of,
    deliver,
    done_once,
    enqueue,
    first_one_hit_by,
    generations,
    scheduled_runs,
    summaries,
)
from tests.support import apigw
from tests.support.fault_proxy import CLAIM, COMPLETE, Fault
from tests.support.function_process import FunctionProcess
from tests.support.ledger import Ledger, expired, settle

KILL_POINTS = {
    "before the claim's write": lambda: Fault("dynamodb", "UpdateItem", "kill-before", contains=CLAIM),
    "after the claim's write": lambda: Fault("dynamodb", "UpdateItem", "kill-after", contains=CLAIM, skip=1),
    "between the result's write and the message's deletion": lambda: Fault(
        "dynamodb", "UpdateItem", "kill-after", contains=COMPLETE
    ),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_worker_killed_at_each_point_leaves_every_request_done_once(
    aws: FaultyAws, ledger: Ledger, point: str
) -> None:
    # GIVEN three queued requests, and the worker's first invocation to be killed at this point
    ids = enqueue(summaries(3, point))
    fault = aws.proxy.add(KILL_POINTS[point]())

    # WHEN SQS delivers the messages until its queue is empty
    invocations = deliver(aws, on_invoke=first_one_hit_by(fault))

    # THEN the first invocation died, and every request is DONE, its result written once
    assert invocations[0].killed
    assert fault.hits == 1
    settled = settle(aws.table, ids)
    assert (settled.lost, settled.problems, len(settled.done)) == ([], [], 3)
    written = aws.proxy.written(COMPLETE)
    assert written == dict.fromkeys(ids, 1)
    if point != "between the result's write and the message's deletion":
        assert generations(invocations) == 3  # nothing was generated before the kill
    ledger.record(
        f"SIGKILL {point}",
        "worker (SQS batch of 3)",
        fault.hits,
        settled,
        written,
        "SQS redelivers after the visibility timeout; a held item's message fails until its lease expires",
    )


def test_a_worker_killed_mid_generation_leaves_its_requests_done_once(
    aws: FaultyAws, ledger: Ledger, slow_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two long requests on the slow model
    monkeypatch.setenv("MODEL_PATH", str(slow_model))
    ids = enqueue(summaries(2, "long", max_tokens=3000))
    killed_generating: list[bool] = []

    def kill_first_while_it_generates(function: FunctionProcess, number: int) -> None:
        if number > 0:
            return
        # Both claims written, the model loaded, no result yet: the batch is being decoded.
        ends = time.monotonic() + 60
        while len(aws.proxy.written(CLAIM)) < 2 or "model loaded" not in function.logs():
            assert time.monotonic() < ends, function.logs()[-2000:]
            assert function.process.poll() is None, function.logs()[-2000:]
            time.sleep(0.05)
        time.sleep(0.5)
        killed_generating.append(not aws.proxy.written(COMPLETE) and function.process.poll() is None)
        function.kill()

    # WHEN SQS delivers until the queue is empty (invocations long enough for the generation)
    invocations = deliver(
        aws, remaining_ms=30_000, on_invoke=kill_first_while_it_generates, env={"MODEL_PATH": str(slow_model)}
    )

    # THEN the kill came mid-generation, and both requests are DONE once, generated once after it
    assert killed_generating == [True]
    settled = done_once(aws, ids)
    assert generations(invocations) == 2
    ledger.record(
        "SIGKILL mid-generation",
        "worker (SQS batch of 2, slow model)",
        1,
        settled,
        aws.proxy.written(COMPLETE),
        "the lease expires; SQS redelivers; the next worker claims and generates",
    )


def test_a_scheduled_run_killed_after_its_claims_is_finished_by_the_next_run(aws: FaultyAws, ledger: Ledger) -> None:
    # GIVEN six queued requests, and the first scheduled run killed right after its second claim
    ids = enqueue(summaries(6, "scheduled"))
    fault = aws.proxy.add(Fault("dynamodb", "UpdateItem", "kill-after", contains=CLAIM, skip=1))

    # WHEN scheduled runs go on until every item has ended
    runs = scheduled_runs(aws, ids, on_invoke=first_one_hit_by(fault))

    # THEN the first run died holding two leases; later runs finished all six, each written once
    assert runs[0].killed
    assert fault.hits == 1
    settled = done_once(aws, ids)
    assert generations(runs) == 6
    ledger.record(
        "SIGKILL after the claims' writes",
        "scheduled batch run (6 items)",
        1,
        settled,
        aws.proxy.written(COMPLETE),
        "the next scheduled run claims the items whose lease expired",
    )


def test_an_api_function_killed_after_its_claim_answers_the_retried_request_once(
    aws: FaultyAws, ledger: Ledger
) -> None:
    # GIVEN an API request whose function is killed right after it took the request's item
    fault = aws.proxy.add(Fault("dynamodb", "UpdateItem", "kill-after", contains=CLAIM))
    event = apigw.post("summarize", apigw.sample("summarize", max_tokens=8))
    # The lease of a caller is its budget: a short one expires soon. Speeds as measured here, or it is queued at once.
    budget = {"API_BUDGET_S": "3", **FAST_ENOUGH}
    first = aws.function(API, event, env=budget)
    fault.process = first

    # WHEN the caller gets API Gateway's 502 and tries again, until it has its answer
    answers = [answer_of(first)]
    ends = time.monotonic() + 60
    while answers[-1] is None or answers[-1][0] != 200:
        assert time.monotonic() < ends, answers
        answers.append(answer_of(aws.function(API, event, env=budget)))

    # THEN the retries were told to wait (202) while the dead function's lease ran, then one generated it
    assert answers[0] is None
    assert fault.hits == 1
    waited = [answer for answer in answers[1:-1] if answer is not None]
    assert waited
    assert {status for status, _ in waited} == {202}
    last = answers[-1]
    assert last is not None
    body = last[1]
    assert body["status"] == "DONE"
    assert body["cached"] is False
    item_id = body["id"]
    assert expired(aws.table, item_id)
    settled = done_once(aws, [item_id])
    ledger.record(
        "SIGKILL after the claim's write",
        "API function (buffered)",
        1,
        settled,
        aws.proxy.written(COMPLETE),
        "the caller's retry gets 202 while the lease runs, then takes the expired lease and generates",
    )
