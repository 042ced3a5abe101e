"""Poison in the results table: an item the service cannot read fails alone, named in the answer, logged without
its values, and the run or the worker's batch goes on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from handler.entry import api, schedule, worker
from handler.entry.runtime import get_service
from handler.usecases import queueing
from tests.support.apigw import decode, proxy_event
from tests.support.hostile_input import MARKER, logged
from tests.support.lambda_context import FakeLambdaContext
from tests.support.local_aws import Table

# -- poison in the table ---------------------------------------------------------------------------


def _raw_put(table: Table, item: dict[str, Any]) -> None:
    """An item written by hand, an old version or a partial write: not through the service."""
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    table.client().put_item(TableName=table.name, Item={key: serializer.serialize(v) for key, v in item.items()})


@pytest.mark.parametrize(
    "poison",
    [
        {"status": "PENDING", "created_at": "2000-01-01T00:00:00+00:00"},
        {"status": "PENDING", "created_at": "2000-01-01T00:00:00+00:00", "request": "not an object"},
        {
            "status": "PENDING",
            "created_at": "2000-01-01T00:00:00+00:00",
            "request": {"task": "chat", "messages": [{"role": "user", "content": "Hi."}]},
            "attempts": f"many-{MARKER}",
        },
        {
            "status": "RUNNING",
            "created_at": "2000-01-01T00:00:00+00:00",
            "lease_until": "2000-01-01T00:01:00+00:00",
            "metrics": f"fast-{MARKER}",
        },
    ],
    ids=["no-request", "request-not-object", "attempts-not-a-number", "metrics-not-an-object"],
)
def test_a_poison_item_fails_alone_and_the_run_goes_on(
    poison: dict[str, Any], service_env: Table, lambda_context: FakeLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    service = get_service()
    assert service.stored_requests.table is not None
    _raw_put(service_env, {"id": "d" * 64, **poison})
    good = {"task": "chat", "messages": [{"role": "user", "content": "Say hello."}], "options": {"max_tokens": 4}}
    queueing.queue_requests(service, [(1, good)])

    answer = schedule.schedule_handler({}, lambda_context)

    assert "error" not in answer, answer
    assert answer["run"]["done"] == 1
    statuses = {item["id"]: item["status"] for item in service_env.items()}
    assert statuses.pop("d" * 64) == "FAILED"
    assert list(statuses.values()) == ["DONE"]
    assert MARKER not in logged(caplog)


@pytest.mark.parametrize(
    "poison",
    [{"attempts": f"many-{MARKER}"}, {"metrics": f"fast-{MARKER}"}],
    ids=["attempts-not-a-number", "metrics-not-an-object"],
)
def test_a_poison_item_a_worker_is_sent_fails_alone_and_its_batch_goes_on(
    poison: dict[str, Any], service_env: Table, lambda_context: FakeLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    from handler.domain.requests import parse_request

    service = get_service()
    poison_id = "e" * 64
    _raw_put(
        service_env,
        {
            "id": poison_id,
            "status": "PENDING",
            "created_at": "2000-01-01T00:00:00+00:00",
            "request": {"task": "chat", "messages": [{"role": "user", "content": "Hi."}]},
            **poison,
        },
    )
    good = {"task": "chat", "messages": [{"role": "user", "content": "Say hello."}], "options": {"max_tokens": 4}}
    queueing.queue_requests(service, [(1, good)])
    good_id = service.request_id(parse_request(good))
    records = [
        {"messageId": name, "receiptHandle": "r", "body": json.dumps({"id": item_id}), "eventSource": "aws:sqs"}
        for name, item_id in (("poison", poison_id), ("good", good_id))
    ]

    answer = worker.worker_handler({"Records": records}, lambda_context)

    # THEN no message is retried: the poison item is FAILED with its problems, the good one DONE
    assert answer == {"batchItemFailures": []}
    statuses = {item["id"]: item["status"] for item in service_env.items()}
    assert statuses == {poison_id: "FAILED", good_id: "DONE"}
    assert MARKER not in logged(caplog)


def test_a_malformed_item_is_named_in_the_answer_and_logged_without_its_values(
    service_env: Table, lambda_context: FakeLambdaContext, caplog: pytest.LogCaptureFixture
) -> None:
    _raw_put(service_env, {"id": "c" * 64, "status": "DONE", "task": "chat", "attempts": MARKER})

    event = proxy_event("GET", f"/results/{'c' * 64}", resource="/results/{id}")
    answer = decode(api.lambda_handler(event, lambda_context))

    assert answer.status == 503
    assert answer.body["error"]["type"] == "StoreError"
    assert "attempts" in answer.body["error"]["message"]
    assert "request failed" in logged(caplog)
    assert MARKER not in logged(caplog)
